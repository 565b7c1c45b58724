//! What an unpacked asset held when it was fetched: every file's size, modification time and sha256.
//!
//! The archive's checksum is pinned, but the unpacked cache is ordinary files that a disk error, a half
//! finished copy or a stray edit can change after the fact; a model read from such a file runs to the end
//! with garbage weights. So every file is hashed again at every check: size and modification time can be
//! restored by a copy tool or by hand while the bytes differ, and a content hash is the only proof. It costs
//! about a tenth of a second per 100 MB on one core (sha2 uses the CPU's SHA extensions where it has them),
//! next to seconds for reading and preparing the model it guards. The recorded mtime stays in the format
//! (older manifests carry it) but decides nothing.

use crate::error::DataError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

const HEADER: &str = "fedsoft-manifest 1";

/// One recorded file, its path relative to the asset directory with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub sha256: String,
}

/// The recorded state of one unpacked asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// sha256 of the package archive the files came from.
    pub archive: String,
    pub entries: Vec<Entry>,
}

/// How a recorded file differs from what is on disk now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub path: String,
    pub problem: String,
}

impl Manifest {
    /// Records every regular file under `dir` except `skip` (the stamp itself), in sorted order.
    pub fn record(dir: &Path, archive: &str, skip: &str) -> Result<Self, DataError> {
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        files.sort();
        let mut entries = Vec::with_capacity(files.len());
        for file in files {
            let rel = relative(dir, &file)?;
            if rel == skip {
                continue;
            }
            let (size, mtime_ns) = stat(&file)?;
            entries.push(Entry { path: rel, size, mtime_ns, sha256: sha256_file(&file)? });
        }
        Ok(Manifest { archive: archive.to_string(), entries })
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER} {}\n", self.archive);
        for e in &self.entries {
            out.push_str(&format!("{} {} {} {}\n", e.sha256, e.size, e.mtime_ns, e.path));
        }
        out
    }

    /// `None` for anything that is not a manifest written by [`Manifest::to_text`] (including the bare
    /// checksum that older versions wrote as the stamp), so such an asset is unpacked afresh.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let archive = lines.next()?.strip_prefix(HEADER)?.strip_prefix(' ')?.to_string();
        let mut entries = Vec::new();
        for line in lines {
            let mut parts = line.splitn(4, ' ');
            let sha256 = parts.next()?.to_string();
            let size = parts.next()?.parse().ok()?;
            let mtime_ns = parts.next()?.parse().ok()?;
            let path = parts.next()?.to_string();
            if sha256.len() != 64 || path.is_empty() || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return None;
            }
            entries.push(Entry { path, size, mtime_ns, sha256 });
        }
        Some(Manifest { archive, entries })
    }

    /// The first recorded file under `dir` that is missing or whose contents changed.
    pub fn check(&self, dir: &Path) -> Result<Option<Drift>, DataError> {
        for e in &self.entries {
            let file = dir.join(&e.path);
            let drift = |problem: String| Ok(Some(Drift { path: e.path.clone(), problem }));
            let Ok(meta) = std::fs::metadata(&file) else {
                return drift("is missing".into());
            };
            if !meta.is_file() {
                return drift("is no longer a regular file".into());
            }
            let (size, _) = stat(&file)?;
            if size != e.size {
                return drift(format!("has {size} bytes, {} when fetched", e.size));
            }
            let now = sha256_file(&file)?;
            if now != e.sha256 {
                return drift(format!("has sha256 {now}, {} when fetched", e.sha256));
            }
        }
        Ok(None)
    }
}

/// The file's sha256 as lowercase hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let kind = entry.file_type().map_err(|e| DataError::io(&entry.path(), e))?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn relative(dir: &Path, file: &Path) -> Result<String, DataError> {
    let rel = file.strip_prefix(dir).map_err(|_| DataError::file(file, "is outside the asset directory"))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    match parts {
        Some(p) if p.iter().all(|c| !c.contains('\n') && !c.contains('\r')) => Ok(p.join("/")),
        _ => Err(DataError::file(file, "has a name that is not plain UTF-8 text")),
    }
}

fn stat(file: &Path) -> Result<(u64, u128), DataError> {
    let meta = std::fs::metadata(file).map_err(|e| DataError::io(file, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok((meta.len(), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_directory_checks_clean_and_survives_text() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a b")).unwrap();
        std::fs::write(tmp.path().join("a b/w.bin"), [1u8, 2, 3]).unwrap();
        std::fs::write(tmp.path().join("STAMP"), "x").unwrap();
        let m = Manifest::record(tmp.path(), "feed", "STAMP").unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(Manifest::parse(&m.to_text()), Some(m.clone()));
        assert_eq!(m.check(tmp.path()).unwrap(), None);
    }

    #[test]
    fn changed_contents_are_found_even_with_size_and_mtime_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("w.bin");
        std::fs::write(&f, [0u8; 16]).unwrap();
        let m = Manifest::record(tmp.path(), "feed", "STAMP").unwrap();
        let when = std::fs::metadata(&f).unwrap().modified().unwrap();
        let mut bytes = [0u8; 16];
        bytes[3] = 1;
        std::fs::write(&f, bytes).unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(when).unwrap();
        assert_eq!(stat(&f).unwrap(), (m.entries[0].size, m.entries[0].mtime_ns));
        let drift = m.check(tmp.path()).unwrap().expect("changed bytes behind the old size and mtime");
        assert!(drift.problem.contains("sha256"), "{drift:?}");
    }

    #[test]
    fn changed_contents_are_found_but_a_touch_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("w.bin");
        std::fs::write(&f, [0u8; 16]).unwrap();
        let mut m = Manifest::record(tmp.path(), "feed", "STAMP").unwrap();
        // Same bytes, another mtime: hashed again and accepted.
        m.entries[0].mtime_ns += 1;
        assert_eq!(m.check(tmp.path()).unwrap(), None);
        let mut bytes = [0u8; 16];
        bytes[7] = 0x7f;
        std::fs::write(&f, bytes).unwrap();
        let drift = m.check(tmp.path()).unwrap().expect("changed");
        assert!(drift.path == "w.bin" && drift.problem.contains("sha256"), "{drift:?}");
        std::fs::write(&f, [0u8; 3]).unwrap();
        assert!(m.check(tmp.path()).unwrap().unwrap().problem.contains("3 bytes"));
        std::fs::remove_file(&f).unwrap();
        assert!(m.check(tmp.path()).unwrap().unwrap().problem.contains("missing"));
    }

    #[test]
    fn old_stamps_and_hostile_paths_are_not_manifests() {
        assert_eq!(Manifest::parse("410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"), None);
        let sha = "0".repeat(64);
        assert!(Manifest::parse(&format!("{HEADER} x\n{sha} 1 2 ok/file\n")).is_some());
        assert_eq!(Manifest::parse(&format!("{HEADER} x\n{sha} 1 2 ../etc/passwd\n")), None);
        assert_eq!(Manifest::parse(&format!("{HEADER} x\n{sha} one 2 f\n")), None);
    }
}
