//! Charts drawn with plotters: SVG by default (text as `<text>`, so the browser's fonts show
//! it), PNG on request. Text metrics and PNG glyphs come from the bundled DejaVu Sans, so no
//! system font (fontconfig) is needed.

use crate::display::{DisplayHandle, MimeBundle, Png, RichDisplay, Svg};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::time::{Duration, Instant};

static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            // The bundled file is a valid font; a failure would only lose text, not the chart.
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// Why a chart could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotError(pub String);

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot draw the chart: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// matplotlib's tab10, so curves look familiar.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Something drawable on any plotters backend, at a size.
trait Chart {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>;
    fn describe(&self) -> String;

    fn svg(&self) -> Result<String, PlotError> {
        register_fonts();
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size()).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            self.draw(&root)?;
            root.present().map_err(err)?;
        }
        Ok(out)
    }

    fn png(&self) -> Result<Png, PlotError> {
        register_fonts();
        let (w, h) = self.size();
        let mut rgb = vec![255u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(err)?;
        }
        encode_png(&rgb, w, h, png::ColorType::Rgb).map(Png)
    }

    fn bundle(&self) -> MimeBundle {
        match self.svg() {
            Ok(svg) => MimeBundle::new()
                .with("text/plain", self.describe())
                .with("image/svg+xml", svg),
            Err(e) => MimeBundle::new().with("text/plain", e.to_string()),
        }
    }
}

pub(crate) fn encode_png(
    pixels: &[u8],
    w: u32,
    h: u32,
    color: png::ColorType,
) -> Result<Vec<u8>, PlotError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(pixels).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

/// `lo..hi` covering `values` with a margin; a single value gets a unit-wide range.
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return lo - 0.5..hi + 0.5;
    }
    let pad = (hi - lo) * 0.05;
    lo - pad..hi + pad
}

type XyChart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The common frame of the x/y charts: title, margins, label areas.
fn xy_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    xs: std::ops::Range<f64>,
    ys: std::ops::Range<f64>,
) -> Result<XyChart<'a, DB>, PlotError> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)
        .map_err(err)
}

fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut XyChart<'a, DB>) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

macro_rules! chart_api {
    ($t:ty) => {
        impl $t {
            /// The chart as an SVG document.
            pub fn to_svg(&self) -> Result<Svg, PlotError> {
                Chart::svg(self).map(Svg)
            }

            /// The chart as a PNG image (drawn with the bundled font).
            pub fn to_png(&self) -> Result<Png, PlotError> {
                Chart::png(self)
            }

            /// Pixel size (default 640x400).
            pub fn size(mut self, width: u32, height: u32) -> Self {
                self.size = (width.max(50), height.max(50));
                self
            }

            /// A title above the chart.
            pub fn title(mut self, title: impl Into<String>) -> Self {
                self.title = title.into();
                self
            }
        }

        impl RichDisplay for $t {
            fn mime_bundle(&self) -> MimeBundle {
                self.bundle()
            }
        }
    };
}

/// Line chart of one or more series, e.g. loss and accuracy curves.
///
/// ```ignore
/// LinePlot::new().title("loss").x_label("epoch").series("train", &train).series("val", &val)
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    title: String,
    x_label: String,
    y_label: String,
    size: (u32, u32),
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Default for LinePlot {
    fn default() -> Self {
        LinePlot::new()
    }
}

impl LinePlot {
    pub fn new() -> LinePlot {
        LinePlot {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            size: (640, 400),
            series: Vec::new(),
        }
    }

    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// A series over x = 0, 1, 2, ...
    pub fn series<V: Copy + Into<f64>>(self, name: impl Into<String>, ys: &[V]) -> Self {
        let points = ys
            .iter()
            .enumerate()
            .map(|(i, y)| (i as f64, (*y).into()))
            .collect();
        self.series_xy(name, points)
    }

    /// A series of (x, y) points.
    pub fn series_xy(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push((name.into(), points));
        self
    }

    /// Appends a point to the named series (created if new).
    pub fn push(&mut self, name: &str, x: f64, y: f64) {
        match self.series.iter_mut().find(|(n, _)| n == name) {
            Some((_, points)) => points.push((x, y)),
            None => self.series.push((name.to_owned(), vec![(x, y)])),
        }
    }

    /// The points of a series.
    pub fn points(&self, name: &str) -> Option<&[(f64, f64)]> {
        self.series
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_slice())
    }
}

impl Chart for LinePlot {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .series
            .iter()
            .map(|(n, p)| format!("{n} ({} points)", p.len()))
            .collect();
        format!("<LinePlot {}: {}>", self.title, names.join(", "))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let all = || self.series.iter().flat_map(|(_, p)| p.iter());
        let xs = padded_range(all().map(|p| p.0));
        let ys = padded_range(all().map(|p| p.1));
        let mut chart = xy_chart(root, &self.title, xs, ys)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let c = color(i);
            let finite: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(finite, c.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        if self.series.iter().any(|(n, _)| !n.is_empty()) {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}

chart_api!(LinePlot);

/// Scatter plot; points may carry a class, each class gets a colour and a legend entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ScatterPlot {
    title: String,
    size: (u32, u32),
    points: Vec<(f64, f64, usize)>,
    classes: Vec<String>,
}

impl ScatterPlot {
    /// Points of one class.
    pub fn new<X: Copy + Into<f64>, Y: Copy + Into<f64>>(xs: &[X], ys: &[Y]) -> ScatterPlot {
        let points = xs
            .iter()
            .zip(ys)
            .map(|(x, y)| ((*x).into(), (*y).into(), 0))
            .collect();
        ScatterPlot {
            title: String::new(),
            size: (640, 400),
            points,
            classes: Vec::new(),
        }
    }

    /// Points coloured by class (`labels[i]` indexes `class_names`).
    pub fn with_classes(mut self, labels: &[usize], class_names: &[&str]) -> Self {
        for (p, l) in self.points.iter_mut().zip(labels) {
            p.2 = *l;
        }
        self.classes = class_names.iter().map(|s| s.to_string()).collect();
        self
    }
}

impl Chart for ScatterPlot {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn describe(&self) -> String {
        format!("<ScatterPlot {}: {} points>", self.title, self.points.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let xs = padded_range(self.points.iter().map(|p| p.0));
        let ys = padded_range(self.points.iter().map(|p| p.1));
        let mut chart = xy_chart(root, &self.title, xs, ys)?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        let n_classes = self.points.iter().map(|p| p.2 + 1).max().unwrap_or(0);
        for class in 0..n_classes {
            let c = color(class);
            let series = chart
                .draw_series(
                    self.points
                        .iter()
                        .filter(|p| p.2 == class && p.0.is_finite() && p.1.is_finite())
                        .map(|p| Circle::new((p.0, p.1), 3, c.filled())),
                )
                .map_err(err)?;
            if let Some(name) = self.classes.get(class) {
                series
                    .label(name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
            }
        }
        if !self.classes.is_empty() {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}

chart_api!(ScatterPlot);

/// Histogram of values in equal-width bins.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    title: String,
    size: (u32, u32),
    values: Vec<f64>,
    bins: usize,
}

impl Histogram {
    pub fn new<V: Copy + Into<f64>>(values: &[V], bins: usize) -> Histogram {
        Histogram {
            title: String::new(),
            size: (640, 400),
            values: values.iter().map(|v| (*v).into()).collect(),
            bins: bins.max(1),
        }
    }

    /// (bin start, bin end, count) for each bin; non-finite values are left out.
    pub fn counts(&self) -> Vec<(f64, f64, usize)> {
        let finite: Vec<f64> = self
            .values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if finite.is_empty() {
            return Vec::new();
        }
        let (lo, hi) = if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        };
        let width = (hi - lo) / self.bins as f64;
        let mut counts = vec![0usize; self.bins];
        for v in finite {
            let i = (((v - lo) / width) as usize).min(self.bins - 1);
            counts[i] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| (lo + i as f64 * width, lo + (i + 1) as f64 * width, c))
            .collect()
    }
}

impl Chart for Histogram {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn describe(&self) -> String {
        format!(
            "<Histogram {}: {} values, {} bins>",
            self.title,
            self.values.len(),
            self.bins
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let counts = self.counts();
        let xs = match (counts.first(), counts.last()) {
            (Some(first), Some(last)) => first.0..last.1,
            _ => 0.0..1.0,
        };
        let top = counts.iter().map(|c| c.2).max().unwrap_or(1).max(1) as f64 * 1.05;
        let mut chart = xy_chart(root, &self.title, xs, 0.0..top)?;
        chart
            .configure_mesh()
            .y_desc("count")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        let c = color(0);
        chart
            .draw_series(
                counts.iter().map(|&(a, b, n)| {
                    Rectangle::new([(a, 0.0), (b, n as f64)], c.mix(0.8).filled())
                }),
            )
            .map_err(err)?;
        Ok(())
    }
}

chart_api!(Histogram);

/// Confusion matrix as a heat map with counts: rows are true classes, columns predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    title: String,
    size: (u32, u32),
    counts: Vec<Vec<u64>>,
    labels: Vec<String>,
}

impl ConfusionMatrix {
    /// Counts (true class, predicted class) pairs; classes are `0..n_classes`.
    pub fn from_predictions(
        targets: &[i64],
        predictions: &[i64],
        n_classes: usize,
    ) -> ConfusionMatrix {
        let mut counts = vec![vec![0u64; n_classes]; n_classes];
        for (&t, &p) in targets.iter().zip(predictions) {
            if let (Ok(t), Ok(p)) = (usize::try_from(t), usize::try_from(p))
                && t < n_classes
                && p < n_classes
            {
                counts[t][p] += 1;
            }
        }
        ConfusionMatrix::new(counts)
    }

    /// From a square matrix of counts.
    pub fn new(counts: Vec<Vec<u64>>) -> ConfusionMatrix {
        let labels = (0..counts.len()).map(|i| i.to_string()).collect();
        ConfusionMatrix {
            title: String::new(),
            size: (520, 480),
            counts,
            labels,
        }
    }

    pub fn labels(mut self, labels: &[&str]) -> Self {
        self.labels = labels.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// The fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().flatten().sum();
        let right: u64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, row)| row.get(i).copied().unwrap_or(0))
            .sum();
        if total == 0 {
            0.0
        } else {
            right as f64 / total as f64
        }
    }
}

impl Chart for ConfusionMatrix {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn describe(&self) -> String {
        let rows: Vec<String> = self.counts.iter().map(|r| format!("{r:?}")).collect();
        format!(
            "<ConfusionMatrix {} accuracy {:.4}>\n{}",
            self.title,
            self.accuracy(),
            rows.join("\n")
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let n = self.counts.len().max(1);
        let max = self
            .counts
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        // The chart only lays out the caption and the plotting area; cells and labels are drawn
        // in pixels, so labels sit exactly at the centre of their row or column.
        let chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .margin_left(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0..n as i32, 0..n as i32)
            .map_err(err)?;
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (cw, ch) = (
            (xs.end - xs.start) as f64 / n as f64,
            (ys.end - ys.start) as f64 / n as f64,
        );
        let count_font = ("sans-serif", (ch.min(cw) * 0.3).clamp(9.0, 18.0)).into_font();
        let label_font = ("sans-serif", 13).into_font();
        let text = |s: &str, center: (i32, i32), style: TextStyle| -> Result<(), PlotError> {
            let (tw, th) = root.estimate_text_size(s, &style).map_err(err)?;
            root.draw(&plotters::element::Text::new(
                s.to_owned(),
                (center.0 - tw as i32 / 2, center.1 - th as i32 / 2),
                style,
            ))
            .map_err(err)
        };
        for (i, row) in self.counts.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                let t = count as f64 / max;
                // White to dark blue, like matplotlib's "Blues".
                let fill = RGBColor(
                    (247.0 - t * 239.0) as u8,
                    (251.0 - t * 203.0) as u8,
                    (255.0 - t * 148.0) as u8,
                );
                let (x0, y0) = (
                    xs.start + (j as f64 * cw) as i32,
                    ys.start + (i as f64 * ch) as i32,
                );
                let (x1, y1) = (
                    xs.start + ((j + 1) as f64 * cw) as i32,
                    ys.start + ((i + 1) as f64 * ch) as i32,
                );
                root.draw(&Rectangle::new([(x0, y0), (x1, y1)], fill.filled()))
                    .map_err(err)?;
                let colour = if t > 0.5 { WHITE } else { BLACK };
                text(
                    &count.to_string(),
                    ((x0 + x1) / 2, (y0 + y1) / 2),
                    count_font.clone().color(&colour),
                )?;
            }
        }
        let label_style = label_font.color(&BLACK);
        for (k, name) in self.labels.iter().enumerate().take(n) {
            let centre = (k as f64 + 0.5) * cw;
            text(
                name,
                (xs.start + centre as i32, ys.end + 12),
                label_style.clone(),
            )?;
            let middle = ys.start + ((k as f64 + 0.5) * ch) as i32;
            let (tw, _) = root.estimate_text_size(name, &label_style).map_err(err)?;
            text(
                name,
                (xs.start - 8 - tw as i32 / 2, middle),
                label_style.clone(),
            )?;
        }
        text(
            "predicted",
            ((xs.start + xs.end) / 2, ys.end + 34),
            label_style.clone(),
        )?;
        text("true", (xs.start - 40, ys.start - 12), label_style)?;
        Ok(())
    }
}

chart_api!(ConfusionMatrix);

/// A line chart that redraws in place as points arrive (`update_display_data`), at most four
/// times a second, e.g. the loss during training. Dropping it draws the final state.
pub struct LiveChart {
    plot: LinePlot,
    handle: DisplayHandle,
    shown: bool,
    last_draw: Option<Instant>,
    interval: Duration,
    dirty: bool,
}

impl LiveChart {
    pub fn new(title: impl Into<String>) -> LiveChart {
        LiveChart {
            plot: LinePlot::new().title(title),
            handle: DisplayHandle::new(),
            shown: false,
            last_draw: None,
            interval: Duration::from_millis(250),
            dirty: false,
        }
    }

    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.plot.x_label = label.into();
        self
    }

    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.plot.y_label = label.into();
        self
    }

    /// The shortest time between two redraws.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Adds a point and redraws if the last redraw is old enough.
    pub fn push(&mut self, series: &str, x: f64, y: f64) {
        self.plot.push(series, x, y);
        self.dirty = true;
        let now = Instant::now();
        if self.last_draw.is_none_or(|t| now - t >= self.interval) {
            self.redraw();
        }
    }

    /// Draws the current state now.
    pub fn redraw(&mut self) {
        if self.shown {
            self.handle.update(&self.plot);
        } else {
            self.handle.display(&self.plot);
            self.shown = true;
        }
        self.last_draw = Some(Instant::now());
        self.dirty = false;
    }

    /// The chart so far (to save or show elsewhere).
    pub fn plot(&self) -> &LinePlot {
        &self.plot
    }

    pub fn handle(&self) -> &DisplayHandle {
        &self.handle
    }
}

impl Drop for LiveChart {
    fn drop(&mut self) {
        if self.dirty {
            self.redraw();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_plot_svg_is_a_document_with_text_and_paths() {
        let svg = LinePlot::new()
            .title("loss")
            .x_label("epoch")
            .series("train", &[3.0, 2.0, 1.5])
            .to_svg()
            .unwrap()
            .0;
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Text stays text (the browser's fonts draw it): plotters writes it on its own line.
        assert!(svg.contains("\nloss\n</text>") && svg.contains("\ntrain\n</text>"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }

    #[test]
    fn png_has_the_asked_size_and_is_not_blank() {
        let png = Histogram::new(&[1.0, 2.0, 2.0, 3.0], 3)
            .title("h")
            .size(300, 200)
            .to_png()
            .unwrap();
        assert_eq!(png.size(), Some((300, 200)));
        let decoder = png::Decoder::new(std::io::Cursor::new(png.0));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert!(buf.iter().any(|&b| b < 200), "nothing was drawn");
    }

    #[test]
    fn every_chart_renders_even_when_degenerate() {
        for svg in [
            LinePlot::new().to_svg(),
            LinePlot::new().series("one", &[1.0f64]).to_svg(),
            LinePlot::new().series("nan", &[f64::NAN, 1.0]).to_svg(),
            ScatterPlot::new(&[1.0, 2.0], &[3.0, 4.0])
                .with_classes(&[0, 1], &["a", "b"])
                .to_svg(),
            Histogram::new::<f64>(&[], 5).to_svg(),
            ConfusionMatrix::from_predictions(&[0, 1, 1, 2], &[0, 1, 2, 2], 3)
                .labels(&["a", "b", "c"])
                .to_svg(),
        ] {
            assert!(svg.unwrap().0.starts_with("<svg"));
        }
    }

    #[test]
    fn histogram_and_confusion_counts() {
        let h = Histogram::new(&[0.0, 0.1, 0.9, 1.0], 2);
        assert_eq!(
            h.counts().iter().map(|c| c.2).collect::<Vec<_>>(),
            vec![2, 2]
        );
        let m = ConfusionMatrix::from_predictions(&[0, 1, 1, 2], &[0, 1, 2, 2], 3);
        assert_eq!(m.counts()[1], vec![0, 1, 1]);
        assert!((m.accuracy() - 0.75).abs() < 1e-12);
    }
}

/// Bars with labels, e.g. images per second per GPU type.
///
/// ```ignore
/// BarChart::new().title("ResNet-9").y_label("images/s").bar("A100", 21000.0).bar("H100", 35000.0)
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    title: String,
    y_label: String,
    size: (u32, u32),
    bars: Vec<(String, f64)>,
}

impl Default for BarChart {
    fn default() -> Self {
        BarChart::new()
    }
}

impl BarChart {
    pub fn new() -> BarChart {
        BarChart {
            title: String::new(),
            y_label: String::new(),
            size: (640, 400),
            bars: Vec::new(),
        }
    }

    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// One bar; non-finite values are drawn as empty.
    pub fn bar(mut self, label: impl Into<String>, value: f64) -> Self {
        self.bars.push((label.into(), value));
        self
    }
}

impl Chart for BarChart {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn describe(&self) -> String {
        format!("<BarChart {}: {} bars>", self.title, self.bars.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError> {
        let n = self.bars.len().max(1) as i32;
        let value = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let top = self.bars.iter().map(|(_, v)| value(*v)).fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
            .map_err(err)?;
        let labels: Vec<String> = self.bars.iter().map(|(l, _)| l.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(&self.y_label)
            .x_labels(labels.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, (_, v)) in self.bars.iter().enumerate() {
            chart
                .draw_series(
                    plotters::series::Histogram::vertical(&chart)
                        .margin(12)
                        .style(color(i).mix(0.85).filled())
                        .data([(i as i32, value(*v))]),
                )
                .map_err(err)?;
        }
        Ok(())
    }
}

chart_api!(BarChart);
