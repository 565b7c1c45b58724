//! The wire format of one client's sparse upload: self-describing, versioned, checksummed.
//!
//! ```text
//! upload  := "FSUP" version:u8(=1) value_type:u8(=1: f32 LE) reserved:u16(=0)
//!            round:u32 client:u32 module_count:u32  module*  crc32:u32
//! module  := layout:u8 d:u32 k:u32 r:u32 nnz:u32 positions values
//! layout  := 0 dense     (no positions; nnz = r(d+k))
//!          | 1 coo       (nnz LEB128 gaps: first index, then index - previous - 1)
//!          | 2 bitmap    (ceil(r(d+k)/8) bytes, bit i of byte i/8 = entry i, LSB first)
//!          | 3 rank      (ceil(r/8) bytes: which whole rank components [b_j; a_j] are sent)
//! values  := nnz f32 LE, in increasing entry order (B row-major, then A row-major)
//! ```
//! All integers are little-endian. The encoder picks, per module, the layout with the fewest bytes; the CRC32
//! (IEEE) covers every byte before it. The decoder checks every length before it allocates, so a hostile or
//! corrupted message is rejected with an error, never a panic or a huge allocation.

use crate::error::CoreError;
use crate::lora::ModuleShape;
use crate::sparsify::{SparseModule, SparseUpdate};

const MAGIC: &[u8; 4] = b"FSUP";
/// Current format version.
pub const VERSION: u8 = 1;
const VALUE_F32: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 2 + 4 + 4 + 4;
const MODULE_HEADER_LEN: usize = 1 + 4 * 4;

/// How one module's positions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Layout {
    Dense = 0,
    Coo = 1,
    Bitmap = 2,
    Rank = 3,
}

/// A decoded upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub round: u32,
    pub client: u32,
    pub update: SparseUpdate,
}

fn varint_len(mut x: u64) -> usize {
    let mut n = 1;
    while x >= 0x80 {
        x >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn coo_len(indices: &[u32]) -> usize {
    let mut prev: Option<u32> = None;
    indices
        .iter()
        .map(|&i| {
            let gap = match prev {
                None => i as u64,
                Some(p) => (i - p - 1) as u64,
            };
            prev = Some(i);
            varint_len(gap)
        })
        .sum()
}

/// Rank components sent whole, if the module's entries are exactly a union of whole components.
fn whole_components(shape: &ModuleShape, indices: &[u32]) -> Option<Vec<bool>> {
    if !indices.len().is_multiple_of(shape.component_len()) {
        return None;
    }
    let mut count = vec![0usize; shape.r];
    for &i in indices {
        count[shape.component_of(i as usize)] += 1;
    }
    let full: Vec<bool> = count.iter().map(|&c| c == shape.component_len()).collect();
    if count.iter().all(|&c| c == 0 || c == shape.component_len()) { Some(full) } else { None }
}

fn check_module(shape: &ModuleShape, m: &SparseModule) -> Result<(), CoreError> {
    if m.indices.len() != m.values.len() {
        return Err(CoreError::shape(format!("{}: values", shape.name), m.indices.len(), m.values.len()));
    }
    if m.indices.windows(2).any(|w| w[0] >= w[1]) {
        return Err(CoreError::invalid(&shape.name, "entry indices must be strictly increasing"));
    }
    if let Some(&last) = m.indices.last()
        && last as usize >= shape.numel()
    {
        return Err(CoreError::invalid(&shape.name, format!("entry index {last} beyond {} entries", shape.numel())));
    }
    Ok(())
}

/// Chooses the cheapest layout for a module and its position bytes.
fn choose_layout(shape: &ModuleShape, indices: &[u32]) -> (Layout, usize) {
    let numel = shape.numel();
    if indices.len() == numel {
        return (Layout::Dense, 0);
    }
    let mut best = (Layout::Coo, coo_len(indices));
    let bitmap = numel.div_ceil(8);
    if bitmap < best.1 {
        best = (Layout::Bitmap, bitmap);
    }
    let rank = shape.r.div_ceil(8);
    if rank < best.1 && whole_components(shape, indices).is_some() {
        best = (Layout::Rank, rank);
    }
    best
}

/// Encodes one client's upload for `shapes`.
pub fn encode(round: u32, client: u32, shapes: &[ModuleShape], update: &SparseUpdate) -> Result<Vec<u8>, CoreError> {
    if shapes.len() != update.modules.len() {
        return Err(CoreError::shape("upload module count", shapes.len(), update.modules.len()));
    }
    let mut out = Vec::with_capacity(encoded_len_hint(shapes, update));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, VALUE_F32, 0, 0]);
    for x in [round, client, shapes.len() as u32] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    for (shape, m) in shapes.iter().zip(&update.modules) {
        check_module(shape, m)?;
        let (layout, _) = choose_layout(shape, &m.indices);
        out.push(layout as u8);
        for x in [shape.d, shape.k, shape.r, m.indices.len()] {
            out.extend_from_slice(&(x as u32).to_le_bytes());
        }
        match layout {
            Layout::Dense => {}
            Layout::Coo => {
                let mut prev: Option<u32> = None;
                for &i in &m.indices {
                    put_varint(&mut out, prev.map_or(i, |p| i - p - 1) as u64);
                    prev = Some(i);
                }
            }
            Layout::Bitmap => {
                let start = out.len();
                out.resize(start + shape.numel().div_ceil(8), 0);
                for &i in &m.indices {
                    out[start + i as usize / 8] |= 1 << (i % 8);
                }
            }
            Layout::Rank => {
                let full = whole_components(shape, &m.indices).expect("layout chosen only for whole components");
                let start = out.len();
                out.resize(start + shape.r.div_ceil(8), 0);
                for (j, _) in full.iter().enumerate().filter(|(_, f)| **f) {
                    out[start + j / 8] |= 1 << (j % 8);
                }
            }
        }
        for v in &m.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn encoded_len_hint(shapes: &[ModuleShape], update: &SparseUpdate) -> usize {
    HEADER_LEN + 4 + shapes.len() * MODULE_HEADER_LEN + update.nnz() * 9
}

/// Exact encoded size in bytes, without encoding.
pub fn encoded_len(shapes: &[ModuleShape], update: &SparseUpdate) -> Result<usize, CoreError> {
    if shapes.len() != update.modules.len() {
        return Err(CoreError::shape("upload module count", shapes.len(), update.modules.len()));
    }
    let mut n = HEADER_LEN + 4;
    for (shape, m) in shapes.iter().zip(&update.modules) {
        check_module(shape, m)?;
        n += MODULE_HEADER_LEN + choose_layout(shape, &m.indices).1 + 4 * m.indices.len();
    }
    Ok(n)
}

/// A bounds-checked reader over the message body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CoreError> {
        if self.buf.len() - self.pos < n {
            return Err(CoreError::Decode(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, CoreError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, CoreError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn varint(&mut self, what: &str) -> Result<u64, CoreError> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            x |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        Err(CoreError::Decode(format!("{what}: varint longer than 64 bits")))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Decodes and validates an upload against the modules the receiver expects: checksum, magic, version,
/// module geometry, counts, strictly increasing in-range positions and finite values.
pub fn decode(bytes: &[u8], expected: &[ModuleShape]) -> Result<Upload, CoreError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(CoreError::Decode(format!(
            "{} bytes is shorter than the {}-byte header",
            bytes.len(),
            HEADER_LEN + 4
        )));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(CoreError::Decode(format!("checksum mismatch: stored {stored:08x}, computed {actual:08x}")));
    }
    let mut rd = Reader { buf: body, pos: 0 };
    if rd.take(4, "magic")? != MAGIC {
        return Err(CoreError::Decode("bad magic: not a fedsoft upload".into()));
    }
    let version = rd.u8("version")?;
    if version != VERSION {
        return Err(CoreError::Decode(format!("unsupported format version {version}; this build reads {VERSION}")));
    }
    let value_type = rd.u8("value type")?;
    if value_type != VALUE_F32 {
        return Err(CoreError::Decode(format!("unsupported value type {value_type}; expected 1 (f32)")));
    }
    rd.take(2, "reserved")?;
    let round = rd.u32("round")?;
    let client = rd.u32("client")?;
    let count = rd.u32("module count")? as usize;
    if count != expected.len() {
        return Err(CoreError::Decode(format!("{count} modules, expected {}", expected.len())));
    }
    let mut modules = Vec::with_capacity(count);
    for shape in expected {
        modules.push(decode_module(&mut rd, shape)?);
    }
    if rd.remaining() != 0 {
        return Err(CoreError::Decode(format!("{} trailing bytes after the last module", rd.remaining())));
    }
    Ok(Upload { round, client, update: SparseUpdate { modules } })
}

fn decode_module(rd: &mut Reader<'_>, shape: &ModuleShape) -> Result<SparseModule, CoreError> {
    let name = &shape.name;
    let layout = rd.u8("layout")?;
    let (d, k, r) = (rd.u32("d")? as usize, rd.u32("k")? as usize, rd.u32("r")? as usize);
    if (d, k, r) != (shape.d, shape.k, shape.r) {
        return Err(CoreError::Decode(format!(
            "module {name}: shape d={d} k={k} r={r}, expected d={} k={} r={}",
            shape.d, shape.k, shape.r
        )));
    }
    let numel = shape.numel();
    let nnz = rd.u32("nnz")? as usize;
    if nnz > numel {
        return Err(CoreError::Decode(format!("module {name}: {nnz} entries but the module has {numel}")));
    }
    // Every entry needs at least 4 value bytes: reject impossible counts before allocating.
    if nnz.saturating_mul(4) > rd.remaining() {
        return Err(CoreError::Decode(format!("module {name}: truncated, {nnz} values announced")));
    }
    let indices: Vec<u32> = match layout {
        0 => {
            if nnz != numel {
                return Err(CoreError::Decode(format!("module {name}: dense layout with {nnz} of {numel} entries")));
            }
            (0..numel as u32).collect()
        }
        1 => {
            let mut idx = Vec::with_capacity(nnz);
            let mut next = 0u64;
            for _ in 0..nnz {
                let i = next + rd.varint("position")?;
                if i >= numel as u64 {
                    return Err(CoreError::Decode(format!("module {name}: position {i} beyond {numel} entries")));
                }
                idx.push(i as u32);
                next = i + 1;
            }
            idx
        }
        2 => {
            let bits = rd.take(numel.div_ceil(8), "bitmap")?;
            let idx: Vec<u32> = (0..numel).filter(|&i| bits[i / 8] >> (i % 8) & 1 == 1).map(|i| i as u32).collect();
            if !numel.is_multiple_of(8) && bits[numel / 8] >> (numel % 8) != 0 {
                return Err(CoreError::Decode(format!("module {name}: bitmap marks entries beyond {numel}")));
            }
            idx
        }
        3 => {
            let bits = rd.take(r.div_ceil(8), "rank mask")?;
            if r % 8 != 0 && bits[r / 8] >> (r % 8) != 0 {
                return Err(CoreError::Decode(format!("module {name}: rank mask marks components beyond {r}")));
            }
            let mut idx: Vec<u32> = (0..r)
                .filter(|&j| bits[j / 8] >> (j % 8) & 1 == 1)
                .flat_map(|j| shape.component_indices(j))
                .map(|i| i as u32)
                .collect();
            idx.sort_unstable();
            idx
        }
        other => {
            return Err(CoreError::Decode(format!("module {name}: unknown layout {other}")));
        }
    };
    if indices.len() != nnz {
        return Err(CoreError::Decode(format!(
            "module {name}: positions give {} entries, header says {nnz}",
            indices.len()
        )));
    }
    let raw = rd.take(4 * nnz, "values")?;
    let values: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    if let Some(p) = values.iter().position(|v| !v.is_finite()) {
        return Err(CoreError::NonFinite { module: name.to_string(), entry: indices[p] as u64 });
    }
    Ok(SparseModule { indices, values })
}
