//! The GPU path without a GPU: a stub `libnvidia-ml` (tests/data/nvml_stub.c, built here with
//! the C compiler the bundled SQLite already needs) with two fake GPUs.

mod common;

use adaptsched_api::NodeView;
use adaptsched_server::node::{GpuProbe, probe_gpus};
use adaptsched_server::telemetry::Sampler;
use common::*;
use std::path::{Path, PathBuf};

fn build_stub(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nvml_stub.c");
    let library = dir.join("libnvidia-ml-stub.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = std::process::Command::new(&compiler)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status()
        .unwrap_or_else(|error| panic!("running {compiler}: {error}"));
    assert!(status.success(), "building the NVML stub failed");
    library
}

#[test]
fn gpus_from_nvml_are_counted_named_and_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_stub(dir.path());
    let probe = probe_gpus(Some(library.as_os_str()));
    let GpuProbe::Available { count, name, .. } = &probe else {
        panic!("the stub was not loaded: {:?}", probe.note());
    };
    assert_eq!((*count, name.as_str()), (2, "Stub GPU 80GB"));
    let mut sampler = Sampler::new(probe);
    let sample = sampler.sample(1.0, &[]);
    assert_eq!(sample.gpu_note, None);
    let gpus = sample.gpus.expect("GPU telemetry");
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[1].index, 1);
    assert_eq!(gpus[1].utilization_percent, 80.0);
    assert_eq!(gpus[1].memory_used_gb, 40.0);
    assert_eq!(gpus[1].memory_total_gb, 80.0);
    assert_eq!(gpus[1].temperature_c, Some(52.0));
    assert_eq!(gpus[1].power_w, Some(250.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_gpus_offers_them_and_jobs_see_cuda_visible_devices() {
    let dir = tempfile::tempdir().unwrap();
    let library = build_stub(dir.path());
    let args = adaptsched_server::ServeArgs {
        cpu_slots: None,
        nvml_lib: Some(library),
        ..common::args(dir.path(), 1)
    };
    let plane = adaptsched_server::ControlPlane::start(&args, "http://127.0.0.1:9")
        .await
        .unwrap();
    let nodes: Vec<NodeView> = get(&plane, "/v1/nodes").await.json();
    assert_eq!(
        (nodes[0].gpu_type.as_str(), nodes[0].gpus),
        ("Stub GPU 80GB", 2)
    );
    let token = plane.token.clone();
    let id = submit(
        &plane,
        &token,
        serde_json::json!({"command": command("echo \"cuda=$CUDA_VISIBLE_DEVICES slots=${ADAPTSCHED_CPU_SLOTS-unset}\""), "min_gpus": 2}),
    )
    .await;
    wait_job(&plane, id, "succeeded", state_is("succeeded")).await;
    let log = get(&plane, &format!("/v1/jobs/{id}/logs")).await.text();
    assert_eq!(log, "cuda=0,1 slots=unset\n");
    plane.stop().await;
}
