//! The real packaged assets. These tests are `#[ignore]`d because they need the assets on disk:
//! `./scripts/test` fetches them and runs the suite with `--include-ignored`, so a missing asset fails
//! there instead of passing silently.

use fedsoft_data::assets::{self, Outcome};
use fedsoft_data::readers::{brown, idx, spam};
use fedsoft_data::text::TextEncoder;
use std::path::PathBuf;

fn cache() -> PathBuf {
    std::env::var_os("FEDSOFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")))
}

/// The asset's directory; a missing asset is a failure (the test was asked for, so it must run).
fn asset(name: &str) -> PathBuf {
    let a = assets::find(name).unwrap();
    assets::installed(&cache(), a).unwrap_or_else(|| {
        panic!("asset {name} is not in {}; run `cargo run -p fedsoft -- fetch` first", cache().display())
    })
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn fashion_mnist_has_its_official_sizes() {
    let dir = asset("fashion-mnist");
    let (train, test) = idx::load_mnist_like(&dir, &idx::FASHION_MNIST_CLASSES).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.height, train.width), (28, 28));
    assert!(train.class_counts().iter().all(|&c| c == 6_000));
    assert!(test.class_counts().iter().all(|&c| c == 1_000));
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn brown_has_500_documents_over_15_genres() {
    let dir = asset("brown");
    let counts = brown::count_documents(&dir).unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<usize>(), 500);
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    let set = brown::load_brown(&dir, brown::BrownLabels::Genres, 1, 0).unwrap();
    let docs: std::collections::BTreeSet<u32> = set.groups.as_ref().unwrap().iter().copied().collect();
    assert_eq!(docs.len(), 500);
    assert!(set.len() > 50_000, "{} sentences", set.len());
    assert_eq!(set.class_counts().len(), 15);
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn spamassassin_has_4150_ham_and_1896_spam() {
    let dir = asset("spamassassin");
    let set = spam::load_spamassassin(&dir).unwrap();
    assert_eq!(set.class_counts(), vec![4_150, 1_896]);
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn minilm_tokenizer_gives_the_reference_ids() {
    let dir = asset("minilm");
    let texts = vec!["A man is playing a guitar.".to_string(), "The stock market fell sharply today.".to_string()];
    let want: [&[u32]; 2] =
        [&[101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102], &[101, 1996, 4518, 3006, 3062, 9249, 2651, 1012, 102]];
    // Both ways of building the tokenizer agree with the reference.
    for enc in
        [TextEncoder::from_dir(&dir, 16).unwrap(), TextEncoder::from_vocab(&dir.join("vocab.txt"), true, 16).unwrap()]
    {
        let e = enc.encode(&texts).unwrap();
        for (i, w) in want.iter().enumerate() {
            assert_eq!(&e.row(i)[..9], *w);
            assert!(e.row(i)[9..].iter().all(|&t| t == 0));
            assert_eq!(e.mask[i * 16..i * 16 + 16].iter().sum::<u32>(), 9);
        }
    }
    // Truncation keeps [CLS] ... [SEP] within max_len.
    let short = TextEncoder::from_dir(&dir, 5).unwrap().encode(&texts).unwrap();
    assert_eq!(short.row(0), &[101, 1037, 2158, 2003, 102]);
}

/// Fetching twice downloads once, and a cache deleted half-way recovers (uses npm for the smallest asset).
#[test]
#[ignore = "downloads from the npm registry: ./scripts/test includes this test"]
fn fetch_is_idempotent_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path();
    let brown = assets::find("brown").unwrap();
    assert!(matches!(assets::fetch(c, brown).unwrap(), Outcome::Fetched { downloaded: true, .. }));
    assert!(matches!(assets::fetch(c, brown).unwrap(), Outcome::AlreadyPresent(_)));
    // Unpacked files lost: unpacked again from the verified download, no new download.
    std::fs::remove_dir_all(assets::asset_dir(c, brown)).unwrap();
    assert!(matches!(assets::fetch(c, brown).unwrap(), Outcome::Fetched { downloaded: false, .. }));
    // Interrupted mid-unpack (stamp missing, a .partial left behind) and a truncated download: both recover.
    let dir = assets::asset_dir(c, brown);
    std::fs::remove_file(dir.join(".fedsoft-complete")).unwrap();
    std::fs::create_dir_all(dir.with_extension("partial")).unwrap();
    let dl = std::fs::read_dir(c.join("downloads")).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&dl).unwrap();
    std::fs::write(&dl, &bytes[..bytes.len() / 2]).unwrap();
    let out = assets::fetch(c, brown).unwrap();
    assert!(matches!(out, Outcome::Fetched { downloaded: true, .. }), "{out:?}");
    assert!(brown::count_documents(out.path()).unwrap().iter().map(|(_, n)| n).sum::<usize>() == 500);

    // Touched but unchanged: still intact. Changed after the fetch: use refuses it by name, fetch restores it.
    let doc = out.path().join("ca01");
    let text = std::fs::read(&doc).unwrap();
    std::fs::write(&doc, &text).unwrap();
    assert!(matches!(assets::check(c, brown).unwrap(), assets::Installed::Intact(_)));
    let mut damaged = text.clone();
    damaged[100] ^= 0x20;
    std::fs::write(&doc, &damaged).unwrap();
    let e = assets::ensure(c, "brown").unwrap_err().to_string();
    assert!(e.contains("package/ca01") && e.contains("sha256") && e.contains("fedsoft fetch brown"), "{e}");
    let out = assets::fetch(c, brown).unwrap();
    assert!(matches!(&out, Outcome::Fetched { downloaded: false, replaced: Some(d), .. } if d.path == "package/ca01"));
    assert_eq!(std::fs::read(&doc).unwrap(), text);
    std::fs::remove_file(&doc).unwrap();
    let e = assets::ensure(c, "brown").unwrap_err().to_string();
    assert!(e.contains("package/ca01 is missing"), "{e}");
}

#[test]
fn unknown_assets_are_listed() {
    let e = assets::find("cifar100").unwrap_err().to_string();
    assert!(e.contains("cifar100") && e.contains("fashion-mnist"), "{e}");
}
