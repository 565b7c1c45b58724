//! Train/test splits for data sets that do not come split, stratified by label, keeping groups (documents)
//! whole when there are groups.

use crate::error::DataError;
use fedsoft_core::rng::{Purpose, stream};
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// Splits sample indices into (train, test) with about `test_fraction` of each class in test. With
/// `groups`, whole groups go to one side (each group is assigned by its first sample's label).
pub fn stratified_split(
    labels: &[u32],
    groups: Option<&[u32]>,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::invalid("data.test_fraction", format!("must be in (0, 1), got {test_fraction}")));
    }
    // Units to split: groups if given, else single samples.
    let mut units: BTreeMap<u32, (u32, Vec<usize>)> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        let key = groups.map_or(i as u32, |g| g[i]);
        units.entry(key).or_insert_with(|| (l, Vec::new())).1.push(i);
    }
    let mut by_class: BTreeMap<u32, Vec<Vec<usize>>> = BTreeMap::new();
    for (_, (l, members)) in units {
        by_class.entry(l).or_default().push(members);
    }
    let mut rng = stream(seed, Purpose::Partition, &[u64::MAX]);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut unit_list) in by_class {
        unit_list.shuffle(&mut rng);
        let n_test = ((unit_list.len() as f64 * test_fraction).round() as usize)
            .clamp(usize::from(unit_list.len() > 1), unit_list.len().saturating_sub(1));
        for (k, u) in unit_list.into_iter().enumerate() {
            if k < n_test { test.extend(u) } else { train.extend(u) }
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    if train.is_empty() || test.is_empty() {
        return Err(DataError::invalid("data.test_fraction", "the split left one side empty: too few samples"));
    }
    Ok((train, test))
}
