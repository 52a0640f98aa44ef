//! Charts as inline SVG: a line over the last hour, with its latest value
//! and its highest.

use maud::{html, Markup};

use super::samples::WINDOW;

const W: f64 = 240.0;
const H: f64 = 48.0;

/// A line chart of `points` (seconds ago, value), newest on the right,
/// over the time its samples cover (ten seconds at least, an hour at most).
pub fn line(title: &str, unit: &str, points: &[(f64, f64)]) -> Markup {
    let oldest = points.iter().map(|p| p.0).fold(0.0_f64, f64::max);
    let window = oldest.clamp(10.0, WINDOW.as_secs_f64());
    let span = crate::format::secs(Some(window));
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let coords: Vec<String> = points
        .iter()
        .map(|(ago, v)| {
            let x = W * (1.0 - (ago / window).clamp(0.0, 1.0));
            let y = H - H * (v / top).clamp(0.0, 1.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let latest = points.last().map(|p| p.1);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img"
                aria-label=(format!("{title} over the last {span}")) {
                rect x="0" y="0" width=(W) height=(H) class="frame" {}
                @if coords.len() > 1 {
                    polyline points=(coords.join(" ")) class="line" {}
                } @else if let Some(c) = coords.first() {
                    @let (x, y) = c.split_once(',').unwrap_or(("0", "0"));
                    circle cx=(x) cy=(y) r="2" class="dot" {}
                }
            }
            figcaption {
                (title) ": "
                @match latest {
                    Some(v) => { (format!("{v:.1}")) " " (unit) }
                    None => { "no samples yet" }
                }
                " · max " (format!("{max:.1}")) " in " (span)
            }
        }
    }
}
