//! Trace readers: each turns one file format into a `Workload`.
