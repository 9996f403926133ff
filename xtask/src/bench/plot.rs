//! PNG plots of benchmark curves (the `plotters` crate's bitmap backend),
//! berthd and containerd on the same axes.
//!
//! Text is drawn with DejaVu Sans from Debian's `fonts-dejavu-core`, read
//! from [`FONT`] and handed to plotters' `ab_glyph` renderer, so no
//! fontconfig or system font lookup is involved.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Result;

/// The TTF every label is drawn with (Debian's `fonts-dejavu-core`).
pub(crate) const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Size of every PNG, in pixels.
const SIZE: (u32, u32) = (900, 540);
/// berthd's colour.
const BERTH: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// containerd's colour.
const CONTAINERD: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// One line of a curve.
#[derive(Debug, Clone)]
pub(super) struct Series {
    /// Legend text; a name starting with `berth` is drawn in berth's colour.
    pub(super) name: &'static str,
    /// `(x, y)` points, in x order.
    pub(super) points: Vec<(f64, f64)>,
}

/// One pair of bars (berthd, containerd) of a bar chart.
#[derive(Debug, Clone)]
pub(super) struct Bar {
    /// The condition the pair was measured in.
    pub(super) label: String,
    /// berthd's value.
    pub(super) berth: f64,
    /// containerd's value.
    pub(super) containerd: f64,
}

/// Registers [`FONT`] as plotters' `sans-serif` (once).
fn font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT)
                .map_err(|e| format!("{FONT} (Debian package fonts-dejavu-core): {e}"))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT}: not a font plotters can read"))
        })
        .clone()
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("plotting: {e:?}")
}

fn colour(name: &str) -> RGBColor {
    if name.starts_with("berth") {
        BERTH
    } else {
        CONTAINERD
    }
}

/// The top of a y axis showing values up to `max`, with some headroom.
fn y_top(max: f64) -> f64 {
    if max > 0.0 { max * 1.15 } else { 1.0 }
}

/// Draws `series` as lines with points into PNG `path`. With `log_x` the
/// x axis is logarithmic (every x must be positive).
pub(super) fn curve(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    log_x: bool,
    series: &[Series],
) -> Result<()> {
    font()?;
    // A log axis is drawn as log10(x) on a linear one, labelled with x.
    let tx = |x: f64| if log_x { x.max(1e-9).log10() } else { x };
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| tx(p.0)));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (x_min, x_max) = if x_min > x_max {
        (0.0, 1.0)
    } else if log_x {
        // Whole decades, so that every label is a power of ten.
        (x_min.floor() - 0.1, x_max.ceil() + 0.1)
    } else if x_min == x_max {
        (x_min - 1.0, x_max + 1.0)
    } else {
        let pad = (x_max - x_min) * 0.04;
        (x_min - pad, x_max + pad)
    };
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_min..x_max, 0.0..y_top(y_max))
        .map_err(err)?;
    let x_fmt = |v: &f64| {
        if log_x {
            if (v - v.round()).abs() < 1e-6 {
                human(10f64.powf(v.round()).round())
            } else {
                String::new()
            }
        } else {
            human(*v)
        }
    };
    // Powers of ten on the (log) axis: one label each.
    let mut decades = 0;
    let mut d = x_min.ceil();
    while d <= x_max {
        decades += 1;
        d += 1.0;
    }
    chart
        .configure_mesh()
        .x_labels(if log_x { decades } else { 10 })
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v: &f64| trim(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for s in series {
        let c = colour(s.name);
        let pts: Vec<(f64, f64)> = s.points.iter().map(|(x, y)| (tx(*x), *y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 5, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Draws one panel per `(title, bars)`, side by side, into PNG `path`:
/// each bar pair is berthd and containerd under one condition.
pub(super) fn bars(path: &Path, title: &str, panels: &[(&str, Vec<Bar>)]) -> Result<()> {
    font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for ((desc, bars), area) in panels.iter().zip(areas.iter()) {
        let n = bars.len();
        let y_max = bars
            .iter()
            .flat_map(|b| [b.berth, b.containerd])
            .fold(0.0, f64::max);
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..y_top(y_max) * 1.2)
            .map_err(err)?;
        let x_fmt = |v: &f64| {
            labels
                .iter()
                .enumerate()
                .find(|(i, _)| (*i as f64 - v).abs() < 1e-6)
                .map(|(_, l)| l.clone())
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&x_fmt)
            .y_desc(*desc)
            .y_label_formatter(&|v: &f64| trim(*v))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (name, c, offset) in [
            ("berthd", BERTH, -0.36),
            ("containerd 1.6", CONTAINERD, 0.02),
        ] {
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let v = if c == BERTH { b.berth } else { b.containerd };
                    let x0 = i as f64 + offset;
                    Rectangle::new([(x0, 0.0), (x0 + 0.34, v)], c.filled())
                }))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()));
            chart
                .draw_series(bars.iter().enumerate().map(|(i, b)| {
                    let v = if c == BERTH { b.berth } else { b.containerd };
                    let style = ("sans-serif", 14)
                        .into_font()
                        .into_text_style(area)
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    Text::new(trim(v), (i as f64 + offset + 0.17, v), style)
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// `x` as a short axis label: `100k`, `1k`, `500`, `2.5`.
fn human(x: f64) -> String {
    if x >= 1000.0 && (x / 1000.0).fract() == 0.0 {
        format!("{}k", x / 1000.0)
    } else {
        trim(x)
    }
}

/// `v` with at most two decimals, trailing zeros dropped.
fn trim(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(human(100_000.0), "100k");
        assert_eq!(human(500.0), "500");
        assert_eq!(trim(2.50), "2.5");
        assert_eq!(trim(0.0), "0");
        assert_eq!(trim(123.4), "123");
    }

    /// Both kinds of plot render to a real PNG with text (the font loads).
    #[test]
    fn draws_png() {
        let dir = tempfile::tempdir().unwrap();
        let series = [
            Series {
                name: "berthd",
                points: vec![(1000.0, 1.0), (10_000.0, 1.5), (100_000.0, 2.0)],
            },
            Series {
                name: "containerd 1.6",
                points: vec![(1000.0, 2.0), (10_000.0, 8.0), (100_000.0, 40.0)],
            },
        ];
        let p = dir.path().join("curve.png");
        curve(&p, "a curve", "blobs", "ms", true, &series).unwrap();
        let q = dir.path().join("bars.png");
        let b = |l: &str| Bar {
            label: l.into(),
            berth: 1.0,
            containerd: 2.0,
        };
        bars(
            &q,
            "bars",
            &[("s", vec![b("quiet"), b("loaded")]), ("ms", vec![b("x")])],
        )
        .unwrap();
        for f in [p, q] {
            let data = std::fs::read(&f).unwrap();
            assert!(data.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", f.display());
            assert!(data.len() > 5000, "{}: {} bytes", f.display(), data.len());
        }
    }
}
