//! Which clients take part in a round: `K` of `N`, uniformly without replacement (docs/algorithms.md §2.3).

use crate::error::CoreError;
use crate::rng::{Purpose, stream};
use rand::seq::index;

/// The scheduled clients of `round`, in increasing order. Depends only on `(seed, round)`, so every method
/// of a comparison, the simulator and the networked server schedule the same clients.
pub fn sample_clients(seed: u64, round: u64, num_clients: usize, per_round: usize) -> Result<Vec<usize>, CoreError> {
    if per_round == 0 || per_round > num_clients {
        return Err(CoreError::invalid(
            "clients.per_round",
            format!("must be between 1 and clients.total = {num_clients}, got {per_round}"),
        ));
    }
    let mut rng = stream(seed, Purpose::ClientSampling, &[round]);
    let mut s = index::sample(&mut rng, num_clients, per_round).into_vec();
    s.sort_unstable();
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_without_replacement_and_seeded() {
        let a = sample_clients(1, 5, 100, 10).unwrap();
        assert_eq!(a, sample_clients(1, 5, 100, 10).unwrap());
        assert_ne!(a, sample_clients(1, 6, 100, 10).unwrap());
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[9] < 100);
        // Every client is scheduled about K/N of the time.
        let mut count = vec![0usize; 100];
        for t in 0..2000 {
            for c in sample_clients(3, t, 100, 10).unwrap() {
                count[c] += 1;
            }
        }
        assert!(count.iter().all(|&c| (140..=260).contains(&c)), "{count:?}");
        assert!(sample_clients(1, 0, 5, 6).is_err());
    }
}
