//! `f32` values as little-endian bytes: the layout of safetensors files, ONNX raw tensor data and fedsoft's
//! own wire messages, so every reader and writer shares one conversion.

/// The values' bytes, four per value.
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The values in `bytes`; a trailing part shorter than four bytes is ignored, so callers that must refuse
/// such input check `bytes.len() % 4` first.
pub fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_bit_pattern_class() {
        let v = [0.0, -0.0, 1.5, -3.25e-38, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY, 1e-45];
        let bytes = f32_to_le(&v);
        assert_eq!(bytes.len(), 4 * v.len());
        assert_eq!(&bytes[8..12], &[0, 0, 0xc0, 0x3f]);
        let back = f32_from_le(&bytes);
        assert!(v.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(f32_from_le(&bytes[..6]).len(), 1);
    }
}
