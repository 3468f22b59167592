//! Reader for Pollux/Sia workload CSVs: `name,time,application,num_replicas,batch_size[,category]`.

use crate::error::InputError;
use crate::workload::Workload;
use adaptsched_core::{JobCategory, JobSpec};
use std::collections::BTreeSet;
use std::path::Path;

const REQUIRED: [&str; 5] = ["name", "time", "application", "num_replicas", "batch_size"];

/// Whether a CSV header is the Pollux/Sia workload format.
pub fn is_pollux_header(header: &csv::StringRecord) -> bool {
    REQUIRED
        .iter()
        .all(|c| header.iter().any(|h| h.trim() == *c))
}

/// Reads a Pollux/Sia workload. `known_apps`, when given, rejects applications without a
/// profile (naming the line and value).
pub fn read_pollux(
    path: &Path,
    known_apps: Option<&BTreeSet<String>>,
) -> Result<Workload, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .map_err(|e| InputError::file(path, e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| InputError::file(path, e.to_string()))?
        .clone();
    if header.iter().all(|h| h.is_empty()) {
        return Err(InputError::file(
            path,
            "empty file (expected a header name,time,application,num_replicas,batch_size)",
        ));
    }
    let column = |name: &str| header.iter().position(|h| h == name);
    let mut index = [0usize; 5];
    for (slot, name) in index.iter_mut().zip(REQUIRED) {
        *slot = column(name)
            .ok_or_else(|| InputError::file(path, format!("missing column {name:?} in header")))?;
    }
    let category_column = column("category");
    let mut workload = Workload {
        name: super::file_stem(path),
        ..Workload::default()
    };
    let mut names = BTreeSet::new();
    for row in reader.records() {
        let row = row.map_err(|e| InputError::Row {
            file: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        let line = row.position().map_or(0, |p| p.line());
        if row.iter().all(|f| f.is_empty()) {
            continue;
        }
        let field = |i: usize, name: &str| -> Result<&str, InputError> {
            row.get(i)
                .ok_or_else(|| InputError::field(path, line, name, "", "missing (truncated row)"))
        };
        let name = field(index[0], "name")?.to_string();
        if name.is_empty() {
            return Err(InputError::field(path, line, "name", "", "empty job name"));
        }
        if !names.insert(name.clone()) {
            return Err(InputError::field(
                path,
                line,
                "name",
                &name,
                "duplicate job name",
            ));
        }
        let time = parse_number(path, line, "time", field(index[1], "time")?)?;
        let application = field(index[2], "application")?.to_string();
        if let Some(apps) = known_apps
            && !apps.contains(&application)
        {
            let known: Vec<&str> = apps.iter().map(String::as_str).collect();
            return Err(InputError::field(
                path,
                line,
                "application",
                &application,
                format!("unknown application (profiles have: {})", known.join(", ")),
            ));
        }
        let gpus = parse_count(path, line, "num_replicas", field(index[3], "num_replicas")?)?;
        let batch = parse_count(path, line, "batch_size", field(index[4], "batch_size")?)?;
        let category = match category_column.and_then(|i| row.get(i)) {
            Some(text) => text
                .parse::<JobCategory>()
                .map_err(|e| InputError::field(path, line, "category", text, e))?,
            None => JobCategory::Adaptive,
        };
        workload.jobs.push(
            JobSpec::new(name, time, application, gpus)
                .with_batch_size(batch)
                .with_category(category),
        );
    }
    if workload.jobs.is_empty() {
        return Err(InputError::file(path, "no jobs"));
    }
    workload.sort_by_submit_time();
    Ok(workload)
}

fn parse_number(path: &Path, line: u64, column: &str, text: &str) -> Result<f64, InputError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(InputError::field(
            path,
            line,
            column,
            text,
            "must be a finite number ≥ 0",
        )),
        Err(_) => Err(InputError::field(path, line, column, text, "not a number")),
    }
}

fn parse_count(path: &Path, line: u64, column: &str, text: &str) -> Result<u32, InputError> {
    match text.parse::<i64>() {
        Ok(v) if v >= 1 && v <= i64::from(u32::MAX) => Ok(v as u32),
        Ok(_) => Err(InputError::field(
            path,
            line,
            column,
            text,
            "must be a whole number ≥ 1",
        )),
        Err(_) => Err(InputError::field(
            path,
            line,
            column,
            text,
            "not a whole number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".csv")
            .tempfile()
            .expect("temp file");
        file.write_all(content.as_bytes()).expect("write");
        file
    }

    fn err(content: &str) -> String {
        let apps: BTreeSet<String> = ["cifar10".to_string()].into();
        read_pollux(write(content).path(), Some(&apps))
            .expect_err("must fail")
            .to_string()
    }

    const HEADER: &str = "name,time,application,num_replicas,batch_size\n";

    #[test]
    fn reads_and_sorts_a_workload() {
        let file = write(&format!("{HEADER}b,20,cifar10,2,256\na,10,cifar10,1,128\n"));
        let w = read_pollux(file.path(), None).expect("valid");
        assert_eq!(
            w.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(w.jobs[1].requested_gpus, 2);
        assert_eq!(w.jobs[1].requested_batch_size, Some(256));
        assert_eq!(w.notes.len(), 1, "unsorted input is reported");
    }

    #[test]
    fn reads_the_optional_category_column() {
        let file = write(
            "name,time,application,num_replicas,batch_size,category\na,0,cifar10,1,128,rigid\n",
        );
        let w = read_pollux(file.path(), None).expect("valid");
        assert_eq!(w.jobs[0].category, JobCategory::Rigid);
    }

    #[test]
    fn malformed_inputs_name_line_column_and_value() {
        let truncated = err(&format!("{HEADER}a,10,cifar10\n"));
        assert!(
            truncated.contains(":2:") && truncated.contains("num_replicas"),
            "{truncated}"
        );
        let negative = err(&format!("{HEADER}a,10,cifar10,-4,128\n"));
        assert!(
            negative.contains("num_replicas") && negative.contains("\"-4\""),
            "{negative}"
        );
        let text = err(&format!("{HEADER}a,ten,cifar10,1,128\n"));
        assert!(
            text.contains("time") && text.contains("\"ten\"") && text.contains("not a number"),
            "{text}"
        );
        let unknown = err(&format!("{HEADER}a,1,resnet9000,1,128\n"));
        assert!(
            unknown.contains("application") && unknown.contains("resnet9000"),
            "{unknown}"
        );
        let empty = err("");
        assert!(empty.contains("empty file"), "{empty}");
        let no_rows = err(HEADER);
        assert!(no_rows.contains("no jobs"), "{no_rows}");
        let category = err(
            "name,time,application,num_replicas,batch_size,category\na,0,cifar10,1,128,elastic\n",
        );
        assert!(
            category.contains("category") && category.contains("elastic"),
            "{category}"
        );
        let nan = err(&format!("{HEADER}a,NaN,cifar10,1,128\n"));
        assert!(nan.contains("finite"), "{nan}");
    }
}
