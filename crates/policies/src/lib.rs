//! adaptsched-policies: one module per scheduling policy, and the registry that builds them by name.

pub mod adaptive;
pub mod fifo;
pub mod gavel;
pub mod placement;
pub mod pollux;
pub mod proportional;
pub mod registry;
pub mod sia;
pub mod srtf;
pub mod themis;
pub mod tiresias;

pub use registry::{DEFAULT_POLICY, POLICY_NAMES, UnknownPolicy, build_policy};
