//! Loading workloads from files or folders, whatever their format.

use crate::error::InputError;
use crate::profiles::ProfileSet;
use crate::readers::{detect_and_read, pollux};
use crate::workload::Workload;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The workload files a PATH names: the file itself, or a folder's `*.csv` files sorted by
/// name (numbers in names compare as numbers, so `workload-10` follows `workload-9`).
pub fn workload_files(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(InputError::file(path, "no such file or folder"));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| InputError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort_by_key(|p| natural_key(p));
    if files.is_empty() {
        return Err(InputError::file(path, "folder has no .csv workload files"));
    }
    Ok(files)
}

fn natural_key(path: &Path) -> Vec<(String, u64)> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

/// Reads one workload file: a raw trace (Philly, Helios, openb) by its header, else a
/// Pollux/Sia workload whose applications must all have profiles.
pub fn load_workload(path: &Path, profiles: &ProfileSet) -> Result<Workload, InputError> {
    if let Some(workload) = detect_and_read(path)? {
        return Ok(workload);
    }
    let known: BTreeSet<String> = profiles.apps.keys().cloned().collect();
    let header = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .and_then(|mut r| r.headers().cloned())
        .map_err(|e| InputError::file(path, e.to_string()))?;
    if !pollux::is_pollux_header(&header) {
        return Err(InputError::file(
            path,
            format!(
                "unrecognized header {:?}: expected a Pollux/Sia workload (name,time,application,num_replicas,batch_size), \
                 a Philly, Helios or Alibaba openb trace",
                header.iter().collect::<Vec<_>>().join(",")
            ),
        ));
    }
    pollux::read_pollux(path, Some(&known))
}

/// Every workload under the given paths, in order.
pub fn load_workloads(
    paths: &[PathBuf],
    profiles: &ProfileSet,
) -> Result<Vec<Workload>, InputError> {
    let mut workloads: Vec<Workload> = Vec::new();
    let mut origin: std::collections::BTreeMap<String, PathBuf> = std::collections::BTreeMap::new();
    for path in paths {
        for file in workload_files(path)? {
            let workload = load_workload(&file, profiles)?;
            // Reports key runs by workload name; two files with one name would overwrite.
            if let Some(first) = origin.insert(workload.name.clone(), file.clone()) {
                return Err(InputError::file(
                    &file,
                    format!(
                        "workload name {:?} is also the name of {}; rename one",
                        workload.name,
                        first.display()
                    ),
                ));
            }
            workloads.push(workload);
        }
    }
    Ok(workloads)
}
