//! Running the built `fedsoft` binary from the repository root, as a user would.

use std::process::Command;

/// Runs `fedsoft ARGS...`: whether it succeeded, its stdout and its stderr.
pub fn fedsoft(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fedsoft"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}
