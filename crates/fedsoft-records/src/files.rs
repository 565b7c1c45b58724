//! How every file of a run is written: whole or not at all.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` so that a reader (or a run resumed after a crash) sees either the old file or the
/// whole new one: a temporary file beside it, flushed to disk, renamed over it, then the directory entry
/// flushed too (without that, a power cut can undo the rename). The one writer of run files, checkpoints,
/// reports and the results page.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("fedsoft-records-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        write_atomic(&path, b"first, and longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
        assert!(write_atomic(&dir.join("missing/x.json"), b"x").is_err(), "a missing directory is an error");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
