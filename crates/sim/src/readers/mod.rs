//! Trace readers: each turns one file format into a `Workload`.
//!
//! Raw traces (Philly, Helios, Alibaba openb) become rigid jobs that run for their recorded
//! duration on the GPUs they asked for. They name no model, so `application` is a
//! `trace:group` label (`philly:<vc>`, `helios:<vc>`, `openb:<qos>`): the most useful grouping
//! the trace has, and free for reports to split on.
//!
//! The CSV plumbing shared by the readers lives here. It reads by header name (column order
//! does not matter, extra columns are ignored), trims spaces around fields, and turns every
//! bad field into an `InputError` that names file, line, column and value, so a user can fix
//! the row without reading our code.

pub mod helios;
pub mod openb;
pub mod philly;
pub mod pollux;

use crate::error::InputError;
use crate::workload::Workload;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Network bandwidth given to preset nodes: no trace here records it, so every preset uses
/// this one documented assumption (a 100 Gb/s fabric, InfiniBand-class).
pub const ASSUMED_NETWORK_GBPS: f64 = 100.0;

/// The raw trace formats `detect_and_read` recognises from a CSV header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Philly per-job table: `timestamp,duration,num_gpus[,gpu_time,cluster]`.
    Philly,
    /// Helios `cluster_log.csv`: `job_id,...,gpu_num,...,submit_time,...`.
    Helios,
    /// Alibaba openb pod list: `name,...,num_gpu,...,creation_time,deletion_time,scheduled_time`.
    Openb,
}

/// Which raw format the header of `path` announces, if any. Errors only on IO or an empty file.
pub fn detect_format(path: &Path) -> Result<Option<TraceFormat>, InputError> {
    let table = CsvTable::open(path)?;
    let candidates = [
        (TraceFormat::Openb, openb::HEADER),
        (TraceFormat::Helios, helios::HEADER),
        (TraceFormat::Philly, philly::HEADER),
    ];
    Ok(candidates
        .into_iter()
        .find(|(_, required)| required.iter().all(|name| table.has(name)))
        .map(|(format, _)| format))
}

/// Reads `path` with the raw-trace reader its header matches; `Ok(None)` when it matches none
/// (the caller then tries other formats, e.g. Pollux workloads).
pub fn detect_and_read(path: &Path) -> Result<Option<Workload>, InputError> {
    match detect_format(path)? {
        Some(TraceFormat::Philly) => philly::read_philly(path).map(Some),
        Some(TraceFormat::Helios) => helios::read_helios(path).map(Some),
        Some(TraceFormat::Openb) => openb::read_openb(path).map(Some),
        None => Ok(None),
    }
}

/// A raw-trace workload: submit times (seconds since 1970, `submit_of`) rebased to the earliest
/// row, whose timestamp (from column `column`) is named in the notes; jobs sorted by submission.
pub(crate) fn rebased_workload<P>(
    path: &Path,
    parsed: Vec<P>,
    mut notes: Vec<String>,
    column: &str,
    submit_of: impl Fn(&P) -> (i64, &str),
    to_job: impl Fn(P, i64) -> adaptsched_core::JobSpec,
) -> Workload {
    let earliest = parsed.iter().min_by_key(|p| submit_of(p).0);
    let origin = earliest.map_or(0, |p| submit_of(p).0);
    if let Some(first) = earliest {
        notes.push(format!(
            "submit times are seconds after the earliest {column}, {}",
            submit_of(first).1
        ));
    }
    let jobs = parsed.into_iter().map(|p| to_job(p, origin)).collect();
    let mut workload = Workload {
        name: file_stem(path),
        jobs,
        notes,
    };
    workload.sort_by_submit_time();
    workload
}

/// The workload or cluster name for a file: its stem (`workload-1` for `workload-1.csv`).
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// A CSV file opened for reading by column name.
pub(crate) struct CsvTable<R: Read> {
    file: PathBuf,
    names: Vec<String>,
    reader: csv::Reader<R>,
}

impl CsvTable<std::fs::File> {
    /// Opens `path` and reads its header; an empty file is an error naming the file.
    pub(crate) fn open(path: &Path) -> Result<Self, InputError> {
        let input = std::fs::File::open(path).map_err(|e| InputError::io(path, e))?;
        Self::from_reader(path, input)
    }
}

impl<R: Read> CsvTable<R> {
    /// Reads the header from `input`; `file` is only used to label errors.
    pub(crate) fn from_reader(file: &Path, input: R) -> Result<Self, InputError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true) // we check row widths ourselves, to name the missing column
            .trim(csv::Trim::All)
            .from_reader(input);
        let header = reader.headers().map_err(|e| csv_error(file, &[], e))?;
        let names: Vec<String> = header.iter().map(str::to_string).collect();
        if names.iter().all(String::is_empty) {
            return Err(InputError::file(file, "empty file: no header row"));
        }
        Ok(CsvTable {
            file: file.to_path_buf(),
            names,
            reader,
        })
    }

    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.column(name).is_some()
    }

    /// The index of column `name`, if the header has it.
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The index of column `name`; a missing column is an error on line 1 showing the header.
    pub(crate) fn require(&self, name: &str) -> Result<usize, InputError> {
        self.column(name).ok_or_else(|| {
            InputError::field(
                &self.file,
                1,
                name,
                &self.names.join(","),
                "missing column in the header",
            )
        })
    }

    /// Calls `f` on every data row, after checking the row has exactly the header's width.
    /// Whitespace-only lines are skipped. A file with a header but no rows is an error.
    pub(crate) fn for_each_row(
        &mut self,
        mut f: impl FnMut(&Row<'_>) -> Result<(), InputError>,
    ) -> Result<u64, InputError> {
        let mut record = csv::StringRecord::new();
        let mut rows = 0;
        loop {
            match self.reader.read_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(csv_error(&self.file, &self.names, e)),
            }
            if record.len() == 1 && record.get(0) == Some("") {
                continue;
            }
            let line = record.position().map_or(0, csv::Position::line);
            let row = Row {
                file: &self.file,
                line,
                record: &record,
                names: &self.names,
            };
            row.check_width()?;
            f(&row)?;
            rows += 1;
        }
        if rows == 0 {
            return Err(InputError::file(
                &self.file,
                "no data rows after the header",
            ));
        }
        Ok(rows)
    }
}

/// Converts a `csv` error into an `InputError`, keeping the line (and column, for bad UTF-8).
fn csv_error(file: &Path, names: &[String], e: csv::Error) -> InputError {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => InputError::io(file, io),
        csv::ErrorKind::Utf8 { pos, err } => {
            let line = pos.map_or(1, |p| p.line());
            let column = names
                .get(err.field())
                .cloned()
                .unwrap_or_else(|| format!("field {}", err.field() + 1));
            let detail = format!("not valid UTF-8 (after byte {})", err.valid_up_to());
            InputError::field(file, line, &column, "", detail)
        }
        _ => InputError::file(file, message),
    }
}

/// One data row, with typed accessors that produce located errors.
pub(crate) struct Row<'a> {
    file: &'a Path,
    line: u64,
    record: &'a csv::StringRecord,
    names: &'a [String],
}

impl Row<'_> {
    /// The 1-based line of the file this row starts on (the header is line 1).
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// The trimmed text of column `col` (empty if absent).
    pub(crate) fn text(&self, col: usize) -> &str {
        self.record.get(col).unwrap_or("")
    }

    /// All fields, for exact-duplicate detection.
    pub(crate) fn fields(&self) -> Vec<String> {
        self.record.iter().map(str::to_string).collect()
    }

    /// An error about column `col` of this row, quoting its value.
    pub(crate) fn error(&self, col: usize, message: impl Into<String>) -> InputError {
        let column = self.names.get(col).map_or("?", String::as_str);
        InputError::field(self.file, self.line, column, self.text(col), message)
    }

    fn check_width(&self) -> Result<(), InputError> {
        let (have, want) = (self.record.len(), self.names.len());
        if have < want {
            let column = self.names.get(have).map_or("?", String::as_str);
            let message = format!("truncated row: {have} of {want} fields (column missing)");
            return Err(InputError::field(self.file, self.line, column, "", message));
        }
        if have > want {
            let value = self.record.get(want).unwrap_or("");
            let message = format!("row has {have} fields but the header has {want}");
            return Err(InputError::field(
                self.file,
                self.line,
                "(beyond the header)",
                value,
                message,
            ));
        }
        Ok(())
    }

    /// A required finite, non-negative number (seconds, millicores, MiB, ...).
    pub(crate) fn non_negative(&self, col: usize) -> Result<f64, InputError> {
        self.opt_non_negative(col)?
            .ok_or_else(|| self.error(col, "missing value"))
    }

    /// Like `non_negative`, but an empty field is `None` (the trace left it blank on purpose).
    pub(crate) fn opt_non_negative(&self, col: usize) -> Result<Option<f64>, InputError> {
        let text = self.text(col);
        if text.is_empty() {
            return Ok(None);
        }
        let value: f64 = text.parse().map_err(|_| self.error(col, "not a number"))?;
        if !value.is_finite() {
            return Err(self.error(col, "not a finite number"));
        }
        if value < 0.0 {
            return Err(self.error(col, "negative value"));
        }
        Ok(Some(value))
    }

    /// A required non-negative whole number (GPU counts, millis).
    pub(crate) fn count(&self, col: usize) -> Result<u32, InputError> {
        self.opt_count(col)?
            .ok_or_else(|| self.error(col, "missing value"))
    }

    /// Like `count`, but an empty field is `None`.
    pub(crate) fn opt_count(&self, col: usize) -> Result<Option<u32>, InputError> {
        let text = self.text(col);
        if text.is_empty() {
            return Ok(None);
        }
        let value: i64 = text.parse().map_err(|_| match text.parse::<f64>() {
            Ok(_) => self.error(col, "not a whole number"),
            Err(_) => self.error(col, "not a number"),
        })?;
        if value < 0 {
            return Err(self.error(col, "negative count"));
        }
        let value = u32::try_from(value).map_err(|_| self.error(col, "count too large"))?;
        Ok(Some(value))
    }

    /// A required `YYYY-MM-DD HH:MM:SS` timestamp, as seconds since 1970 (no time zone).
    pub(crate) fn datetime(&self, col: usize) -> Result<i64, InputError> {
        self.opt_datetime(col)?
            .ok_or_else(|| self.error(col, "missing value"))
    }

    /// Like `datetime`, but an empty field is `None`.
    pub(crate) fn opt_datetime(&self, col: usize) -> Result<Option<i64>, InputError> {
        let text = self.text(col);
        if text.is_empty() {
            return Ok(None);
        }
        let seconds = parse_datetime(text)
            .ok_or_else(|| self.error(col, "not a valid `YYYY-MM-DD HH:MM:SS` date and time"))?;
        Ok(Some(seconds))
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS` (or with `T`) into seconds since 1970-01-01 00:00:00, treating it
/// as naive local time: the traces carry no zone, and readers only use differences.
pub(crate) fn parse_datetime(text: &str) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    let [year, month, day] = split_fields::<3>(date, '-')?;
    let [hour, minute, second] = split_fields::<3>(time, ':')?;
    let (month, day) = (u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    let valid_date = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
    let valid_time =
        (0..24).contains(&hour) && (0..60).contains(&minute) && (0..60).contains(&second);
    if !valid_date || !valid_time {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Splits `text` on `sep` into exactly `N` unsigned decimal fields.
fn split_fields<const N: usize>(text: &str, sep: char) -> Option<[i64; N]> {
    let mut out = [0i64; N];
    let mut parts = text.split(sep);
    for slot in &mut out {
        let part = parts.next()?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Assertions the readers' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::error::InputError;

    /// Asserts `result` is a field error in `t.csv` at `line`/`column` quoting `value`.
    pub(crate) fn assert_field_error<T: std::fmt::Debug>(
        result: Result<T, InputError>,
        line: u64,
        column: &str,
        value: &str,
    ) {
        match result {
            Err(InputError::Field {
                line: l,
                column: c,
                value: v,
                file,
                ..
            }) => {
                assert_eq!((l, c.as_str(), v.as_str()), (line, column, value));
                assert!(file.ends_with("t.csv"));
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn readers_parse_datetime_matches_known_epochs() {
        assert_eq!(parse_datetime("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_datetime("2017-10-09 07:01:55"), Some(1_507_532_515));
        assert_eq!(parse_datetime("2020-02-29T23:59:59"), Some(1_583_020_799));
        for bad in [
            "2017-02-29 00:00:00",
            "2017-13-01 00:00:00",
            "2017-10-09 24:00:00",
            "2017-10-09",
            "x",
            "2017-10-09 07:01:55:1",
            "-1-01-01 00:00:00",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn readers_detect_dispatches_by_header() {
        let dir = tempfile::tempdir().unwrap();
        let philly = write(
            &dir,
            "p.csv",
            "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-01 00:00:00,10.0,1,10.0,vc\n",
        );
        let helios = write(
            &dir,
            "h.csv",
            "job_id,user,vc,gpu_num,cpu_num,node_num,state,submit_time,start_time,end_time,duration,queue\n\
             1,u1,vc1,1,4,1,COMPLETED,2020-04-01 00:00:00,2020-04-01 00:00:05,2020-04-01 00:01:05,60,5\n",
        );
        let openb = write(
            &dir,
            "o.csv",
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
             pod-1,4000,8192,1,1000,,LS,Succeeded,0,100,10\n",
        );
        let pollux = write(
            &dir,
            "w.csv",
            "name,time,application,num_replicas,batch_size\njob,0,cifar10,1,128\n",
        );
        assert_eq!(detect_format(&philly).unwrap(), Some(TraceFormat::Philly));
        assert_eq!(detect_format(&helios).unwrap(), Some(TraceFormat::Helios));
        assert_eq!(detect_format(&openb).unwrap(), Some(TraceFormat::Openb));
        assert_eq!(detect_format(&pollux).unwrap(), None);
        assert_eq!(detect_and_read(&philly).unwrap().unwrap().name, "p");
        assert_eq!(detect_and_read(&helios).unwrap().unwrap().jobs.len(), 1);
        assert_eq!(detect_and_read(&openb).unwrap().unwrap().jobs.len(), 1);
        assert!(detect_and_read(&pollux).unwrap().is_none());
    }

    #[test]
    fn readers_detect_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(&dir, "empty.csv", "");
        let err = detect_and_read(&empty).unwrap_err();
        assert!(
            matches!(&err, InputError::File { file, .. } if file == &empty),
            "{err}"
        );
        assert!(err.to_string().contains("empty.csv"), "{err}");
        let missing = dir.path().join("missing.csv");
        assert!(matches!(
            detect_and_read(&missing),
            Err(InputError::Io { .. })
        ));
    }

    #[test]
    fn readers_table_reports_truncated_and_overlong_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "t.csv", "a,b,c\n1,2,3\n\n   \n4,5\n");
        let mut table = CsvTable::open(&path).unwrap();
        let err = table.for_each_row(|_| Ok(())).unwrap_err();
        match err {
            InputError::Field {
                line,
                column,
                value,
                ..
            } => assert_eq!((line, column.as_str(), value.as_str()), (5, "c", "")),
            other => panic!("unexpected {other}"),
        }
        let path = write(&dir, "u.csv", "a,b\n1,2,3\n");
        let err = CsvTable::open(&path)
            .unwrap()
            .for_each_row(|_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(err, InputError::Field { line: 2, ref value, .. } if value == "3"),
            "{err}"
        );
    }

    #[test]
    fn readers_table_reports_bad_utf8_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin.csv");
        fs::write(&path, b"a,b\n1,2\n3,\xff\xfe\n").unwrap();
        let err = CsvTable::open(&path)
            .unwrap()
            .for_each_row(|_| Ok(()))
            .unwrap_err();
        assert!(
            matches!(err, InputError::Field { line: 3, ref column, .. } if column == "b"),
            "{err}"
        );
    }

    #[test]
    fn readers_header_only_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "h.csv", "timestamp,duration,num_gpus\n");
        let err = detect_and_read(&path).unwrap_err();
        assert!(err.to_string().contains("no data rows"), "{err}");
    }

    #[test]
    fn readers_count_and_number_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.csv", "x\n1.5\n-2\nabc\nNaN\n-0.5\n99999999999\n");
        let mut table = CsvTable::open(&path).unwrap();
        let mut messages = Vec::new();
        table
            .for_each_row(|row| {
                messages.push(row.count(0).err().map(|e| e.to_string()));
                messages.push(row.non_negative(0).err().map(|e| e.to_string()));
                Ok(())
            })
            .unwrap();
        let joined = format!("{messages:?}");
        for needle in [
            "not a whole number",
            "negative count",
            "not a number",
            "not a finite number",
            "negative value",
            "count too large",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
    }
}
