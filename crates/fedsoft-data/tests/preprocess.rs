//! Preprocessing and splitting.

use fedsoft_data::dataset::ImageSet;
use fedsoft_data::image::{ImagePrep, OnDemand, Resize, augment, resize_plane, to_tensor};
use fedsoft_data::split::stratified_split;

#[test]
fn nearest_and_bilinear_resize() {
    let src = [0.0, 1.0, 2.0, 3.0]; // 2x2
    assert_eq!(
        resize_plane(&src, 2, 2, 4, Resize::Nearest),
        vec![0., 0., 1., 1., 0., 0., 1., 1., 2., 2., 3., 3., 2., 2., 3., 3.]
    );
    // torch.nn.functional.interpolate(x, size=4, mode="bilinear", align_corners=False) on [[0,1],[2,3]].
    let want = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
    for (a, b) in resize_plane(&src, 2, 2, 4, Resize::Bilinear).iter().zip(want) {
        assert!((a - b).abs() < 1e-6);
    }
    // Identity size is a copy; downscaling by 2 with bilinear averages 2x2 blocks.
    let big: Vec<f32> = (0..16).map(|x| x as f32).collect();
    assert_eq!(resize_plane(&big, 4, 4, 2, Resize::Bilinear), vec![2.5, 4.5, 10.5, 12.5]);
}

/// The per-pixel bilinear formula (torch's half-pixel centres) that `resize_plane` computes separably.
fn bilinear_per_pixel(src: &[f32], h: usize, w: usize, s: usize) -> Vec<f32> {
    let coord = |o: usize, n: usize| ((o as f32 + 0.5) * (n as f32 / s as f32) - 0.5).clamp(0.0, (n - 1) as f32);
    let mut out = Vec::new();
    for oy in 0..s {
        for ox in 0..s {
            let (fy, fx) = (coord(oy, h), coord(ox, w));
            let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (dy, dx) = (fy - y0 as f32, fx - x0 as f32);
            let top = src[y0 * w + x0] * (1.0 - dx) + src[y0 * w + x1] * dx;
            let bot = src[y1 * w + x0] * (1.0 - dx) + src[y1 * w + x1] * dx;
            out.push(top * (1.0 - dy) + bot * dy);
        }
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Resizing one axis at a time gives the per-pixel formula's bits, up- or downscaling, any aspect.
    #[test]
    fn separable_bilinear_equals_the_per_pixel_formula(
        h in 1usize..40, w in 1usize..40, s in 1usize..70, seed in 0u32..1000,
    ) {
        let src: Vec<f32> = (0..h * w).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 999.0).collect();
        let got = resize_plane(&src, h, w, s, Resize::Bilinear);
        let want = bilinear_per_pixel(&src, h, w, s);
        proptest::prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    /// A batch prepared on demand holds the same bits as the same images cut from the whole prepared set,
    /// grey or RGB, resized or not, in the batch's order (repeats included).
    #[test]
    fn on_demand_batches_equal_the_whole_prepared_set(
        rgb in proptest::bool::ANY, side in 2usize..12, size in 1usize..20, nearest in proptest::bool::ANY,
        idx in proptest::collection::vec(0usize..6, 0..10),
    ) {
        let channels = if rgb { 3 } else { 1 };
        let n = 6;
        let set = ImageSet {
            height: side,
            width: side + 1,
            channels,
            pixels: (0..n * side * (side + 1) * channels).map(|i| (i * 37 % 256) as u8).collect(),
            labels: vec![0; n],
            classes: vec!["a".into()],
        };
        let resize = if nearest { Resize::Nearest } else { Resize::Bilinear };
        let prep = ImagePrep::imagenet(size, resize);
        let whole = to_tensor(&set, &prep).unwrap();
        let per = 3 * size * size;
        let want: Vec<f32> = idx.iter().flat_map(|&i| whole[i * per..(i + 1) * per].iter().copied()).collect();
        let images = OnDemand::new(set, prep).unwrap();
        proptest::prop_assert_eq!(images.size(), size);
        proptest::prop_assert_eq!(images.gather(&idx), want);
    }
}

#[test]
fn on_demand_refuses_what_it_cannot_prepare() {
    let set = |channels| ImageSet {
        height: 2,
        width: 2,
        channels,
        pixels: vec![0; 4 * channels],
        labels: vec![0],
        classes: vec!["a".into()],
    };
    let prep = ImagePrep::imagenet(4, Resize::Bilinear);
    let err = OnDemand::new(set(2), prep).unwrap_err().to_string();
    assert!(err.contains("2 channels") && err.contains("expected 1 or 3"), "{err}");
    let err = OnDemand::new(set(1), ImagePrep { size: 0, ..prep }).unwrap_err().to_string();
    assert!(err.contains("data.image_size"), "{err}");
    let err = OnDemand::new(set(3), ImagePrep { std: [0.2, 0.0, 0.2], ..prep }).unwrap_err().to_string();
    assert!(err.contains("data.std"), "{err}");
}

#[test]
fn grey_becomes_three_normalised_channels() {
    let set = ImageSet {
        height: 2,
        width: 2,
        channels: 1,
        pixels: vec![0, 255, 255, 0],
        labels: vec![0],
        classes: vec!["a".into()],
    };
    let prep = ImagePrep { size: 2, resize: Resize::Nearest, mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.5] };
    let t = to_tensor(&set, &prep).unwrap();
    assert_eq!(t.len(), 12);
    assert_eq!(&t[0..4], &[-1.0, 1.0, 1.0, -1.0]);
    assert_eq!(&t[4..8], &[-2.0, 2.0, 2.0, -2.0]);
    let bad = ImagePrep { size: 0, ..prep };
    assert!(to_tensor(&set, &bad).unwrap_err().to_string().contains("data.image_size"));
}

#[test]
fn augmentation_is_seeded_and_shape_preserving() {
    use fedsoft_core::rng::{Purpose, stream};
    let img: Vec<f32> = (0..3 * 8 * 8).map(|x| x as f32).collect();
    let run = |seed| {
        let mut x = img.clone();
        augment(&mut x, 8, 2, &mut stream(seed, Purpose::Augment, &[0]));
        x
    };
    assert_eq!(run(1), run(1));
    let outs: Vec<Vec<f32>> = (0..8).map(run).collect();
    assert!(outs.iter().any(|o| o != &img), "some draw must change the image");
    let mut flip_only = img.clone();
    augment(&mut flip_only, 8, 0, &mut stream(3, Purpose::Augment, &[0]));
    let mut sorted_a = flip_only.clone();
    let mut sorted_b = img.clone();
    sorted_a.sort_by(f32::total_cmp);
    sorted_b.sort_by(f32::total_cmp);
    assert_eq!(sorted_a, sorted_b, "without padding, only a flip: same pixels");
}

#[test]
fn stratified_split_keeps_groups_whole() {
    let labels: Vec<u32> = (0..100).map(|i| (i / 10 % 2) as u32).collect();
    let groups: Vec<u32> = (0..100).map(|i| (i / 10) as u32).collect();
    let (tr, te) = stratified_split(&labels, Some(&groups), 0.2, 4).unwrap();
    assert_eq!(tr.len() + te.len(), 100);
    assert_eq!(te.len(), 20);
    for g in 0..10 {
        let in_test = te.iter().filter(|&&i| groups[i] == g).count();
        assert!(in_test == 0 || in_test == 10);
    }
    let (tr2, te2) = stratified_split(&labels, None, 0.3, 4).unwrap();
    assert_eq!(te2.iter().filter(|&&i| labels[i] == 0).count(), 15);
    assert_eq!(tr2.len(), 70);
    assert_eq!(stratified_split(&labels, None, 0.3, 4).unwrap(), (tr2, te2));
    assert!(stratified_split(&labels, None, 1.5, 4).unwrap_err().to_string().contains("data.test_fraction"));
}
