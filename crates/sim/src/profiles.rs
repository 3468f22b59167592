//! Measured application profiles (Pollux and Sia artifact layouts): the simulator's ground
//! truth of step time per placement and of statistical progress per epoch.

use crate::error::InputError;
use adaptsched_core::GpuType;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Which artifact's folder layout (and with it, which restart delays) a profile set follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileLayout {
    /// `placements.csv`, `scalability.csv` per app (4×T4 only); restarts cost 30 s.
    Pollux,
    /// `placements-<kind>.csv` per node kind; restarts cost a per-application delay.
    Sia,
}

/// One epoch of a validation run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    pub progress: f64,
    pub iteration: f64,
    pub metric: f64,
    pub grad_sqr: f64,
    pub grad_var: f64,
}

/// Step and sync seconds at one per-GPU batch size.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SpeedPoint {
    local_bsz: f64,
    step_time: f64,
    sync_time: f64,
}

/// Measured speed of one application on one node kind.
#[derive(Clone, Debug, Default)]
pub struct SpeedTable {
    /// Exactly measured placements (GPUs per node, rotation-normalized) → points by batch.
    exact: HashMap<Vec<u32>, Vec<SpeedPoint>>,
    /// (nodes, GPUs) → points by batch, placements averaged, scalability rows added.
    by_shape: BTreeMap<(u32, u32), Vec<SpeedPoint>>,
    pub min_local_bsz: u32,
    pub max_local_bsz: u32,
}

/// The node kind (profile file suffix) that measures a GPU type.
pub fn kind_for_gpu(gpu_type: &GpuType) -> &'static str {
    match gpu_type.as_str() {
        "t4" => "aws",
        "rtx2080ti" | "rtx" | "2080ti" => "rtx",
        "a100" => "dgx-ext",
        "quadro6000" | "quadro" | "rtx6000" => "quad",
        "v100" => "azure",
        _ => "unknown",
    }
}

/// Everything measured about one application.
#[derive(Clone, Debug)]
pub struct AppProfile {
    pub name: String,
    /// Validation runs by total batch size, ascending.
    pub validation: Vec<(u32, Vec<EpochStats>)>,
    /// Speed per node kind (`aws`, `rtx`, `dgx-ext`, `quad`, `azure`).
    pub speed: BTreeMap<String, SpeedTable>,
    pub init_batch_size: u32,
    pub max_batch_size: u32,
    pub max_epochs: usize,
    pub restart_delay_s: f64,
    /// How much slower real runs were than the profiles say; the Sia artifact calibrates its
    /// simulator with these factors (`SLOWDOWNS`: cifar10 1.8, ncf 1.5, others 1.2). 1 for Pollux.
    pub calibration_slowdown: f64,
    /// A batch the Pollux artifact pins under adaptive policies (ncf: 32768 on one GPU).
    pub pinned_batch: Option<u32>,
    /// Cumulative progress at the end of each epoch (min over validation runs).
    epoch_progress: Vec<f64>,
}

/// Epoch caps of the Pollux and Sia simulators (a job is done after this many epochs).
fn epoch_cap(app: &str) -> Option<usize> {
    Some(match app {
        "bert" => 2,
        "cifar10" => 100,
        "deepspeech2" => 80,
        "imagenet" => 90,
        "ncf" => 10,
        "yolov3" => 50,
        "gpt_pmp" => 2,
        _ => return None,
    })
}

/// Checkpoint-restore seconds per application in the Sia simulator.
fn sia_restart_delay(app: &str) -> f64 {
    match app {
        "cifar10" => 50.0,
        "deepspeech2" => 25.0,
        "bert" => 120.0,
        "yolov3" => 80.0,
        "imagenet" => 250.0,
        "ncf" => 15.0,
        _ => 30.0,
    }
}

/// The Sia artifact's calibration of simulated speed to its testbed runs.
fn sia_calibration_slowdown(app: &str) -> f64 {
    match app {
        "cifar10" => 1.8,
        "ncf" => 1.5,
        "gpt_pmp" => 1.0,
        _ => 1.2,
    }
}

/// Restart delay where nothing better is known.
pub const DEFAULT_RESTART_DELAY_S: f64 = 30.0;

/// Linear interpolation over points sorted by x, clamped at both ends.
fn interpolate(points: &[(f64, f64, f64)], x: f64) -> Option<(f64, f64)> {
    let first = points.first()?;
    let last = points.last()?;
    if x <= first.0 {
        return Some((first.1, first.2));
    }
    if x >= last.0 {
        return Some((last.1, last.2));
    }
    let hi = points.partition_point(|p| p.0 < x);
    let (a, b) = (points[hi - 1], points[hi]);
    let w = if b.0 > a.0 {
        (x - a.0) / (b.0 - a.0)
    } else {
        0.0
    };
    Some((a.1 + w * (b.1 - a.1), a.2 + w * (b.2 - a.2)))
}

fn by_batch(points: &[SpeedPoint], local_bsz: f64) -> Option<(f64, f64)> {
    let triples: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|p| (p.local_bsz, p.step_time, p.sync_time))
        .collect();
    interpolate(&triples, local_bsz)
}

/// The lexicographically smallest rotation of a placement, as the artifacts key it.
pub fn normalize_placement(placement: &[u32]) -> Vec<u32> {
    let parts: Vec<u32> = placement.iter().copied().filter(|&g| g > 0).collect();
    (0..parts.len().max(1))
        .map(|i| {
            let mut rotated = parts[i.min(parts.len())..].to_vec();
            rotated.extend_from_slice(&parts[..i.min(parts.len())]);
            rotated
        })
        .min()
        .unwrap_or_default()
}

impl SpeedTable {
    /// (step seconds, sync seconds) at a placement and per-GPU batch.
    ///
    /// Measured placements interpolate over the batch. Others interpolate the (nodes, GPUs)
    /// shapes: over the batch within each shape, over GPUs per node within the nearest node
    /// counts measured, then linearly over node count (capped at 16, as the artifacts do).
    pub fn step_time(&self, placement: &[u32], local_bsz: f64) -> Option<(f64, f64)> {
        let key = normalize_placement(placement);
        if let Some(points) = self.exact.get(&key) {
            return by_batch(points, local_bsz);
        }
        let nodes = (key.len() as u32).min(16);
        let gpus: u32 = key.iter().sum();
        if let Some(points) = self.by_shape.get(&(nodes, gpus)) {
            return by_batch(points, local_bsz);
        }
        let per_node = f64::from(gpus) / f64::from(nodes.max(1));
        let node_counts: Vec<u32> = {
            let mut n: Vec<u32> = self.by_shape.keys().map(|&(n, _)| n).collect();
            n.dedup();
            n
        };
        let lower = node_counts.iter().copied().filter(|&n| n <= nodes).max();
        let upper = node_counts.iter().copied().filter(|&n| n >= nodes).min();
        let at_nodes = |n: u32| -> Option<(f64, f64, f64)> {
            let row: Vec<(f64, f64, f64)> = self
                .by_shape
                .range((n, 0)..=(n, u32::MAX))
                .filter_map(|(&(_, g), pts)| {
                    by_batch(pts, local_bsz).map(|(s, y)| (f64::from(g) / f64::from(n), s, y))
                })
                .collect();
            interpolate(&row, per_node).map(|(s, y)| (f64::from(n), s, y))
        };
        match (lower.and_then(at_nodes), upper.and_then(at_nodes)) {
            (Some(a), Some(b)) => interpolate(&[a, b], f64::from(nodes)),
            (Some(a), None) | (None, Some(a)) => Some((a.1, a.2)),
            (None, None) => None,
        }
    }
}

/// The named columns of every row of a CSV file, with the row's line number.
fn read_columns(path: &Path, columns: &[&str]) -> Result<Vec<(u64, Vec<String>)>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .map_err(|e| InputError::file(path, e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| InputError::file(path, e.to_string()))?
        .clone();
    let mut index = Vec::with_capacity(columns.len());
    for column in columns {
        let position = header.iter().position(|h| h == *column).ok_or_else(|| {
            InputError::file(path, format!("missing column {column:?} in header"))
        })?;
        index.push(position);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| InputError::Row {
            file: path.to_path_buf(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let mut values = Vec::with_capacity(columns.len());
        for (&i, column) in index.iter().zip(columns) {
            let value = record.get(i).ok_or_else(|| {
                InputError::field(path, line, column, "", "missing (truncated row)")
            })?;
            values.push(value.to_string());
        }
        rows.push((line, values));
    }
    Ok(rows)
}

/// A finite number ≥ 0 from column `column` of `line`.
/// A finite number > 0 (a step that takes no time would make progress infinite).
fn positive(path: &Path, line: u64, column: &str, text: &str) -> Result<f64, InputError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(InputError::field(
            path,
            line,
            column,
            text,
            "expected a finite number > 0",
        )),
    }
}

fn number(path: &Path, line: u64, column: &str, text: &str) -> Result<f64, InputError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(InputError::field(
            path,
            line,
            column,
            text,
            "expected a finite number ≥ 0",
        )),
    }
}

fn parse_placement(path: &Path, line: u64, text: &str) -> Result<Vec<u32>, InputError> {
    let digits: Option<Vec<u32>> = text.chars().map(|c| c.to_digit(10)).collect();
    match digits {
        Some(d) if !d.is_empty() && d.iter().all(|&g| g > 0) => Ok(d),
        _ => Err(InputError::field(
            path,
            line,
            "placement",
            text,
            "expected one nonzero digit per node",
        )),
    }
}

fn read_speed_table(placements: &Path, scalability: &Path) -> Result<SpeedTable, InputError> {
    let mut table = SpeedTable::default();
    // (nodes, GPUs, batch bits) → (batch, Σ step, Σ sync, count), to average placements of one shape.
    type ShapeKey = (u32, u32, u64);
    let mut shape_sums: BTreeMap<ShapeKey, (f64, f64, f64, u32)> = BTreeMap::new();
    let columns = ["placement", "local_bsz", "step_time", "sync_time"];
    for (line, row) in read_columns(placements, &columns)? {
        let placement = parse_placement(placements, line, &row[0])?;
        let point = SpeedPoint {
            local_bsz: number(placements, line, columns[1], &row[1])?,
            step_time: positive(placements, line, columns[2], &row[2])?,
            sync_time: number(placements, line, columns[3], &row[3])?,
        };
        let shape = (
            placement.len() as u32,
            placement.iter().sum::<u32>(),
            point.local_bsz.to_bits(),
        );
        let sum = shape_sums
            .entry(shape)
            .or_insert((point.local_bsz, 0.0, 0.0, 0));
        sum.1 += point.step_time;
        sum.2 += point.sync_time;
        sum.3 += 1;
        table.exact.entry(placement).or_default().push(point);
    }
    if table.exact.is_empty() {
        return Err(InputError::file(placements, "no measurements"));
    }
    for ((nodes, gpus, _), (bsz, step, sync, n)) in shape_sums {
        let n = f64::from(n);
        table
            .by_shape
            .entry((nodes, gpus))
            .or_default()
            .push(SpeedPoint {
                local_bsz: bsz,
                step_time: step / n,
                sync_time: sync / n,
            });
    }
    if scalability.exists() {
        let columns = [
            "num_nodes",
            "num_replicas",
            "local_bsz",
            "step_time",
            "sync_time",
        ];
        for (line, row) in read_columns(scalability, &columns)? {
            let count = |i: usize| -> Result<u32, InputError> {
                row[i]
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        InputError::field(
                            scalability,
                            line,
                            columns[i],
                            &row[i],
                            "expected a whole number ≥ 1",
                        )
                    })
            };
            let (num_nodes, num_replicas) = (count(0)?, count(1)?);
            if num_replicas < num_nodes {
                return Err(InputError::field(
                    scalability,
                    line,
                    columns[1],
                    &row[1],
                    "fewer GPUs than nodes",
                ));
            }
            let point = SpeedPoint {
                local_bsz: number(scalability, line, columns[2], &row[2])?,
                step_time: positive(scalability, line, columns[3], &row[3])?,
                sync_time: number(scalability, line, columns[4], &row[4])?,
            };
            table
                .by_shape
                .entry((num_nodes, num_replicas))
                .or_default()
                .push(point);
        }
    }
    for points in table.exact.values_mut().chain(table.by_shape.values_mut()) {
        points.sort_by(|a, b| a.local_bsz.total_cmp(&b.local_bsz));
    }
    let all = table.exact.values().flatten();
    table.min_local_bsz = all
        .clone()
        .map(|p| p.local_bsz as u32)
        .min()
        .unwrap_or(1)
        .max(1);
    table.max_local_bsz = all.map(|p| p.local_bsz as u32).max().unwrap_or(1).max(1);
    Ok(table)
}

fn read_validation(path: &Path) -> Result<Vec<EpochStats>, InputError> {
    let columns = ["progress", "iteration", "metric", "grad_sqr", "grad_var"];
    let mut epochs = Vec::new();
    for (line, row) in read_columns(path, &columns)? {
        let metric = row[2]
            .parse::<f64>()
            .ok()
            .filter(|m| m.is_finite())
            .ok_or_else(|| {
                InputError::field(path, line, columns[2], &row[2], "expected a finite number")
            })?;
        epochs.push(EpochStats {
            progress: number(path, line, columns[0], &row[0])?,
            iteration: number(path, line, columns[1], &row[1])?,
            metric,
            grad_sqr: number(path, line, columns[3], &row[3])?,
            grad_var: number(path, line, columns[4], &row[4])?,
        });
    }
    if epochs.is_empty() {
        return Err(InputError::file(path, "no epochs"));
    }
    Ok(epochs)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| InputError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

impl AppProfile {
    /// Reads one application's folder in either layout.
    pub fn read(dir: &Path, layout: ProfileLayout) -> Result<Self, InputError> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let mut validation = Vec::new();
        let mut speed = BTreeMap::new();
        for path in list_dir(dir)? {
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = file.strip_suffix(".csv") else {
                continue;
            };
            if let Some(batch) = stem.strip_prefix("validation-") {
                let batch: u32 = batch.parse().map_err(|_| {
                    InputError::file(
                        &path,
                        format!("batch size {batch:?} in the file name is not a number"),
                    )
                })?;
                validation.push((batch, read_validation(&path)?));
            } else if let Some(rest) = stem.strip_prefix("placements") {
                let kind = match rest.strip_prefix('-') {
                    Some(kind) => kind.to_string(),
                    None if rest.is_empty() => "aws".to_string(),
                    None => continue,
                };
                // The unsuffixed file is T4; an explicit `-aws` file wins over it.
                if kind == "aws" && rest.is_empty() && speed.contains_key("aws") {
                    continue;
                }
                let scalability = dir.join(format!("scalability{rest}.csv"));
                speed.insert(kind, read_speed_table(&path, &scalability)?);
            }
        }
        if validation.is_empty() {
            return Err(InputError::file(dir, "no validation-<batch>.csv files"));
        }
        if speed.is_empty() {
            return Err(InputError::file(dir, "no placements*.csv files"));
        }
        validation.sort_by_key(|(batch, _)| *batch);
        let shortest = validation.iter().map(|(_, v)| v.len()).min().unwrap_or(0);
        let max_epochs = epoch_cap(&name).unwrap_or(shortest).min(shortest);
        let epoch_progress = (0..max_epochs)
            .map(|e| {
                validation
                    .iter()
                    .map(|(_, v)| v[e].progress)
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        apply_artifact_overrides(&name, layout, &mut speed);
        Ok(AppProfile {
            init_batch_size: validation[0].0,
            max_batch_size: validation[validation.len() - 1].0,
            restart_delay_s: match layout {
                ProfileLayout::Pollux => DEFAULT_RESTART_DELAY_S,
                ProfileLayout::Sia => sia_restart_delay(&name),
            },
            pinned_batch: (layout == ProfileLayout::Pollux && name == "ncf").then_some(32768),
            calibration_slowdown: match layout {
                ProfileLayout::Pollux => 1.0,
                ProfileLayout::Sia => sia_calibration_slowdown(&name),
            },
            name,
            validation,
            speed,
            max_epochs,
            epoch_progress,
        })
    }

    /// Cumulative progress (in initial-batch steps) at the end of `epoch` (1-based; 0 → 0).
    pub fn progress_at_epoch(&self, epoch: usize) -> f64 {
        if epoch == 0 {
            0.0
        } else {
            self.epoch_progress[(epoch - 1).min(self.epoch_progress.len() - 1)]
        }
    }

    /// (grad_sqr, grad_var) during `epoch` at total batch `batch`, linear between measured batches.
    pub fn grad_stats(&self, batch: f64, epoch: usize) -> (f64, f64) {
        let at = |run: &Vec<EpochStats>| {
            let e = &run[epoch.min(run.len() - 1)];
            (e.grad_sqr, e.grad_var)
        };
        let hi = self
            .validation
            .partition_point(|(b, _)| f64::from(*b) < batch);
        if hi == 0 {
            return at(&self.validation[0].1);
        }
        if hi == self.validation.len() {
            return at(&self.validation[hi - 1].1);
        }
        let (b_lo, run_lo) = &self.validation[hi - 1];
        let (b_hi, run_hi) = &self.validation[hi];
        let (sqr_lo, var_lo) = at(run_lo);
        let (sqr_hi, var_hi) = at(run_hi);
        let w = (batch - f64::from(*b_lo)) / f64::from(b_hi - b_lo);
        (
            sqr_lo + w * (sqr_hi - sqr_lo),
            var_lo + w * (var_hi - var_lo),
        )
    }

    /// AdaScale gain of a step at total batch `batch` during `epoch`.
    pub fn gain(&self, batch: f64, epoch: usize) -> f64 {
        let (sqr, var) = self.grad_stats(batch, epoch);
        let scale = batch / f64::from(self.init_batch_size);
        let denominator = var / scale + sqr;
        if denominator > 0.0 {
            (var + sqr) / denominator
        } else {
            1.0
        }
    }
}

/// Per-GPU batch caps the artifacts set by hand.
fn apply_artifact_overrides(
    app: &str,
    layout: ProfileLayout,
    speed: &mut BTreeMap<String, SpeedTable>,
) {
    match (app, layout) {
        ("yolov3", ProfileLayout::Pollux) => {
            for table in speed.values_mut() {
                table.max_local_bsz = 8;
            }
        }
        ("deepspeech2", ProfileLayout::Sia) => {
            if let Some(table) = speed.get_mut("rtx") {
                table.max_local_bsz = 57;
            }
        }
        _ => {}
    }
}

/// All applications of one profile folder.
#[derive(Clone, Debug)]
pub struct ProfileSet {
    pub layout: ProfileLayout,
    pub apps: BTreeMap<String, AppProfile>,
    pub dir: PathBuf,
}

impl ProfileSet {
    /// Reads every application subfolder of `dir`; the layout is Sia when any file carries a
    /// node-kind suffix.
    pub fn read(dir: &Path) -> Result<Self, InputError> {
        let app_dirs: Vec<PathBuf> = list_dir(dir)?.into_iter().filter(|p| p.is_dir()).collect();
        if app_dirs.is_empty() {
            return Err(InputError::file(
                dir,
                "no application folders (expected DIR/<app>/placements*.csv)",
            ));
        }
        let suffixed = app_dirs.iter().any(|d| {
            list_dir(d).unwrap_or_default().iter().any(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("placements-"))
            })
        });
        let layout = if suffixed {
            ProfileLayout::Sia
        } else {
            ProfileLayout::Pollux
        };
        let mut apps = BTreeMap::new();
        for app_dir in app_dirs {
            let profile = AppProfile::read(&app_dir, layout)?;
            apps.insert(profile.name.clone(), profile);
        }
        Ok(ProfileSet {
            layout,
            apps,
            dir: dir.to_path_buf(),
        })
    }

    pub fn app(&self, name: &str) -> Option<&AppProfile> {
        self.apps.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> ProfileSet {
        ProfileSet::read(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/pollux/profiles"
        )))
        .expect("bundled")
    }

    #[test]
    fn placements_are_keyed_by_their_smallest_rotation() {
        assert_eq!(normalize_placement(&[2, 1, 1]), vec![1, 1, 2]);
        assert_eq!(normalize_placement(&[4, 0, 2]), vec![2, 4]);
        assert_eq!(normalize_placement(&[3]), vec![3]);
    }

    #[test]
    fn interpolation_is_linear_and_clamped() {
        let pts = [(1.0, 10.0, 1.0), (3.0, 30.0, 3.0)];
        assert_eq!(interpolate(&pts, 2.0), Some((20.0, 2.0)));
        assert_eq!(interpolate(&pts, 0.0), Some((10.0, 1.0)));
        assert_eq!(interpolate(&pts, 9.0), Some((30.0, 3.0)));
        assert_eq!(interpolate(&[], 1.0), None);
    }

    #[test]
    fn reads_the_pollux_layout_with_the_artifact_constants() {
        let set = bundled();
        assert_eq!(set.layout, ProfileLayout::Pollux);
        assert_eq!(set.apps.len(), 6);
        let cifar = set.app("cifar10").expect("cifar10");
        assert_eq!(
            (
                cifar.init_batch_size,
                cifar.max_batch_size,
                cifar.max_epochs
            ),
            (128, 4096, 100)
        );
        assert_eq!(cifar.restart_delay_s, 30.0);
        assert_eq!(
            set.app("yolov3").expect("yolov3").speed["aws"].max_local_bsz,
            8
        );
        assert_eq!(set.app("bert").expect("bert").max_epochs, 2);
        // Measured point: cifar10 on one GPU at local batch 32 (placements.csv line 2).
        let (step, sync) = cifar.speed["aws"].step_time(&[1], 32.0).expect("measured");
        assert!(
            (step - 0.0427886962890625).abs() < 1e-12
                && (sync - 0.0004995360016822816).abs() < 1e-12
        );
    }

    #[test]
    fn unmeasured_placements_interpolate_between_measured_shapes() {
        let set = bundled();
        let table = &set.app("cifar10").expect("cifar10").speed["aws"];
        // 5 nodes × 4 GPUs is not measured; it lies between 4 nodes × 4 and 6 nodes × 4.
        let (four, _) = table.step_time(&[4, 4, 4, 4], 128.0).expect("measured");
        let (six, _) = table
            .step_time(&[4, 4, 4, 4, 4, 4], 128.0)
            .expect("scalability");
        let (five, _) = table
            .step_time(&[4, 4, 4, 4, 4], 128.0)
            .expect("interpolated");
        assert!(
            five >= four.min(six) && five <= four.max(six),
            "{four} {five} {six}"
        );
    }

    #[test]
    fn gain_is_one_at_the_initial_batch_and_grows_with_batch() {
        let set = bundled();
        let cifar = set.app("cifar10").expect("cifar10");
        assert!((cifar.gain(128.0, 0) - 1.0).abs() < 1e-12);
        let (sqr, var) = cifar.grad_stats(1024.0, 5);
        let by_hand = (var + sqr) / (var / 8.0 + sqr);
        assert!((cifar.gain(1024.0, 5) - by_hand).abs() < 1e-9);
        assert!(cifar.gain(1024.0, 5) > 1.0 && cifar.gain(1024.0, 5) <= 8.0);
        // Midway between measured batches, statistics interpolate linearly.
        let (s_lo, v_lo) = cifar.grad_stats(256.0, 3);
        let (s_hi, v_hi) = cifar.grad_stats(512.0, 3);
        let (s_mid, v_mid) = cifar.grad_stats(384.0, 3);
        assert!(
            (s_mid - (s_lo + s_hi) / 2.0).abs() < 1e-9
                && (v_mid - (v_lo + v_hi) / 2.0).abs() < 1e-9
        );
    }

    #[test]
    fn malformed_profiles_name_file_and_value() {
        let dir = tempfile::tempdir().expect("temp");
        let app = dir.path().join("toy");
        std::fs::create_dir(&app).expect("mkdir");
        std::fs::write(
            app.join("validation-8.csv"),
            "progress,iteration,metric,grad_sqr,grad_var\n1,1,0.5,1,1\n",
        )
        .expect("write");
        std::fs::write(
            app.join("placements.csv"),
            "placement,local_bsz,step_time,sync_time\n1x,8,0.1,0.0\n",
        )
        .expect("write");
        let err = ProfileSet::read(dir.path())
            .expect_err("bad placement")
            .to_string();
        assert!(
            err.contains("placements.csv:2") && err.contains("1x"),
            "{err}"
        );
        std::fs::write(
            app.join("placements.csv"),
            "placement,local_bsz,step_time,sync_time\n1,8,slow,0.0\n",
        )
        .expect("write");
        let err = ProfileSet::read(dir.path())
            .expect_err("bad number")
            .to_string();
        assert!(
            err.contains("placements.csv") && err.contains("slow"),
            "{err}"
        );
        // A step that takes no time would make a job infinitely fast (and hang the engine).
        std::fs::write(
            app.join("placements.csv"),
            "placement,local_bsz,step_time,sync_time\n1,8,0,0.0\n",
        )
        .expect("write");
        let err = ProfileSet::read(dir.path())
            .expect_err("zero step")
            .to_string();
        assert!(err.contains("step_time") && err.contains("> 0"), "{err}");
        let err = ProfileSet::read(&dir.path().join("missing"))
            .expect_err("no dir")
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
