//! What a client carries between its rounds (error-feedback memory, kept optimiser state) on its own disk,
//! written atomically after every round's work and kept per round: the work of round `t` starts from the
//! newest memory of a round before `t`. So a client that restarts carries on, and when a restarted server
//! repeats a round, the client repeats it exactly.

use crate::NetError;
use fedsoft_core::lora::ModuleShape;
use fedsoft_engine::checkpoint::{ClientMemory, memory_from_bytes, memory_to_bytes};
use std::path::{Path, PathBuf};

/// How many past rounds' memories are kept (a server resumes at most from its last checkpoint).
const KEEP: usize = 4;

pub struct MemoryStore {
    dir: PathBuf,
    client: u32,
}

impl MemoryStore {
    pub fn open(dir: &Path, client: u32) -> Result<Self, NetError> {
        std::fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
        Ok(MemoryStore { dir: dir.to_path_buf(), client })
    }

    fn rounds(&self) -> Result<Vec<u64>, NetError> {
        let mut rounds: Vec<u64> = std::fs::read_dir(&self.dir)
            .map_err(|e| NetError::io(&self.dir, e))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("memory-")?.strip_suffix(".safetensors")?.parse().ok()
            })
            .collect();
        rounds.sort_unstable();
        Ok(rounds)
    }

    fn path(&self, round: u64) -> PathBuf {
        self.dir.join(format!("memory-{round}.safetensors"))
    }

    /// The newest memory written by a round before `round` (empty if there is none).
    pub fn before(&self, round: u64, shapes: &[ModuleShape]) -> Result<ClientMemory, NetError> {
        let Some(&r) = self.rounds()?.iter().rev().find(|&&r| r < round) else { return Ok(ClientMemory::default()) };
        let path = self.path(r);
        let bytes = std::fs::read(&path).map_err(|e| NetError::io(&path, e))?;
        Ok(memory_from_bytes(&bytes, self.client as usize, shapes, &path)?)
    }

    /// Stores the memory after round `round`'s work, then forgets all but the newest few.
    pub fn save(&self, round: u64, memory: &ClientMemory) -> Result<(), NetError> {
        let bytes = memory_to_bytes(self.client as usize, memory);
        fedsoft_engine::checkpoint::write_atomic(&self.path(round), &bytes)?;
        let rounds = self.rounds()?;
        for r in rounds.iter().take(rounds.len().saturating_sub(KEEP)) {
            let _ = std::fs::remove_file(self.path(*r));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsoft_core::lora::LoraState;

    #[test]
    fn a_memory_damaged_on_the_clients_disk_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let shapes = vec![ModuleShape::new("m", 4, 3, 2)];
        let mut feedback = LoraState::zeros(&shapes).unwrap();
        feedback.modules[0].b[1] = 0.25;
        let memory = ClientMemory { feedback: Some(feedback), optimizer: None };
        let store = MemoryStore::open(tmp.path(), 7).unwrap();
        store.save(3, &memory).unwrap();
        assert_eq!(store.before(4, &shapes).unwrap(), memory);
        // One bit flipped in the last value: same size, same layout, other numbers.
        let path = store.path(3);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let e = store.before(4, &shapes).unwrap_err().to_string();
        assert!(e.contains("memory-3.safetensors") && e.contains("do not match the digest"), "{e}");
    }
}
