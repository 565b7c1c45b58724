//! Two drawings — line charts and Gram heatmaps — rendered to both PNG and SVG from one description.

use crate::{ReportError, write_atomic};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const SIZE: (u32, u32) = (900, 560);
const FONT: &str = "sans-serif";

pub struct Series {
    /// Legend text; empty for none.
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBColor,
    /// Thin companion of another series (e.g. per-round delay beside its running mean).
    pub faint: bool,
    /// Drawn dashed: a series that lies on top of an earlier one stays visible.
    pub dashed: bool,
    /// `(x, low, high)`: a shaded band behind the line (e.g. one standard deviation over seeds); empty for none.
    pub band: Vec<(f64, f64, f64)>,
}

/// A horizontal reference line (e.g. the latency budget τ̄).
pub struct Reference {
    pub label: String,
    pub y: f64,
}

pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub references: Vec<Reference>,
    /// Pin the y axis to `[0, 1]` (accuracies, ratios).
    pub unit_interval: bool,
    /// Top of the y axis when a few outliers would flatten everything else: points above it are drawn on the
    /// top edge as triangles (the caption says so).
    pub y_max: Option<f64>,
    /// Label the x axis with whole numbers (rounds).
    pub integer_x: bool,
}

type DrawResult = Result<(), String>;

/// An axis label without floating-point noise (`1.7`, not `1.7000000000000002`).
fn tidy(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// A round's tick label: the whole number, or nothing for a tick that falls between rounds.
fn integer_tick(integer: bool, x: f64) -> String {
    if !integer {
        return tidy(x);
    }
    if (x - x.round()).abs() < 1e-6 { format!("{x:.0}") } else { String::new() }
}

/// The top of a y axis that keeps most of the data readable: outliers beyond the 90th percentile by more than
/// a factor of three are left above it (`None` when there are none).
pub fn robust_top(values: &[f64], keep_above: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 5 {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p90 = v[(v.len() - 1) * 9 / 10];
    let top = (3.0 * p90).max(keep_above * 1.15);
    (v[v.len() - 1] > top).then_some(top)
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.06;
    (lo - pad, hi + pad)
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])))
        .chain(c.references.iter().map(|r| r.y));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let (x0, x1) = padded(x0, x1);
    let (y0, y1) = match (c.unit_interval, c.y_max) {
        (true, _) => (0.0, 1.0),
        (false, Some(top)) => (padded(y0.min(top), top).0, top),
        (false, None) => padded(y0, y1),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FONT, 24))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    // Whole rounds only: a tick between two rounds gets no label, so short runs show no "2 2 2".
    let span = (x1 - x0).max(1.0);
    let x_ticks = if c.integer_x { (span.ceil() as usize + 1).clamp(2, 12) } else { 10 };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .x_labels(x_ticks)
        .x_label_formatter(&|x| integer_tick(c.integer_x, *x))
        .y_label_formatter(&|y| tidy(*y))
        .y_desc(&c.y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(|e| e.to_string())?;
    for s in c.series.iter().filter(|s| s.band.len() > 1) {
        let outline: Vec<(f64, f64)> =
            s.band.iter().map(|b| (b.0, b.2)).chain(s.band.iter().rev().map(|b| (b.0, b.1))).collect();
        chart
            .draw_series(std::iter::once(Polygon::new(outline, s.colour.mix(0.18).filled())))
            .map_err(|e| e.to_string())?;
    }
    for s in &c.series {
        let style = if s.faint { s.colour.mix(0.6).stroke_width(1) } else { s.colour.stroke_width(2) };
        let clipped: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x, y.min(y1))).collect();
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(clipped.iter().copied(), 7, 5, style))
        } else {
            chart.draw_series(LineSeries::new(clipped.iter().copied(), style))
        }
        .map_err(|e| e.to_string())?;
        if !s.label.is_empty() {
            let (col, width) = (s.colour, if s.faint { 1 } else { 2 });
            drawn.label(&s.label).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 22, y)],
                    col.mix(if width == 1 { 0.6 } else { 1.0 }).stroke_width(width),
                )
            });
        }
        if !s.faint && s.points.len() <= 40 {
            chart
                .draw_series(clipped.iter().map(|&p| Circle::new(p, 3, s.colour.filled())))
                .map_err(|e| e.to_string())?;
        }
        let above = s.points.iter().filter(|p| p.1 > y1).map(|p| (p.0, y1));
        chart.draw_series(above.map(|p| TriangleMarker::new(p, 6, s.colour.filled()))).map_err(|e| e.to_string())?;
    }
    for r in &c.references {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(DashedLineSeries::new([(x0, r.y), (x1, r.y)], 8, 5, grey.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(&r.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], grey.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .position(legend_corner(&c.series, (x0, x1), (y0, y1)).position())
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// A corner of the plotting area for the legend box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    UpperRight,
    LowerRight,
    UpperLeft,
    LowerLeft,
}

impl Corner {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// The corner whose neighbourhood (the outer 40 % of each axis) holds the fewest data points, so the legend
/// covers no curve's end where it can avoid it: a rising accuracy curve ends top right, a falling loss bottom
/// right. Ties go to the upper right, then lower right.
pub fn legend_corner(series: &[Series], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Corner {
    let (w, h) = ((x1 - x0).max(f64::MIN_POSITIVE), (y1 - y0).max(f64::MIN_POSITIVE));
    let points: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().map(|&(x, y)| ((x - x0) / w, (y.min(y1) - y0) / h))).collect();
    let near = |right: bool, upper: bool| {
        points
            .iter()
            .filter(|&&(x, y)| (if right { x >= 0.6 } else { x <= 0.4 }) && (if upper { y >= 0.6 } else { y <= 0.4 }))
            .count()
    };
    [
        (Corner::UpperRight, near(true, true)),
        (Corner::LowerRight, near(true, false)),
        (Corner::UpperLeft, near(false, true)),
        (Corner::LowerLeft, near(false, false)),
    ]
    .into_iter()
    .min_by_key(|&(_, n)| n)
    .map_or(Corner::UpperRight, |(c, _)| c)
}

/// One heatmap panel: an `r × r` matrix of values in `[0, 1]`.
pub struct Heat {
    pub title: String,
    pub r: usize,
    pub values: Vec<f64>,
}

/// White (0) to deep blue (1).
fn ramp(v: f64) -> RGBColor {
    let t = v.clamp(0.0, 1.0);
    let mix = |lo: f64, hi: f64| (lo + (hi - lo) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

fn draw_heat<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, panels: &[Vec<Heat>]) -> DrawResult {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, (FONT, 20)).map_err(|e| e.to_string())?;
    let (body, bar) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(70));
    let rows = panels.len().max(1);
    let cols = panels.iter().map(Vec::len).max().unwrap_or(1).max(1);
    for (area, heat) in body.split_evenly((rows, cols)).into_iter().zip(panels.iter().flatten()) {
        let r = heat.r as f64;
        // Cells are centred on whole numbers, so each tick labels the rank index of the cell above it.
        let mut chart = ChartBuilder::on(&area)
            .caption(&heat.title, (FONT, 16))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(30)
            .build_cartesian_2d(-0.5..r - 0.5, r - 0.5..-0.5)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style((FONT, 12))
            .x_labels(heat.r.min(8) + 1)
            .y_labels(heat.r.min(8) + 1)
            .x_label_formatter(&|x| integer_tick(true, *x))
            .y_label_formatter(&|y| integer_tick(true, *y))
            .draw()
            .map_err(|e| e.to_string())?;
        let n = heat.r;
        chart
            .draw_series((0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| {
                let v = heat.values[i * n + j];
                let (x, y) = (j as f64, i as f64);
                Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], ramp(v).filled())
            }))
            .map_err(|e| e.to_string())?;
    }
    // Colour bar: 0 at the bottom, 1 at the top.
    let h = bar.dim_in_pixel().1;
    let top = 60i32;
    let bottom = h as i32 - 60;
    for y in top..bottom {
        let v = 1.0 - (y - top) as f64 / (bottom - top).max(1) as f64;
        bar.draw(&Rectangle::new([(12, y), (32, y + 1)], ramp(v).filled())).map_err(|e| e.to_string())?;
    }
    let style = TextStyle::from((FONT, 14).into_font()).color(&BLACK);
    bar.draw_text("|G|", &style, (10, top - 30)).map_err(|e| e.to_string())?;
    bar.draw_text("1", &style, (38, top - 6)).map_err(|e| e.to_string())?;
    bar.draw_text("0", &style, (38, bottom - 8)).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Renders with `draw` to `<stem>.png` and `<stem>.svg` in `out`, recording both paths.
fn render(
    out: &Path,
    stem: &str,
    size: (u32, u32),
    files: &mut Vec<PathBuf>,
    draw_png: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
    draw_svg: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), ReportError> {
    let png = out.join(format!("{stem}.png"));
    write_png(&png, size, draw_png)?;
    files.push(png);

    let svg = out.join(format!("{stem}.svg"));
    let mut text = String::new();
    draw_svg(SVGBackend::with_string(&mut text, size).into_drawing_area()).map_err(|e| ReportError::output(&svg, e))?;
    write_atomic(&svg, text.as_bytes())?;
    files.push(svg);
    Ok(())
}

use image::ImageEncoder as _;

pub fn line_chart(out: &Path, stem: &str, chart: &LineChart, files: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    render(out, stem, SIZE, files, |a| draw_lines(a, chart), |a| draw_lines(a, chart))
}

/// The chart's PNG bytes, drawn in memory (the results page keeps PNG only, and its check compares them with
/// the stored figure).
pub fn line_chart_png_bytes(chart: &LineChart) -> Result<Vec<u8>, String> {
    png_bytes(SIZE, |a| draw_lines(a, chart))
}

fn png_bytes(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<Vec<u8>, String> {
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area()).map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    image::codecs::png::PngEncoder::new(&mut encoded)
        .write_image(&rgb, size.0, size.1, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(encoded)
}

fn write_png(
    png: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), ReportError> {
    let encoded = png_bytes(size, draw).map_err(|e| ReportError::output(png, e))?;
    write_atomic(png, &encoded)
}

pub fn heatmaps(
    out: &Path,
    stem: &str,
    title: &str,
    panels: &[Vec<Heat>],
    files: &mut Vec<PathBuf>,
) -> Result<(), ReportError> {
    let size = (900, 60 + 380 * panels.len().max(1) as u32);
    render(out, stem, size, files, |a| draw_heat(a, title, panels), |a| draw_heat(a, title, panels))
}

#[cfg(test)]
mod tests {
    use super::{Corner, Series, integer_tick, legend_corner, robust_top, tidy};
    use plotters::style::RGBColor;

    fn series(points: &[(f64, f64)]) -> Series {
        let points = points.to_vec();
        Series { label: "s".into(), points, colour: RGBColor(0, 0, 0), faint: false, dashed: false, band: vec![] }
    }

    /// A rising accuracy curve ends top right, where the legend used to hide its last point; a falling loss
    /// ends bottom right; a curve that leaves the right side free keeps the legend there.
    #[test]
    fn the_legend_goes_where_no_curve_ends() {
        let rising = series(&[(0.0, 0.1), (5.0, 0.62), (10.0, 0.71), (15.0, 0.74), (20.0, 0.77)]);
        assert_eq!(legend_corner(&[rising], (0.0, 20.0), (0.1, 0.8)), Corner::LowerRight);
        let falling = series(&[(1.0, 2.0), (5.0, 0.9), (10.0, 0.5), (20.0, 0.3)]);
        assert_eq!(legend_corner(&[falling], (1.0, 20.0), (0.3, 2.0)), Corner::UpperRight);
        let both = [series(&[(0.0, 0.1), (10.0, 0.5), (20.0, 0.9)]), series(&[(0.0, 0.9), (10.0, 0.5), (20.0, 0.1)])];
        let corner = legend_corner(&both, (0.0, 20.0), (0.1, 0.9));
        assert_eq!(corner, Corner::UpperRight, "every corner holds one end: the first in order");
    }

    #[test]
    fn round_ticks_are_whole_numbers_or_nothing() {
        assert_eq!(integer_tick(true, 2.0000000001), "2");
        assert_eq!(integer_tick(true, 2.4), "");
        assert_eq!(integer_tick(false, 2.4), "2.4");
    }

    #[test]
    fn one_outlier_is_left_above_the_axis_and_ordinary_data_is_not() {
        // The default run's delays: one deep fade in the first round, the rest near 1 s.
        let mut delays = vec![12.9];
        delays.extend((0..19).map(|i| 0.9 + 0.02 * i as f64));
        let top = robust_top(&delays, 1.137).unwrap();
        assert!(top < 12.9 && top > 1.137 * 1.15, "{top}");
        assert_eq!(robust_top(&[1.0, 1.2, 0.9, 1.1, 1.3, 1.0], 1.1), None);
        assert_eq!(robust_top(&[1.0, 50.0], 1.0), None, "too few points to call one an outlier");
    }

    #[test]
    fn axis_labels_carry_no_floating_point_noise() {
        assert_eq!(tidy(1.7000000000000002), "1.7");
        assert_eq!(tidy(2.0), "2");
        assert_eq!(tidy(0.25), "0.25");
        assert_eq!(tidy(-0.00001), "0");
        assert_eq!(tidy(1e6), "1000000");
    }
}
