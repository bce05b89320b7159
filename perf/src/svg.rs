//! A hand-written SVG latency-percentile plot, in the style of HdrHistogram's plotter.
//!
//! One panel per measured combination (scenario × rate × size), one line per system. The x axis
//! is the percentile on a log(1/(1−p)) scale, so each "nine" gets the same width: ticks at 0 %,
//! 90 %, 99 %, 99.9 %, 99.99 % and 99.999 %. The y axis is latency in µs on a log scale (tails are
//! often 100× the median, which a linear axis would flatten). Lines stop where the sample count
//! stops resolving the percentile and end at the maximum.
//!
//! No plotting crate: the file is a few hundred lines of `<polyline>`, `<line>` and `<text>`.

use std::fmt::Write as _;

/// Nines on the x axis: 0 (0 %) to 5 (99.999 %).
const NINES_MAX: f64 = 5.0;
/// Size of one panel, in SVG user units (px).
const PANEL_WIDTH: f64 = 460.0;
const PANEL_HEIGHT: f64 = 300.0;
/// Margins inside a panel around its plot area (left holds the y labels, bottom the x labels).
const MARGIN_LEFT: f64 = 62.0;
const MARGIN_RIGHT: f64 = 28.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 44.0;
/// Panels per row.
const COLUMNS: usize = 3;
/// Height of the figure title band.
const TITLE_HEIGHT: f64 = 52.0;

/// One system's latency distribution: (percentile 0–100, latency µs) points, in order.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend name (the system).
    pub name: String,
    /// (percentile, µs) points.
    pub points: Vec<(f64, f64)>,
}

/// One combination: a title and a line per system.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Shown above the panel.
    pub title: String,
    /// One per system.
    pub lines: Vec<Line>,
}

/// Line colour of a system (stable across panels and runs).
fn colour(name: &str, index: usize) -> &'static str {
    match name {
        "tachyon" => "#d62728",
        "relay" => "#7f7f7f",
        "nats" => "#1f77b4",
        _ => ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"][index % 4],
    }
}

/// Escapes text for an SVG text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percentile (0–100) → nines (0–5): −log10(1 − p).
fn nines(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(10f64.powf(-NINES_MAX));
    (-remaining.log10()).clamp(0.0, NINES_MAX)
}

/// Renders the whole figure.
pub fn render(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let columns = panels.len().clamp(1, COLUMNS);
    let rows = panels.len().div_ceil(columns).max(1);
    let width = PANEL_WIDTH * columns as f64;
    let height = TITLE_HEIGHT + PANEL_HEIGHT * rows as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>
<text x="12" y="22" font-size="16" font-weight="bold">{}</text>
<text x="12" y="42" font-size="11" fill="#444">{}</text>"##,
        escape(title),
        escape(subtitle)
    );
    if panels.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="12" y="{}" font-size="12">no latency results to plot</text>"#,
            TITLE_HEIGHT + 20.0
        );
    }
    for (index, panel) in panels.iter().enumerate() {
        let x = PANEL_WIDTH * (index % columns) as f64;
        let y = TITLE_HEIGHT + PANEL_HEIGHT * (index / columns) as f64;
        render_panel(&mut svg, panel, x, y);
    }
    svg.push_str("</svg>\n");
    svg
}

/// The y range in decades covering every point of the panel.
fn decades(panel: &Panel) -> (i32, i32) {
    let values = panel
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|&(_, value)| value))
        .filter(|value| *value > 0.0 && value.is_finite());
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    if low > high {
        return (0, 3);
    }
    let bottom = low.log10().floor() as i32;
    let top = (high.log10().ceil() as i32).max(bottom + 1);
    (bottom, top)
}

fn render_panel(svg: &mut String, panel: &Panel, origin_x: f64, origin_y: f64) {
    let left = origin_x + MARGIN_LEFT;
    let right = origin_x + PANEL_WIDTH - MARGIN_RIGHT;
    let top = origin_y + MARGIN_TOP;
    let bottom = origin_y + PANEL_HEIGHT - MARGIN_BOTTOM;
    let (decade_low, decade_high) = decades(panel);
    let to_x = |percentile: f64| left + nines(percentile) / NINES_MAX * (right - left);
    let to_y = |micros: f64| {
        let position = (micros.max(10f64.powi(decade_low)).log10() - f64::from(decade_low))
            / f64::from(decade_high - decade_low);
        bottom - position * (bottom - top)
    };
    let _ = writeln!(svg, r#"<g class="panel">"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
        left,
        origin_y + 18.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333" stroke-width="1"/>"##,
        right - left,
        bottom - top
    );
    // x grid: one line per nine.
    for (nine, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = left + nine as f64 / NINES_MAX * (right - left);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd" stroke-width="1"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{label}</text>"#,
            bottom + 14.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">percentile</text>"#,
        (left + right) / 2.0,
        bottom + 30.0
    );
    // y grid: 1-2-5 steps per decade.
    for decade in decade_low..=decade_high {
        for step in [1.0, 2.0, 5.0] {
            let value = step * 10f64.powi(decade);
            if value > 10f64.powi(decade_high) * 1.0001 {
                continue;
            }
            let y = to_y(value);
            let major = step == 1.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="{}" stroke-width="1"/>"#,
                if major { "#ccc" } else { "#eee" }
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"#,
                left - 4.0,
                y + 3.5,
                format_micros(value)
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">latency (µs, log)</text>"#,
        origin_x + 14.0,
        (top + bottom) / 2.0,
        origin_x + 14.0,
        (top + bottom) / 2.0
    );
    for (index, line) in panel.lines.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|(_, value)| value.is_finite())
            .map(|&(percentile, value)| format!("{:.1},{:.1}", to_x(percentile), to_y(value)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline data-system="{}" fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            escape(&line.name),
            colour(&line.name, index),
            points.join(" ")
        );
    }
    // Legend, top left inside the plot area, on a mostly opaque box above the lines.
    if !panel.lines.is_empty() {
        let longest = panel
            .lines
            .iter()
            .map(|line| line.name.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#999" stroke-width="0.5"/>"##,
            left + 4.0,
            top + 4.0,
            34.0 + 6.5 * longest as f64,
            6.0 + 14.0 * panel.lines.len() as f64
        );
    }
    for (index, line) in panel.lines.iter().enumerate() {
        let legend_y = top + 14.0 + 14.0 * index as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{}" stroke-width="2.5"/>"#,
            left + 8.0,
            left + 26.0,
            colour(&line.name, index)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            left + 30.0,
            legend_y + 3.5,
            escape(&line.name)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// `1`, `20`, `500`, `1k`, `20k`, `1M` (µs labels).
fn format_micros(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{}k", value / 1e3)
    } else if value >= 1.0 {
        format!("{value}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formedness check: every tag closes in order, attributes are quoted, and
    /// text has no raw `<` or `&` outside entities.
    fn assert_well_formed(xml: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for (position, _) in text.match_indices('&') {
                let entity = &text[position..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"]
                        .iter()
                        .any(|known| entity.starts_with(known)),
                    "raw & in text: {text:?}"
                );
            }
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            assert!(!tag.contains('<'), "tag inside a tag: {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes: {tag:?}"
            );
            if tag.starts_with('?') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
                continue;
            }
            let name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap()
                .to_owned();
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert_eq!(roots, 1, "exactly one root element");
    }

    fn curve(scale: f64) -> Vec<(f64, f64)> {
        (0..=60)
            .map(|step| {
                let nines = f64::from(step) / 20.0;
                (
                    100.0 * (1.0 - 10f64.powf(-nines)),
                    scale * (1.0 + nines * nines),
                )
            })
            .collect()
    }

    fn panel(title: &str, systems: &[&str]) -> Panel {
        Panel {
            title: title.to_owned(),
            lines: systems
                .iter()
                .enumerate()
                .map(|(index, name)| Line {
                    name: (*name).to_owned(),
                    points: curve(20.0 * (index + 1) as f64),
                })
                .collect(),
        }
    }

    #[test]
    fn plot_is_well_formed_with_one_polyline_per_system_per_panel() {
        let panels = vec![
            panel("pubsub-1sub 10k msg/s 128 B", &["tachyon", "relay", "nats"]),
            panel("filtered <1000 subs> & 2 %", &["tachyon", "nats"]),
        ];
        let svg = render("Latency by percentile", "kernel 6.x | \"quoted\"", &panels);
        assert_well_formed(&svg);
        assert!(svg.starts_with("<?xml"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        let groups: Vec<&str> = svg.split(r#"<g class="panel">"#).skip(1).collect();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].matches("<polyline").count(), 3);
        assert_eq!(groups[1].matches("<polyline").count(), 2);
        for system in ["tachyon", "relay", "nats"] {
            assert!(groups[0].contains(&format!(r#"data-system="{system}""#)));
        }
        assert!(svg.contains("99.999%"));
        assert!(svg.contains("&lt;1000 subs&gt; &amp; 2 %"));
    }

    #[test]
    fn empty_plot_is_still_well_formed() {
        let svg = render("nothing", "", &[]);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline").count(), 0);
    }

    #[test]
    fn percentiles_map_to_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
    }

    #[test]
    fn decades_cover_every_point() {
        let covered = panel("p", &["tachyon", "relay"]);
        let (low, high) = decades(&covered);
        assert_eq!(low, 1);
        assert_eq!(high, 3);
    }
}
