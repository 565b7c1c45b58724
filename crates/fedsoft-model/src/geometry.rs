//! The LoRA geometry: which (block, target) pairs of an encoder carry adapters. Its one home: the config asks
//! it before any weights are read (with the widths its architecture names, so `plan` works without them), and
//! the loader asks it again with the checkpoint's own widths, so both refuse the same mistakes in the same
//! words.

use crate::error::ModelError;
use fedsoft_core::lora::Target;

/// The adapted `(block, target)` pairs in order (blocks outer, targets inner): `targets` in `layers` of a model
/// with `blocks` blocks (every block when `layers` is `None`).
pub fn adapted_modules(
    blocks: usize,
    targets: &[Target],
    layers: Option<&[usize]>,
) -> Result<Vec<(usize, Target)>, ModelError> {
    if targets.is_empty() {
        return Err(ModelError::invalid("lora.targets", "is empty: name at least one layer to adapt"));
    }
    if let Some(dup) = targets.iter().enumerate().find_map(|(i, t)| targets[..i].contains(t).then_some(*t)) {
        return Err(ModelError::invalid("lora.targets", format!("{dup:?} is listed twice")));
    }
    let all: Vec<usize> = (0..blocks).collect();
    let layers = match layers {
        Some([]) => return Err(ModelError::invalid("lora.layers", "is empty: omit it to adapt every block")),
        Some(l) => l,
        None => &all,
    };
    if let Some(&bad) = layers.iter().find(|&&l| l >= blocks) {
        return Err(ModelError::invalid("lora.layers", format!("block {bad} does not exist: the model has {blocks}")));
    }
    if let Some(dup) = layers.iter().enumerate().find_map(|(i, l)| layers[..i].contains(l).then_some(*l)) {
        return Err(ModelError::invalid(
            "lora.layers",
            format!("block {dup} is listed twice: each block takes one adapter per target"),
        ));
    }
    Ok(layers.iter().flat_map(|&l| targets.iter().map(move |&t| (l, t))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_block_by_block_and_mistakes_are_named() {
        let qv = [Target::Query, Target::Value];
        let all = adapted_modules(2, &qv, None).unwrap();
        assert_eq!(all, [(0, Target::Query), (0, Target::Value), (1, Target::Query), (1, Target::Value)]);
        assert_eq!(adapted_modules(4, &qv, Some(&[3, 1])).unwrap()[..2], [(3, Target::Query), (3, Target::Value)]);
        let err = |t: &[Target], l: Option<&[usize]>| adapted_modules(4, t, l).unwrap_err().to_string();
        assert!(err(&[], None).contains("lora.targets") && err(&[], None).contains("is empty"));
        assert!(err(&[Target::Key, Target::Key], None).contains("Key is listed twice"));
        assert!(err(&qv, Some(&[])).contains("lora.layers: is empty"));
        assert!(err(&qv, Some(&[4])).contains("block 4 does not exist: the model has 4"));
        assert!(err(&qv, Some(&[1, 1])).contains("block 1 is listed twice"));
    }
}
