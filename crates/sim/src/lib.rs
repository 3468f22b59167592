//! adaptsched-sim: the trace-driven discrete-event simulator (readers, clusters, profiles,
//! engine, reports).

pub mod error;
pub mod readers;
pub mod workload;

pub use error::InputError;
pub use workload::Workload;
pub mod clusters;
pub mod engine;
pub mod html;
pub mod load;
pub mod profiles;
pub mod progress;
pub mod reference;
pub mod report;
pub mod synthetic;
