//! A workload: the jobs of one trace file, in submission order, plus what the reader noticed.

use adaptsched_core::JobSpec;

/// The jobs of one workload file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// The file stem (`workload-1`), used as the workload's key in reports.
    pub name: String,
    /// Jobs sorted by submission time (stable for equal times).
    pub jobs: Vec<JobSpec>,
    /// Things the reader fixed or dropped (duplicates, unsorted rows, ...), for the user.
    pub notes: Vec<String>,
}

impl Workload {
    /// Sorts jobs by submission time, keeping file order for ties, and notes if it had to.
    pub fn sort_by_submit_time(&mut self) {
        let sorted = self
            .jobs
            .windows(2)
            .all(|w| w[0].submit_time <= w[1].submit_time);
        if !sorted {
            self.jobs
                .sort_by(|a, b| a.submit_time.total_cmp(&b.submit_time));
            self.notes
                .push("rows were not in submission order; sorted".to_string());
        }
    }
}
