//! Deterministic top-k by magnitude.

/// Keeps the `k` candidates of largest `|value|`; ties go to the lower index, so the result never depends on
/// sort stability or platform. Returns the kept indices in increasing order. `O(n)` on average.
pub(crate) fn top_k_by_magnitude(mut candidates: Vec<(u32, f32)>, k: usize) -> Vec<u32> {
    if k == 0 {
        return Vec::new();
    }
    let order =
        |x: &(u32, f32), y: &(u32, f32)| y.1.abs().total_cmp(&x.1.abs()).then(x.0.cmp(&y.0));
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, order);
        candidates.truncate(k);
    }
    let mut kept: Vec<u32> = candidates.into_iter().map(|(i, _)| i).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_lower_index() {
        let c = vec![(0, 1.0), (1, -2.0), (2, 2.0), (3, 0.5), (4, 2.0)];
        assert_eq!(top_k_by_magnitude(c.clone(), 2), vec![1, 2]);
        assert_eq!(top_k_by_magnitude(c.clone(), 3), vec![1, 2, 4]);
        assert_eq!(top_k_by_magnitude(c, 9), vec![0, 1, 2, 3, 4]);
    }
}
