//! Every reader on small files written here in the exact official format, and on corrupt variants that must
//! fail with errors naming the file and the problem.

use fedsoft_data::readers::{agnews, brown, cifar, folder, idx, spam};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn write_mnist(dir: &Path, n_train: usize, gzip: bool) {
    let img: Vec<u8> = (0..n_train * 4 * 4).map(|i| i as u8).collect();
    let lab: Vec<u8> = (0..n_train).map(|i| (i % 10) as u8).collect();
    let w = |name: &str, b: Vec<u8>| {
        let (name, b) = if gzip { (format!("{name}.gz"), gz(&b)) } else { (name.to_string(), b) };
        std::fs::write(dir.join(name), b).unwrap();
    };
    w("train-images-idx3-ubyte", idx_bytes(&[n_train as u32, 4, 4], &img));
    w("train-labels-idx1-ubyte", idx_bytes(&[n_train as u32], &lab));
    w("t10k-images-idx3-ubyte", idx_bytes(&[2, 4, 4], &img[..32]));
    w("t10k-labels-idx1-ubyte", idx_bytes(&[2], &lab[..2]));
}

fn err_text<T: std::fmt::Debug>(r: Result<T, fedsoft_data::DataError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn idx_reads_raw_and_gzip() {
    for gzip in [false, true] {
        let d = tempfile::tempdir().unwrap();
        write_mnist(d.path(), 12, gzip);
        let (train, test) = idx::load_mnist_like(d.path(), &idx::FASHION_MNIST_CLASSES).unwrap();
        assert_eq!((train.len(), test.len(), train.height, train.width, train.channels), (12, 2, 4, 4, 1));
        assert_eq!(train.image(1)[0], 16);
        assert_eq!(train.labels[11], 1);
    }
}

#[test]
fn idx_corruptions_are_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x-idx3-ubyte");
    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (vec![0, 0, 9, 3, 0, 0, 0, 1], 3, "bad IDX magic"),
        (idx_bytes(&[2, 4, 4], &[0; 31]), 3, "truncated or wrong file"),
        (idx_bytes(&[2, 4], &[0; 8]), 3, "2 dimensions, expected 3"),
        (vec![0, 0], 3, "too short"),
        (gz(&idx_bytes(&[1, 2, 2], &[0; 4]))[..10].to_vec(), 3, "gzip"),
    ];
    for (bytes, dims, want) in cases {
        std::fs::write(&p, bytes).unwrap();
        let e = err_text(idx::read_idx(&p, dims));
        assert!(e.contains(want) && e.contains("x-idx3-ubyte"), "{e}");
    }
    // Labels out of range, and a count mismatch between images and labels.
    let img = d.path().join("i");
    let lab = d.path().join("l");
    std::fs::write(&img, idx_bytes(&[2, 2, 2], &[0; 8])).unwrap();
    std::fs::write(&lab, idx_bytes(&[2], &[3, 10])).unwrap();
    let e = err_text(idx::read_images_and_labels(&img, &lab, &idx::FASHION_MNIST_CLASSES));
    assert!(e.contains("label 10") && e.contains("out of range"), "{e}");
    std::fs::write(&lab, idx_bytes(&[3], &[0, 1, 2])).unwrap();
    assert!(
        err_text(idx::read_images_and_labels(&img, &lab, &idx::FASHION_MNIST_CLASSES))
            .contains("3 labels for 2 images")
    );
    let e = err_text(idx::load_mnist_like(&d.path().join("nowhere"), &idx::FASHION_MNIST_CLASSES));
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("missing"), "{e}");
}

fn cifar_record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072).map(|i| (i as u8).wrapping_add(seed)));
    r
}

#[test]
fn cifar10_and_100_layouts() {
    let d = tempfile::tempdir().unwrap();
    for i in 1..=5 {
        let b: Vec<u8> = (0..3).flat_map(|k| cifar_record(&[(k + i) as u8 % 10], k as u8)).collect();
        std::fs::write(d.path().join(format!("data_batch_{i}.bin")), b).unwrap();
    }
    std::fs::write(d.path().join("test_batch.bin"), cifar_record(&[9], 0)).unwrap();
    let (train, test) = cifar::load_cifar10(d.path()).unwrap();
    assert_eq!((train.len(), test.len(), train.channels), (15, 1, 3));
    assert_eq!(train.classes[0], "airplane");
    // Planar to HWC: pixel 0's RGB are bytes 0, 1024, 2048 of the image.
    assert_eq!(&train.image(0)[..3], &[0u8, 0, 0][..]);
    assert_eq!(train.image(1)[0..3], [1, 1, 1]);

    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("train.bin"), [cifar_record(&[3, 77], 0), cifar_record(&[19, 99], 1)].concat())
        .unwrap();
    std::fs::write(d.path().join("test.bin"), cifar_record(&[0, 5], 2)).unwrap();
    let (fine, _) = cifar::load_cifar100(d.path(), cifar::Cifar100Label::Fine).unwrap();
    let (coarse, _) = cifar::load_cifar100(d.path(), cifar::Cifar100Label::Coarse).unwrap();
    assert_eq!(fine.labels, vec![77, 99]);
    assert_eq!(coarse.labels, vec![3, 19]);
    assert_eq!((fine.classes.len(), coarse.classes.len()), (100, 20));

    // A CIFAR-10 file read as CIFAR-100 is not a whole number of records; labels beyond range are named.
    std::fs::write(d.path().join("test.bin"), cifar_record(&[1], 0)).unwrap();
    let e = err_text(cifar::load_cifar100(d.path(), cifar::Cifar100Label::Fine));
    assert!(e.contains("test.bin") && e.contains("3074-byte records"), "{e}");
    std::fs::write(d.path().join("test.bin"), cifar_record(&[1, 100], 0)).unwrap();
    let e = err_text(cifar::load_cifar100(d.path(), cifar::Cifar100Label::Fine));
    assert!(e.contains("label 100"), "{e}");
}

#[test]
fn ag_news_csv() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("train.csv");
    std::fs::write(
        &p,
        "\"3\",\"Wall St. Bears\",\"Short-sellers are \\\"back\\\".\"\n\"2\",\"Title, with comma\",\"Body\"\n",
    )
    .unwrap();
    let s = agnews::read_ag_news(&p).unwrap();
    assert_eq!(s.labels, vec![2, 1]);
    assert!(s.texts[1].starts_with("Title, with comma"));
    for (body, want) in [
        ("\"5\",\"a\",\"b\"\n", "outside 1..=4"),
        ("\"x\",\"a\",\"b\"\n", "not a number"),
        ("\"1\",\"only two\"\n", "row 1"),
        ("", "no rows"),
    ] {
        std::fs::write(&p, body).unwrap();
        let e = err_text(agnews::read_ag_news(&p));
        assert!(e.contains(want) && e.contains("train.csv"), "{body:?}: {e}");
    }
}

#[test]
fn brown_samples_strip_tags_and_group_by_document() {
    let d = tempfile::tempdir().unwrap();
    let doc = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\tIt/pps was/bedz fine/jj ./.\n\tA/at third/od line/nn ./.\n";
    std::fs::write(d.path().join("ca01"), doc).unwrap();
    std::fs::write(
        d.path().join("ck02"),
        doc.as_bytes().iter().map(|&b| if b == b'j' { 0xe9 } else { b }).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(d.path().join("cats.txt"), "ca01 news\n").unwrap();
    let s = brown::load_brown(d.path(), brown::BrownLabels::Genres, 1, 1).unwrap();
    assert_eq!(s.texts[0], "The jury said \" no \" .");
    assert_eq!(s.labels, vec![0, 0, 0, 9, 9, 9]);
    assert_eq!(s.groups.as_ref().unwrap(), &vec![0, 0, 0, 1, 1, 1]);
    assert!(s.texts[3].contains("\u{e9}ury"), "latin-1 decoded: {}", s.texts[3]);
    let g = brown::load_brown(d.path(), brown::BrownLabels::Groups, 2, 1).unwrap();
    assert_eq!(g.labels, vec![0, 3]);
    assert_eq!(g.texts.len(), 2, "a trailing partial window is dropped");
    assert_eq!(brown::load_brown(d.path(), brown::BrownLabels::Groups, 1, 5).unwrap().len(), 2);
    std::fs::write(d.path().join("ci01"), doc).unwrap();
    let e = err_text(brown::load_brown(d.path(), brown::BrownLabels::Genres, 1, 1));
    assert!(e.contains("ci01") && e.contains("genre letter"), "{e}");
}

/// A document cut mid-token, overwritten with zeros or holding untagged text is refused by name and line.
#[test]
fn damaged_brown_documents_are_refused() {
    let good = "\tThe/at jury/nn said/vbd ./.\n\tIt/pps was/bedz ./.\n";
    for (body, want) in [
        (format!("{good}\tA/at thi"), "line 3: token \"thi\" has no /tag"),
        (format!("{good}\tplain english words\n"), "\"plain\" has no /tag"),
        (format!("{good}\tA/at line/nn\0\0\0\n"), "line 3: control byte 0x00"),
        (format!("{good}\tA/at line/\n"), "\"line/\" has no /tag"),
    ] {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca01"), body.as_bytes()).unwrap();
        let e = err_text(brown::load_brown(d.path(), brown::BrownLabels::Groups, 1, 1));
        assert!(e.contains("ca01") && e.contains(want), "{body:?}: {e}");
    }
}

#[test]
fn spamassassin_messages() {
    let d = tempfile::tempdir().unwrap();
    for (g, n) in [("easy-ham-1", 2), ("spam-2", 1), ("hard-ham-1", 1)] {
        std::fs::create_dir(d.path().join(g)).unwrap();
        for i in 0..n {
            std::fs::write(
                d.path().join(g).join(format!("0000{i}.abc.txt")),
                format!("From: a@b\nSubject: Hello {g}\n  folded\nX: y\n\nBody {i}\nline"),
            )
            .unwrap();
            std::fs::write(d.path().join(g).join(format!("0000{i}.abc.json")), "{}").unwrap();
        }
    }
    let s = spam::load_spamassassin(d.path()).unwrap();
    assert_eq!(s.labels, vec![0, 0, 0, 1]);
    assert_eq!(s.texts[0], "Hello easy-ham-1 folded\nBody 0\nline");
    // The package's listing must match the messages on disk, both ways.
    let listing = d.path().join("file_list.json");
    let all =
        r#"["easy-ham-1/00000.abc.txt","easy-ham-1/00001.abc.txt","hard-ham-1/00000.abc.txt","spam-2/00000.abc.txt"]"#;
    std::fs::write(&listing, all).unwrap();
    assert_eq!(spam::load_spamassassin(d.path()).unwrap().len(), 4);
    std::fs::write(&listing, all.replace("]", r#","spam-2/00001.abc.txt"]"#)).unwrap();
    let e = err_text(spam::load_spamassassin(d.path()));
    assert!(e.contains("spam-2/00001.abc.txt") && e.contains("missing"), "{e}");
    std::fs::write(&listing, all.replace(r#","spam-2/00000.abc.txt""#, "")).unwrap();
    let e = err_text(spam::load_spamassassin(d.path()));
    assert!(e.contains("spam-2/00000.abc.txt") && e.contains("not listed"), "{e}");
    std::fs::write(&listing, all).unwrap();
    std::fs::write(d.path().join("spam-2/00000.abc.txt"), b"From: a@b\n\n\0\0\0").unwrap();
    let e = err_text(spam::load_spamassassin(d.path()));
    assert!(e.contains("00000.abc.txt") && e.contains("NUL byte"), "{e}");
    std::fs::create_dir(d.path().join("misc")).unwrap();
    let e = err_text(spam::load_spamassassin(d.path()));
    assert!(e.contains("misc") && e.contains("neither ham nor spam"), "{e}");
}

#[test]
fn image_folder_and_csv_text() {
    let d = tempfile::tempdir().unwrap();
    for (c, v) in [("cat", 10u8), ("dog", 200u8)] {
        std::fs::create_dir(d.path().join(c)).unwrap();
        image::RgbImage::from_pixel(8, 6, image::Rgb([v, v, v])).save(d.path().join(c).join("a.png")).unwrap();
    }
    let s = folder::load_image_folder(d.path(), 4).unwrap();
    assert_eq!((s.len(), s.height, s.channels), (2, 4, 3));
    assert_eq!(s.classes, vec!["cat", "dog"]);
    assert_eq!(s.image(1)[0], 200);
    std::fs::write(d.path().join("dog").join("broken.png"), b"not a png").unwrap();
    let e = err_text(folder::load_image_folder(d.path(), 4));
    assert!(e.contains("broken.png") && e.contains("decode"), "{e}");

    let p = d.path().join("t.csv");
    std::fs::write(&p, "text,label\nhello,pos\nbad day,neg\nok,pos\n").unwrap();
    let t = folder::load_csv_text(&p, "label", "text").unwrap();
    assert_eq!(t.classes, vec!["neg", "pos"]);
    assert_eq!(t.labels, vec![1, 0, 1]);
    assert!(err_text(folder::load_csv_text(&p, "y", "text")).contains("no column \"y\""));
    std::fs::write(&p, "text,label\nhello,pos,extra\n").unwrap();
    assert!(err_text(folder::load_csv_text(&p, "label", "text")).contains("row"));
}
