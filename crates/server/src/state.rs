//! The state every HTTP handler shares: the store, the nodes, the scheduling loop's status,
//! telemetry history and the server's settings.

use crate::control::ControlShared;
use crate::error::ApiError;
use crate::node::NodeInfo;
use crate::ray::RayWatcher;
use crate::telemetry::SharedHistory;
use adaptsched_store::Store;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub store: Arc<dyn Store>,
    /// The devices offered at start; [`AppState::node`] is what the loop schedules now.
    pub start_node: NodeInfo,
    /// The Ray cluster's nodes (`--executor ray`), for `/v1/nodes` per Ray node.
    pub ray: Option<RayWatcher>,
    pub control: Arc<ControlShared>,
    pub telemetry: SharedHistory,
    pub policy: String,
    pub interval_s: f64,
    pub data_dir: PathBuf,
    /// Working dir of jobs that name none (the server's own).
    pub default_dir: String,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// The devices the scheduling loop plans with now: fixed for the local machine, the Ray
    /// cluster's usable nodes as of the last round with `--executor ray`.
    pub fn node(&self) -> NodeInfo {
        self.control
            .node()
            .unwrap_or_else(|| self.start_node.clone())
    }

    /// Runs a store call on the blocking pool: SQLite calls block (and fsync), and a handler
    /// must not stall the runtime's worker threads.
    pub async fn db<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || call(store.as_ref()))
            .await
            .map_err(ApiError::internal)
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
