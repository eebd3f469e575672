//! The charts of a [`Report`], as SVG and PNG.
//!
//! [`Report::plot`] draws:
//!
//! - one line chart per distinct [`Series::chart`](super::Series::chart), with a line per
//!   series in the order they were added, its axes described by the first series' labels;
//! - one chart of the percentile curves of every [`Distribution`](super::Distribution) (one
//!   per unit, should they differ), in HdrHistogram's style: the x axis is the percentile on a
//!   scale of "nines" — 0%, 90%, 99%, 99.9%... equally spaced, `log10(1 / (1 - p))` — so that
//!   the tail gets as much room as the body, and the maximum sits at the right edge.
//!
//! Each chart is written twice, as `NAME.svg` and `NAME.png` ([`CHART_WIDTH_PX`] ×
//! [`CHART_HEIGHT_PX`]), where `NAME` is a slug of the bench and the chart's title (e.g.
//! `nexmark-q5-latency-over-time`). A footer names the bench, date and commit, so that a chart
//! found alone still says where it came from.
//!
//! Text is drawn with DejaVu Sans (`bench/assets/DejaVuSans.ttf`, from Debian's
//! `fonts-dejavu-core` 2.37, under the license beside it), built into the binary: PNGs need no
//! fonts on the machine. SVGs name the `sans-serif` family and leave the font to the viewer.

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Report;

/// Width of a chart, in pixels (the PNG's; the SVG's in user units).
pub const CHART_WIDTH_PX: u32 = 1024;
/// Height of a chart, in pixels.
pub const CHART_HEIGHT_PX: u32 = 640;

/// Most "nines" the percentile axis goes to: 99.9999999%, past a billion values.
const PERCENTILE_NINES_MAX: u32 = 9;

const FONT_FAMILY: &str = "sans-serif";
static FONT_DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The output directory could not be made.
    #[error("creating the chart directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    /// A chart file could not be written.
    #[error("writing the chart {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// A PNG could not be encoded.
    #[error("encoding the chart {} as PNG: {source}", path.display())]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
    /// plotters failed to draw a chart.
    #[error("drawing the chart {chart:?} as {format}: {message}")]
    Draw {
        chart: String,
        format: &'static str,
        message: String,
    },
    /// The bundled font did not parse (a broken build).
    #[error("the bundled font DejaVu Sans does not load")]
    Font,
}

/// One chart to draw: lines on shared axes.
#[derive(Debug)]
struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    x_axis: XAxis,
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum XAxis {
    /// x as given, with round ticks.
    Linear,
    /// x in "nines" (see the module docs), up to this many.
    PercentileNines(u32),
}

#[derive(Debug)]
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Draws `report`'s charts into `dir` (see the module docs); returns the paths written, an SVG
/// then a PNG for each chart. Writes nothing, and does not make `dir`, if there is nothing to
/// draw.
pub(super) fn plot(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let charts = charts(report);
    if charts.is_empty() {
        return Ok(Vec::new());
    }
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|source| PlotError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let commit: String = report.machine.commit.chars().take(12).collect();
    let footer = format!(
        "shardflow-bench {} · {} UTC · {commit}",
        report.bench, report.date
    );
    let mut stems: Vec<String> = Vec::new();
    let mut written = Vec::new();
    for chart in &charts {
        let mut stem = slug(&format!("{} {}", report.bench, chart.title));
        if stems.contains(&stem) {
            let n = (2..).find(|n| !stems.contains(&format!("{stem}-{n}")));
            stem = format!("{stem}-{}", n.expect("an unused number"));
        }
        stems.push(stem.clone());

        let svg_path = dir.join(format!("{stem}.svg"));
        let mut svg = String::new();
        draw(
            SVGBackend::with_string(&mut svg, (CHART_WIDTH_PX, CHART_HEIGHT_PX)),
            chart,
            &footer,
        )
        .map_err(|message| PlotError::Draw {
            chart: chart.title.clone(),
            format: "SVG",
            message,
        })?;
        std::fs::write(&svg_path, svg).map_err(|source| PlotError::Write {
            path: svg_path.clone(),
            source,
        })?;
        written.push(svg_path);

        let png_path = dir.join(format!("{stem}.png"));
        let mut rgb = vec![0u8; CHART_WIDTH_PX as usize * CHART_HEIGHT_PX as usize * 3];
        draw(
            BitMapBackend::with_buffer(&mut rgb, (CHART_WIDTH_PX, CHART_HEIGHT_PX)),
            chart,
            &footer,
        )
        .map_err(|message| PlotError::Draw {
            chart: chart.title.clone(),
            format: "PNG",
            message,
        })?;
        write_png(&png_path, &rgb, CHART_WIDTH_PX, CHART_HEIGHT_PX)?;
        written.push(png_path);
    }
    Ok(written)
}

/// Makes the bundled font the `sans-serif` of every chart, once.
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_DEJAVU_SANS).is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// The charts of `report`: its series grouped by chart, then its distributions by unit.
fn charts(report: &Report) -> Vec<Chart> {
    let mut charts: Vec<Chart> = Vec::new();
    for series in &report.series {
        let line = Line {
            name: series.name.clone(),
            points: series.points.clone(),
        };
        match charts.iter_mut().find(|c| c.title == series.chart) {
            Some(chart) => chart.lines.push(line),
            None => charts.push(Chart {
                title: series.chart.clone(),
                x_label: series.x_label.clone(),
                y_label: series.y_label.clone(),
                x_axis: XAxis::Linear,
                lines: vec![line],
            }),
        }
    }

    let mut units: Vec<&str> = Vec::new();
    for d in &report.distributions {
        if !units.contains(&d.unit.as_str()) {
            units.push(&d.unit);
        }
    }
    for unit in &units {
        let distributions: Vec<_> = report
            .distributions
            .iter()
            .filter(|d| d.unit == *unit)
            .collect();
        // The axis goes to the nines of the finest percentile drawn, at least 99%.
        let finest = distributions
            .iter()
            .flat_map(|d| &d.points)
            .filter_map(|&(p, _)| nines(p))
            .fold(0.0, f64::max);
        let nines_max = ((finest - 1e-9).ceil() as u32).clamp(2, PERCENTILE_NINES_MAX);
        let lines = distributions
            .iter()
            .map(|d| Line {
                name: d.name.clone(),
                points: d
                    .points
                    .iter()
                    .map(|&(p, v)| {
                        let x =
                            nines(p).map_or(f64::from(nines_max), |x| x.min(f64::from(nines_max)));
                        (x, v)
                    })
                    .collect(),
            })
            .collect();
        let title = if units.len() == 1 {
            "latency percentiles".to_string()
        } else {
            format!("latency percentiles ({unit})")
        };
        charts.push(Chart {
            title,
            x_label: "percentile".to_string(),
            y_label: format!("latency ({unit})"),
            x_axis: XAxis::PercentileNines(nines_max),
            lines,
        });
    }
    charts
}

/// The percentile `p` (0..=100) on the scale of nines: `log10(1 / (1 - p/100))`, so 90% is 1,
/// 99% is 2, 99.9% is 3; `None` for 100% (infinitely far).
fn nines(p: f64) -> Option<f64> {
    let rest = 1.0 - p / 100.0;
    (rest > 1e-12).then(|| -rest.log10())
}

/// The label of a tick on the nines axis: 0%, 90%, 99%, 99.9%, 99.99%...
fn nines_label(x: f64) -> String {
    match x.round() as u32 {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// A round step (1, 2 or 5 times a power of ten) of at least `raw`.
fn nice_step(raw: f64) -> f64 {
    assert!(raw > 0.0 && raw.is_finite(), "step {raw}");
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// Ticks every `step` from the first multiple of it at or above `lo` to `hi`.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick's label: `M` or `G` for large numbers, as many decimals as the step needs.
fn tick_label(v: f64, step: f64, largest: f64) -> String {
    let (scale, suffix) = if largest >= 1e9 {
        (1e9, " G")
    } else if largest >= 1e6 {
        (1e6, " M")
    } else {
        (1.0, "")
    };
    let decimals = (-(step / scale).log10().floor()).clamp(0.0, 12.0) as usize;
    if v.abs() < step * 1e-6 {
        return "0".to_string();
    }
    format!("{:.decimals$}{suffix}", v / scale)
}

/// The smallest and largest finite coordinate `axis` picks out of the lines' points.
fn extent(lines: &[Line], axis: impl Fn(&(f64, f64)) -> f64) -> Option<(f64, f64)> {
    lines
        .iter()
        .flat_map(|l| &l.points)
        .map(axis)
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// Draws `chart` on `backend`; errors as text (each backend has its own error type).
fn draw<DB: DrawingBackend>(backend: DB, chart: &Chart, footer: &str) -> Result<(), String> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;

    // x: the data's extent with round ticks, or the nines.
    let (x_lo, x_hi, x_ticks, x_step) = match chart.x_axis {
        XAxis::Linear => {
            let (lo, hi) = extent(&chart.lines, |p| p.0).unwrap_or((0.0, 1.0));
            let (lo, hi) = if hi > lo {
                (lo, hi)
            } else {
                (lo - 1.0, lo + 1.0)
            };
            let step = nice_step((hi - lo) / 10.0);
            (lo, hi, ticks(lo, hi, step), step)
        }
        XAxis::PercentileNines(n) => {
            let n = f64::from(n);
            (0.0, n, ticks(0.0, n, 1.0), 1.0)
        }
    };
    // y: from zero (or below, for negative values) to a round tick above the largest value,
    // leaving room at the top for the legend (20 px a line in a plotting area of ~500 px).
    let (y_min, y_max) = extent(&chart.lines, |p| p.1).unwrap_or((0.0, 1.0));
    let (y_lo, y_hi) = (y_min.min(0.0), y_max.max(0.0));
    let y_hi = if y_hi > y_lo { y_hi } else { y_lo + 1.0 };
    let legend_share = ((chart.lines.len() as f64 * 20.0 + 24.0) / 500.0).min(0.5);
    let y_hi = y_hi + (y_hi - y_lo) * legend_share / (1.0 - legend_share);
    let y_step = nice_step((y_hi - y_lo) / 8.0);
    let (y_lo, y_hi) = (
        (y_lo / y_step).floor() * y_step,
        (y_hi / y_step - 1e-9).ceil() * y_step,
    );
    let y_ticks = ticks(y_lo, y_hi, y_step);
    let y_largest = y_lo.abs().max(y_hi.abs());
    let x_largest = x_lo.abs().max(x_hi.abs());

    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, (FONT_FAMILY, 26))
        .margin(20)
        .margin_right(48) // room for the last x label, centred on the right edge
        .margin_bottom(36)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(
            TickedAxis {
                lo: x_lo,
                hi: x_hi,
                ticks: x_ticks,
            },
            TickedAxis {
                lo: y_lo,
                hi: y_hi,
                ticks: y_ticks,
            },
        )
        .map_err(|e| e.to_string())?;
    let x_format = |x: &f64| match chart.x_axis {
        XAxis::Linear => tick_label(*x, x_step, x_largest),
        XAxis::PercentileNines(_) => nines_label(*x),
    };
    let y_format = |y: &f64| tick_label(*y, y_step, y_largest);
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 17))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(|e| e.to_string())?;

    for (i, line) in chart.lines.iter().enumerate() {
        let style = Palette99::pick(i).stroke_width(2);
        let points: Vec<(f64, f64)> = line
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let series = if points.len() == 1 {
            // A line of one point draws nothing: mark it.
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, style.filled())))
        } else {
            ctx.draw_series(LineSeries::new(points, style))
        };
        series
            .map_err(|e| e.to_string())?
            .label(&line.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    let legend_at = match chart.x_axis {
        XAxis::Linear => SeriesLabelPosition::UpperRight,
        // Percentile curves rise to the right: the upper left is free.
        XAxis::PercentileNines(_) => SeriesLabelPosition::UpperLeft,
    };
    ctx.configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT_FAMILY, 15))
        .draw()
        .map_err(|e| e.to_string())?;

    let (width, height) = root.dim_in_pixel();
    let footer_style = (FONT_FAMILY, 13)
        .into_font()
        .color(&FOOTER_GREY)
        .pos(Pos::new(HPos::Right, VPos::Bottom));
    root.draw(&Text::new(
        footer,
        (width as i32 - 12, height as i32 - 8),
        footer_style,
    ))
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

const FOOTER_GREY: RGBColor = RGBColor(110, 110, 110);

/// A linear axis with the ticks we choose. (plotters' `with_key_points` does the same, but its
/// axis cannot have its labels formatted.)
struct TickedAxis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    // Labels are formatted by the mesh's label formatters; this is only their fallback.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        debug_assert!(self.hi > self.lo);
        let fraction = (v - self.lo) / (self.hi - self.lo);
        let pixels = f64::from(limit.1 - limit.0);
        limit.0 + (pixels * fraction + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Grid lines at the ticks only (none of plotters' lighter in-between ones).
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Encodes `rgb` (8-bit RGB, row by row) as the PNG file `path`.
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), PlotError> {
    assert_eq!(rgb.len(), width as usize * height as usize * 3);
    let write_error = |source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    };
    let png_error = |source| PlotError::Png {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(write_error)?);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(rgb).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    out.flush().map_err(write_error)
}

/// `title` as a file name: lower-case ASCII letters and digits, runs of anything else as one
/// `-` (`µ` as `u`).
fn slug(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        let c = if c == 'µ' || c == 'μ' { 'u' } else { c };
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "chart".to_string()
    } else {
        slug.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Distribution, Series};
    use super::*;

    fn report_with_everything() -> Report {
        let mut report = super::super::tests::sample_report();
        let mut fast = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let mut slow = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for i in 0..100_000u64 {
            fast.record(20_000 + (i * 7_919) % 30_000).unwrap();
            slow.record(50_000 + (i * 7_919) % 90_000 + if i % 1000 == 0 { 5_000_000 } else { 0 })
                .unwrap();
        }
        report
            .distribution(Distribution::from_histogram("engine P=1", &fast, 1e3, "µs"))
            .distribution(Distribution::from_histogram("engine P=2", &slow, 1e3, "µs"));
        report
    }

    /// How plotters writes a text in an SVG: on a line of its own inside its element.
    fn svg_text(text: &str) -> String {
        format!(">\n{text}\n</text>")
    }

    fn png_info(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buf).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);
        buf.truncate(frame.buffer_size());
        (frame.width, frame.height, buf)
    }

    /// How many pixels in rows `rows` are dark (text or lines, not the white background).
    fn dark_pixels(rgb: &[u8], width: u32, rows: std::ops::Range<u32>) -> usize {
        rows.flat_map(|y| (0..width).map(move |x| ((y * width + x) * 3) as usize))
            .filter(|&i| rgb[i..i + 3].iter().all(|&c| c < 128))
            .count()
    }

    #[test]
    fn writes_an_svg_and_a_png_per_chart() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("charts");
        let report = report_with_everything();
        let written = report.plot(&out).unwrap();
        if let Some(keep) = std::env::var_os("SHARDFLOW_BENCH_KEEP_CHARTS") {
            for path in &written {
                std::fs::copy(path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
            }
        }
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "nexmark-q5-latency-over-time.svg",
                "nexmark-q5-latency-over-time.png",
                "nexmark-q5-throughput.svg",
                "nexmark-q5-throughput.png",
                "nexmark-latency-percentiles.svg",
                "nexmark-latency-percentiles.png",
            ]
        );
        let legends: [&[&str]; 3] = [
            &["p50", "p99"],
            &["engine P=2"],
            &["engine P=1", "engine P=2"],
        ];
        let titles = [
            "q5 latency over time",
            "q5 throughput",
            "latency percentiles",
        ];
        for ((pair, legend), title) in written.chunks(2).zip(legends).zip(titles) {
            let svg = std::fs::read_to_string(&pair[0]).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(
                svg.contains(&svg_text(title)),
                "title {title:?} not in the SVG"
            );
            for name in legend {
                assert!(
                    svg.contains(&svg_text(name)),
                    "{name:?} not in {:?}",
                    pair[0]
                );
            }
            assert!(svg.contains("<polyline"), "no line in {:?}", pair[0]);
            assert!(
                svg.contains("2026-11-24 14:05 UTC"),
                "no footer in {:?}",
                pair[0]
            );

            let bytes = std::fs::read(&pair[1]).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            let (width, height, rgb) = png_info(&bytes);
            assert_eq!((width, height), (CHART_WIDTH_PX, CHART_HEIGHT_PX));
            // Text is drawn: the caption's rows (above the plotting area) have dark pixels, as
            // do the footer's, and the corner above the caption has none.
            assert!(
                dark_pixels(&rgb, width, 20..50) > 200,
                "no caption in {:?}",
                pair[1]
            );
            assert!(
                dark_pixels(&rgb, width, height - 30..height) > 50,
                "no footer in {:?}",
                pair[1]
            );
            assert_eq!(dark_pixels(&rgb, width, 0..8), 0);
        }
        let svg = std::fs::read_to_string(&written[4]).unwrap();
        for label in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(
                svg.contains(&svg_text(label)),
                "{label} not on the percentile axis"
            );
        }
    }

    #[test]
    fn nothing_to_draw_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("charts");
        let mut report = super::super::tests::sample_report();
        report.series.clear();
        assert!(report.plot(&out).unwrap().is_empty());
        assert!(!out.exists());
    }

    #[test]
    fn degenerate_series_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = super::super::tests::sample_report();
        report.series.clear();
        let mut one = Series::new("odd", "one point", "x", "y");
        one.push(3.0, 3.0);
        let mut flat = Series::new("odd", "flat", "x", "y");
        flat.push(3.0, 0.0);
        flat.push(3.0, 0.0);
        flat.push(f64::NAN, f64::INFINITY);
        let empty = Series::new("odd", "empty", "x", "y");
        report.series(one).series(flat).series(empty);
        let written = report.plot(dir.path()).unwrap();
        assert_eq!(written.len(), 2);
        assert!(
            std::fs::read_to_string(&written[0])
                .unwrap()
                .contains(&svg_text("one point"))
        );
    }

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0), Some(0.0));
        assert!((nines(90.0).unwrap() - 1.0).abs() < 1e-12);
        assert!((nines(99.9).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), None);
        let labels: Vec<String> = (0..=5).map(|n| nines_label(f64::from(n))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn percentile_chart_reaches_the_finest_percentile() {
        let report = report_with_everything();
        let charts = charts(&report);
        let chart = charts.last().unwrap();
        // 100,000 values: the finest percentile below 100% is 99.999%, 5 nines.
        assert_eq!(chart.x_axis, XAxis::PercentileNines(5));
        for line in &chart.lines {
            let last = line.points.last().unwrap();
            assert_eq!(last.0, 5.0, "the maximum sits at the right edge");
            assert!(line.points.iter().all(|p| (0.0..=5.0).contains(&p.0)));
        }
        assert_eq!(
            chart.lines[1].points.last().unwrap().1,
            report.distributions[1].max
        );
    }

    #[test]
    fn round_ticks() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(420_000.0), 500_000.0);
        assert_eq!(ticks(0.3, 2.0, 0.5), [0.5, 1.0, 1.5, 2.0]);
        assert_eq!(tick_label(2.5e6, 5e5, 5e6), "2.5 M");
        assert_eq!(tick_label(300.0, 100.0, 800.0), "300");
        assert_eq!(tick_label(0.25, 0.05, 1.0), "0.25");
        assert_eq!(tick_label(1e-12, 1e6, 5e6), "0");
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("nexmark q5 latency (µs) over time"),
            "nexmark-q5-latency-us-over-time"
        );
        assert_eq!(slug("  P=2 / P=1  "), "p-2-p-1");
        assert_eq!(slug("–"), "chart");
    }

    #[test]
    fn charts_with_the_same_slug_do_not_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = super::super::tests::sample_report();
        report.series.clear();
        for chart in ["rate (a)", "rate a"] {
            let mut s = Series::new(chart, "x", "x", "y");
            s.push(0.0, 1.0);
            s.push(1.0, 2.0);
            report.series(s);
        }
        let written = report.plot(dir.path()).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(
            names,
            [
                "nexmark-rate-a.svg",
                "nexmark-rate-a.png",
                "nexmark-rate-a-2.svg",
                "nexmark-rate-a-2.png"
            ]
        );
    }
}
