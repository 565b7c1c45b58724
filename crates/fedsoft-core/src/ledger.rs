//! Bits on the uplink, counted two ways: the paper's (`q` bits per kept value, docs/algorithms.md §3 and D12) and the real
//! size of the encoded message.

use serde::{Deserialize, Serialize};

/// How the paper-style count treats positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitModel {
    /// Bits per transmitted value, `q`.
    pub value_bits: u32,
    /// Add `ceil(log2 M)` bits of position per kept entry (D12 option); off in the paper.
    pub index_overhead: bool,
}

impl Default for BitModel {
    fn default() -> Self {
        BitModel { value_bits: 32, index_overhead: false }
    }
}

impl BitModel {
    /// Paper-style payload of `entries` kept values out of `total` LoRA entries.
    pub fn paper_bits(&self, entries: usize, total: usize) -> u64 {
        let idx = if self.index_overhead { (total.max(2) as f64).log2().ceil() as u64 } else { 0 };
        entries as u64 * (self.value_bits as u64 + idx)
    }
}

/// The cost of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UploadCost {
    pub entries: u64,
    pub paper_bits: u64,
    pub encoded_bits: u64,
}

/// Running totals over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub uploads: u64,
    pub entries: u64,
    pub paper_bits: u64,
    pub encoded_bits: u64,
}

impl Ledger {
    pub fn record(&mut self, c: UploadCost) {
        self.uploads += 1;
        self.entries += c.entries;
        self.paper_bits += c.paper_bits;
        self.encoded_bits += c.encoded_bits;
    }
}
