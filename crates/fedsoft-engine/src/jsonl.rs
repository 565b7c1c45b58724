//! JSONL logs: opened for appending, cut back to what the checkpoint covers on resume, checked for gaps.

use crate::checkpoint;
use crate::error::EngineError;
use std::path::Path;

/// Whether a JSONL file holds at least one record.
pub(crate) fn has_rounds(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| !l.trim().is_empty()))
}

pub(crate) fn append(path: &Path) -> Result<std::fs::File, EngineError> {
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| EngineError::io("open", path, e))
}

/// Keeps only the lines of rounds before `next_round` (what the checkpoint covers).
pub(crate) fn truncate_jsonl(path: &Path, next_round: u64) -> Result<(), EngineError> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io("read", path, e))?;
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("round").and_then(serde_json::Value::as_u64))
                .is_some_and(|r| r < next_round)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}

/// Checks that a JSONL log holds a record of every round before `next_round` (the checkpoint's), so a resumed
/// run never continues a log with rounds missing from it.
pub(crate) fn check_covers(path: &Path, next_round: u64) -> Result<(), EngineError> {
    if next_round == 0 {
        return Ok(());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(EngineError::io("read", path, e)),
    };
    let seen: std::collections::BTreeSet<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("round").and_then(serde_json::Value::as_u64))
        .collect();
    if let Some(missing) = (0..next_round).find(|r| !seen.contains(r)) {
        let what =
            if seen.is_empty() { "no round at all".to_string() } else { format!("no record of round {}", missing + 1) };
        return Err(EngineError::file(
            path,
            format!(
                "holds {what}, but the checkpoint is at round {next_round}: the log was cut or removed, so \
                 resuming would leave a gap in it; restore the file or start the run again in a new --out"
            ),
        ));
    }
    Ok(())
}
