//! Runs the Python client's unittest suite (`python/tests`: the `adaptsched` package and the
//! example trainer) so that `cargo test --workspace` covers the training side too.

use std::path::Path;
use std::process::Command;

/// `unittest discover` over `python/tests`, with `python/` as the import root.
const UNITTEST: &str = "-m unittest discover -s python/tests -t python";

#[test]
fn python_client_unittests_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("python3")
        .args(UNITTEST.split(' '))
        .current_dir(&repo)
        // No __pycache__ dirs in the checkout; no proxy for the tests' loopback servers.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .expect("python3 runs (the Python client tests need python3 >= 3.9 on PATH)");
    assert!(
        output.status.success(),
        "python unittests failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
