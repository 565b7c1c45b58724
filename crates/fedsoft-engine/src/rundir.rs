//! A run directory belongs to its run. Before anything is written, the run takes an exclusive lock on the
//! directory (so a second `run` or `serve` on the same `--out` fails at once instead of interleaving its files
//! with the first) and leaves a marker naming its config digest (so a later run can tell its own directory
//! from a user's). A fresh run starts only in a new or empty directory, or in one holding a run of the same
//! config that never reached a checkpoint; it never writes over files it did not make.
//!
//! The lock is the operating system's advisory lock on `.fedsoft.lock`: it goes away with the process that
//! held it, however that process ended, so a killed run leaves no stale lock behind.

use crate::checkpoint;
use crate::error::EngineError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The marker a run writes first into its directory.
pub const MARKER: &str = "fedsoft-run.json";
/// The file whose lock says a process is writing the run.
pub const LOCK: &str = ".fedsoft.lock";

/// Entries fedsoft itself may have put in a directory before its run starts: the serving secret that
/// `serve --issue-token` creates, the address `serve` is listening on, and a TSFA pilot's own run directory.
const OWN_BEFORE_START: [&str; 5] = [MARKER, LOCK, "secret", "listen.addr", "pilot"];

/// What the marker holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// Layout version of this file.
    pub fedsoft_run: u32,
    /// SHA-256 of the run's resolved config (`ExperimentConfig::digest`).
    pub config_sha256: String,
}

/// Held while a run writes its directory; dropping it releases the lock.
#[derive(Debug)]
pub struct RunDirLock {
    _file: File,
    dir: PathBuf,
}

impl RunDirLock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn lock(dir: &Path) -> Result<RunDirLock, EngineError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| EngineError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { String::new() } else { format!(" (process {holder})") };
            return Err(EngineError::run_directory(
                dir,
                format!("is being written by another fedsoft run{who}; wait for it to end or choose another --out"),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(EngineError::io("lock", &path, e)),
    }
    // Who holds it, for the message a second writer gets.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| write!(file, "{}", std::process::id()));
    Ok(RunDirLock { _file: file, dir: dir.to_path_buf() })
}

/// The marker of `dir`, if it has a readable one.
pub fn marker(dir: &Path) -> Result<Option<Marker>, EngineError> {
    let path = dir.join(MARKER);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            EngineError::run_directory(dir, format!("{MARKER} is not a fedsoft run marker ({e}); was it edited?"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io("read", &path, e)),
    }
}

/// The first entry of `dir` (sorted by name) that fedsoft did not put there before a run.
fn foreign_entry(dir: &Path) -> Result<Option<String>, EngineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io("read", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !OWN_BEFORE_START.contains(&n.as_str()))
        .collect();
    names.sort();
    Ok(names.into_iter().next())
}

/// Makes `dir` this run's: creates it, locks it and checks that it is new, empty, or this run's own (the same
/// config digest; with `resume`, also a run written before markers existed, whose checkpoint then speaks for
/// it). Writes the marker. The lock holds until the returned value is dropped.
pub fn claim(dir: &Path, config_sha256: &str, resume: bool) -> Result<RunDirLock, EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io("create", dir, e))?;
    let held = lock(dir)?;
    let has_checkpoint = dir.join(checkpoint::CHECKPOINT).is_file();
    match marker(dir)? {
        Some(m) if m.config_sha256 == config_sha256 => {}
        Some(m) => {
            let short = |d: &str| d.chars().take(12).collect::<String>();
            return Err(EngineError::run_directory(
                dir,
                format!(
                    "holds a run of another config (digest {} where this one is {}); {}",
                    short(&m.config_sha256),
                    short(config_sha256),
                    if resume {
                        "--resume continues a run only under its own config"
                    } else {
                        "choose another --out, or remove that run first"
                    }
                ),
            ));
        }
        None if resume && has_checkpoint => {} // a run from before markers: its checkpoint is checked later
        None => {
            if let Some(name) = foreign_entry(dir)? {
                return Err(EngineError::run_directory(
                    dir,
                    format!(
                        "already holds {name:?}, which no fedsoft run of this directory wrote; a run writes only \
                         into a new or empty directory: choose another --out"
                    ),
                ));
            }
        }
    }
    let marker = Marker { fedsoft_run: 1, config_sha256: config_sha256.to_string() };
    let text = serde_json::to_string_pretty(&marker).expect("marker serialises");
    checkpoint::write_atomic(&dir.join(MARKER), text.as_bytes())?;
    Ok(held)
}

/// Removes a run directory that is to be made again (`fedsoft reproduce`, where its config changed or it never
/// reached a checkpoint). Only a fedsoft run's directory (its marker) is removed, and only while no process
/// writes it (the lock): a user's directory or a run in progress elsewhere is refused, naming it.
pub fn discard(dir: &Path) -> Result<(), EngineError> {
    // The marker first: a user's directory gets no lock file of ours.
    if marker(dir)?.is_none() {
        return Err(EngineError::run_directory(
            dir,
            format!("is to be made again but holds no {MARKER}, so fedsoft did not write it: move it away"),
        ));
    }
    let held = lock(dir)?;
    std::fs::remove_dir_all(dir).map_err(|e| EngineError::io("remove", dir, e))?;
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_new_or_empty_directory_is_claimed_and_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/run");
        let held = claim(&dir, A, false).unwrap();
        assert_eq!(held.dir(), dir);
        assert_eq!(marker(&dir).unwrap().unwrap(), Marker { fedsoft_run: 1, config_sha256: A.into() });
        drop(held);
        // Its own directory again (a rerun of the same config) is accepted.
        std::fs::write(dir.join("metrics.jsonl"), "{}\n").unwrap();
        claim(&dir, A, false).unwrap();
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let first = claim(tmp.path(), A, false).unwrap();
        let err = claim(tmp.path(), A, false).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "is being written by another fedsoft run (process {}); wait for it to end or choose another --out",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        claim(tmp.path(), A, true).unwrap();
    }

    #[test]
    fn a_users_files_are_never_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.toml"), "# my notes\n").unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        let err = claim(tmp.path(), A, false).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "already holds \"config.toml\", which no fedsoft run of this directory wrote; a run writes only into \
                 a new or empty directory: choose another --out"
            ),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(tmp.path().join("config.toml")).unwrap(), "# my notes\n");
        assert!(!tmp.path().join(MARKER).exists());
        // --resume without a checkpoint does not make it a run either.
        assert!(claim(tmp.path(), A, true).is_err());
    }

    #[test]
    fn another_configs_run_is_refused_naming_both_digests() {
        let tmp = tempfile::tempdir().unwrap();
        drop(claim(tmp.path(), A, false).unwrap());
        let err = claim(tmp.path(), B, false).unwrap_err().to_string();
        assert!(err.contains("holds a run of another config (digest aaaaaaaaaaaa where this one is bbbbbbbbbbbb)"));
        let err = claim(tmp.path(), B, true).unwrap_err().to_string();
        assert!(err.ends_with("--resume continues a run only under its own config"), "{err}");
    }

    #[test]
    fn a_run_from_before_markers_resumes_from_its_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(checkpoint::CHECKPOINT), "{}").unwrap();
        std::fs::write(tmp.path().join("metrics.jsonl"), "{}\n").unwrap();
        assert!(claim(tmp.path(), A, false).is_err());
        claim(tmp.path(), A, true).unwrap();
        assert_eq!(marker(tmp.path()).unwrap().unwrap().config_sha256, A);
    }

    #[test]
    fn only_a_fedsoft_run_no_process_writes_is_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        drop(claim(&run, A, false).unwrap());
        std::fs::write(run.join("metrics.jsonl"), "{}\n").unwrap();
        // Being written: refused, nothing removed.
        let writing = claim(&run, A, false).unwrap();
        let err = discard(&run).unwrap_err().to_string();
        assert!(err.contains("is being written by another fedsoft run"), "{err}");
        assert!(run.join("metrics.jsonl").is_file());
        drop(writing);
        discard(&run).unwrap();
        assert!(!run.exists());
        // A directory fedsoft did not write: refused, its files kept.
        let mine = tmp.path().join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "mine").unwrap();
        let err = discard(&mine).unwrap_err().to_string();
        assert!(err.contains("holds no fedsoft-run.json, so fedsoft did not write it"), "{err}");
        assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).unwrap(), "mine");
        assert!(!mine.join(LOCK).exists());
    }
}
