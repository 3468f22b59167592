//! adaptsched-core: the pure model every driver shares (ids, cluster, jobs, allocations,
//! the `Policy` trait, plan validation and metrics). No IO, no async runtime, no wall clock.

pub mod cluster;
pub mod ids;
pub mod job;
pub mod metrics;
pub mod perf;
pub mod plan;
pub mod policy;

pub use cluster::{Cluster, GpuType, Node};
pub use ids::{JobId, NodeId, Time};
pub use job::{JobCategory, JobSpec, Work};
pub use plan::{Allocation, Plan, PlanViolation, validate_plan};
pub use policy::{JobView, Policy, Snapshot};
