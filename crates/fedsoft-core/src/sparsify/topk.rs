//! Deterministic top-k by magnitude.

/// Positions (into `values`) of the `k` largest `|value|`s, in increasing order; among equal magnitudes the
/// lower position wins, so the result never depends on sort stability or platform. `O(n)` on average: one
/// selection for the k-th largest magnitude, then one pass.
pub(crate) fn top_k_positions(values: &[f32], k: usize) -> Vec<usize> {
    let n = values.len();
    if k >= n {
        return (0..n).collect();
    }
    if k == 0 {
        return Vec::new();
    }
    let mut mags: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let (_, &mut threshold, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let above = values.iter().filter(|v| v.abs().total_cmp(&threshold).is_gt()).count();
    let mut ties = k - above;
    let mut kept = Vec::with_capacity(k);
    for (p, v) in values.iter().enumerate() {
        match v.abs().total_cmp(&threshold) {
            std::cmp::Ordering::Greater => kept.push(p),
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                kept.push(p);
            }
            _ => {}
        }
    }
    kept
}

/// Keeps the `k` entries of largest `|value|` among `candidates` given in increasing index order; returns
/// their indices (increasing).
pub(crate) fn top_k_by_magnitude(candidates: &[u32], values: &[f32], k: usize) -> Vec<u32> {
    debug_assert!(candidates.windows(2).all(|w| w[0] < w[1]));
    top_k_positions(values, k).into_iter().map(|p| candidates[p]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_lower_index() {
        let v = [1.0, -2.0, 2.0, 0.5, 2.0];
        assert_eq!(top_k_positions(&v, 2), vec![1, 2]);
        assert_eq!(top_k_positions(&v, 3), vec![1, 2, 4]);
        assert_eq!(top_k_positions(&v, 9), vec![0, 1, 2, 3, 4]);
        assert_eq!(top_k_positions(&[0.0; 4], 2), vec![0, 1]);
    }
}
