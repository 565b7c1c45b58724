//! The data readers against damaged files (`fedsoft_core::mutate`): IDX images and labels, CIFAR binary
//! batches and CSV text. Errors naming the file, never panics.
//! `FEDSOFT_FUZZ_CASES=1000000 cargo test -p fedsoft-data --release --test robustness` is the long run.

use fedsoft_core::mutate::{cases, damaged};
use fedsoft_data::readers::{cifar, folder, idx};

fn idx_file(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(body);
    b
}

#[test]
fn damaged_data_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let images = idx_file(&[3, 4, 4], &(0..48).map(|i| i as u8).collect::<Vec<_>>());
    let labels = idx_file(&[3], &[0, 1, 2]);
    let cifar_batch: Vec<u8> =
        (0..2).flat_map(|r| std::iter::once(r as u8).chain((0..3072).map(|i| i as u8))).collect();
    let csv = b"label,text\nc0,alpha beta\nc1,\"gamma, delta\"\nc0,one two three\n".to_vec();
    let (img, lab, bin, txt) =
        (dir.path().join("img.idx"), dir.path().join("lab.idx"), dir.path().join("b.bin"), dir.path().join("t.csv"));
    for case in 0..cases(1000) {
        std::fs::write(&img, damaged(&images, case)).unwrap();
        std::fs::write(&lab, damaged(&labels, case + 1)).unwrap();
        std::fs::write(&bin, damaged(&cifar_batch, case)).unwrap();
        std::fs::write(&txt, damaged(&csv, case)).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let _ = idx::read_images_and_labels(&img, &lab, &["a", "b", "c"]);
            let _ = cifar::read_batch(&bin, 1, 0, 10);
            let _ = folder::load_csv_text(&txt, "label", "text");
        });
        assert!(outcome.is_ok(), "case {case}: a reader panicked");
    }
}
