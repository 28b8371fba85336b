//! Charts as self-contained SVG (no script, no fonts fetched): lines over time with an optional interval band, and
//! horizontal bars. The dashboard inlines them; the digest will rasterise the same drawings.

use std::fmt::Write as _;

/// One line: its name (for the legend), colour, and a value per x position (missing values break the line).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub values: Vec<Option<f64>>,
    /// Draw dashed (a counterfactual, a comparison).
    pub dashed: bool,
}

/// A shaded band between two series (an interval), drawn under the lines.
#[derive(Debug, Clone)]
pub struct Band {
    pub lo: Vec<Option<f64>>,
    pub hi: Vec<Option<f64>>,
    pub colour: &'static str,
}

pub const BLUE: &str = "#1f5fa8";
pub const ORANGE: &str = "#d9822b";
pub const GREY: &str = "#7a7a7a";
pub const GREEN: &str = "#2e8540";

/// Escapes text for SVG and HTML: askama's HTML escaper, the one the dashboard's and digests' templates use, so
/// text is escaped one way everywhere (`&`, `<`, `>`, `"` and `'` as numeric character references).
pub fn escape(s: &str) -> String {
    use askama::filters::Escaper as _;
    let mut out = String::with_capacity(s.len());
    // Writing to a String cannot fail.
    let _ = askama::filters::Html.write_escaped_str(&mut out, s);
    out
}

/// A short number for an axis: 12, 3.4k, 1.2M.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart `width`×`height` with x labels (every few shown), a y axis from 0 (or the lowest value if negative),
/// a legend, and `title` as its accessible name.
pub fn lines(
    title: &str,
    x_labels: &[String],
    series: &[Series],
    band: Option<&Band>,
    width: u32,
    height: u32,
) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let (left, right, top, bottom) = (56.0, 12.0, 28.0, 34.0);
    let n = x_labels.len().max(1);
    let all = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(band.into_iter().flat_map(|b| b.lo.iter().chain(&b.hi).flatten().copied()));
    let (mut lo, mut hi) = all.fold((0.0f64, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if hi <= lo {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.05;
    if lo < 0.0 {
        lo -= (hi - lo) * 0.05;
    }
    let x = |i: usize| left + (w - left - right) * if n == 1 { 0.5 } else { i as f64 / (n - 1) as f64 };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><title>{}</title>"#,
        escape(title)
    );
    // Grid and y labels.
    for k in 0..=4 {
        let v = lo + (hi - lo) * f64::from(k) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            w - right,
            left - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    if lo < 0.0 {
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
            w - right,
            y(0.0),
            y(0.0)
        );
    }
    // X labels: about eight of them.
    let step = n.div_ceil(8).max(1);
    // The last label too, unless it would run into the one before it.
    let last_fits = (n - 1).is_multiple_of(step) || (n - 1) % step > step / 2;
    for (i, label) in x_labels.iter().enumerate().filter(|(i, _)| i % step == 0 || (*i == n - 1 && last_fits)) {
        // The last label ends at its point, so it is not cut off at the chart's edge.
        let anchor = if i == n - 1 && n > 1 { "end" } else { "middle" };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="#555">{}</text>"##,
            x(i),
            h - 12.0,
            escape(label)
        );
    }
    if let Some(b) = band {
        let upper: Vec<(usize, f64)> = b.hi.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
        let lower: Vec<(usize, f64)> = b.lo.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
        if !upper.is_empty() && !lower.is_empty() {
            let mut d = String::new();
            for (k, (i, v)) in upper.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1} ", if k == 0 { "M" } else { "L" }, x(*i), y(*v));
            }
            for (i, v) in lower.iter().rev() {
                let _ = write!(d, "L{:.1},{:.1} ", x(*i), y(*v));
            }
            let _ =
                write!(svg, r#"<path class="band" d="{d}Z" fill="{}" fill-opacity="0.18" stroke="none"/>"#, b.colour);
        }
    }
    for s in series {
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in s.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(d, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(i), y(*v));
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if d.is_empty() {
            continue;
        }
        let dash = if s.dashed { r#" stroke-dasharray="5 4""# } else { "" };
        let _ = write!(
            svg,
            r#"<path class="series" d="{d}" fill="none" stroke="{}" stroke-width="2"{dash}><title>{}</title></path>"#,
            s.colour,
            escape(&s.name)
        );
        if s.values.iter().flatten().count() == 1 {
            let (i, v) = s.values.iter().enumerate().find_map(|(i, v)| v.map(|v| (i, v))).unwrap_or((0, 0.0));
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#, x(i), y(v), s.colour);
        }
    }
    // Legend.
    let mut lx = left;
    for s in series {
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="8" width="12" height="4" fill="{}"/><text x="{:.1}" y="14" fill="#333">{}</text>"##,
            s.colour,
            lx + 16.0,
            escape(&s.name)
        );
        lx += 16.0 + 7.0 * s.name.chars().count() as f64 + 18.0;
    }
    svg.push_str("</svg>");
    svg
}

/// A row's label, its end at `x`.
fn row_label(svg: &mut String, x: f64, y: f64, label: &str) {
    let _ = write!(svg, r##"<text x="{x:.1}" y="{y:.1}" text-anchor="end" fill="#333">{}</text>"##, escape(label));
}

/// Horizontal bars, one per label, with the value written at the end of each bar.
pub fn bars(
    title: &str,
    rows: &[(String, Option<f64>)],
    colour: &str,
    width: u32,
    format: &dyn Fn(f64) -> String,
) -> String {
    let row_h = 22.0;
    // Labels as wide as the longest needs (about 6 px a character at 11 px), at most 40% of the chart; longer ones
    // are shortened with an ellipsis (the full text is in the bar's tooltip).
    let max_chars = ((f64::from(width) * 0.4 - 10.0) / 6.0).floor().max(8.0) as usize;
    let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).min(max_chars);
    let label_w = (longest as f64 * 6.0 + 12.0).max(60.0);
    let shown = |label: &str| -> String {
        if label.chars().count() <= max_chars {
            label.to_owned()
        } else {
            format!("{}…", label.chars().take(max_chars - 1).collect::<String>())
        }
    };
    let h = 12.0 + row_h * rows.len().max(1) as f64;
    let w = f64::from(width);
    let max = rows.iter().filter_map(|r| r.1).fold(0.0f64, f64::max).max(f64::MIN_POSITIVE);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {h:.0}" width="{width}" height="{h:.0}" font-family="sans-serif" font-size="11"><title>{}</title>"#,
        escape(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let yy = 6.0 + row_h * i as f64;
        row_label(&mut svg, label_w - 6.0, yy + 14.0, &shown(label));
        match v {
            Some(v) => {
                let bw = ((w - label_w - 70.0) * (v.max(0.0) / max)).max(1.0);
                let _ = write!(
                    svg,
                    r##"<rect class="bar" x="{label_w}" y="{yy:.1}" width="{bw:.1}" height="{:.1}" fill="{colour}"><title>{}: {}</title></rect><text x="{:.1}" y="{:.1}" fill="#333">{}</text>"##,
                    row_h - 6.0,
                    escape(label),
                    format(*v),
                    label_w + bw + 4.0,
                    yy + 14.0,
                    format(*v)
                );
            }
            None => {
                let _ = write!(svg, r##"<text x="{label_w}" y="{:.1}" fill="#888">n/a</text>"##, yy + 14.0);
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A row of [`relative_intervals`]: (estimate, low, high), or why there is no interval.
pub type RelativeRow = Result<(f64, f64, f64), String>;

/// Estimates relative to an average (1), one row per label: a dot at the estimate, its interval as a whisker, the
/// average as a dashed line, the numbers written; a row without an interval says why (its `Err`).
pub fn relative_intervals(title: &str, rows: &[(String, RelativeRow)], width: u32) -> String {
    let row_h = 22.0;
    let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0).min(60);
    let label_w = (longest as f64 * 6.0 + 12.0).max(60.0);
    let h = 30.0 + row_h * rows.len().max(1) as f64;
    let w = f64::from(width);
    let (mut lo, mut hi) = (1.0f64, 1.0f64);
    for (_, e) in rows.iter() {
        if let Ok((v, l, u)) = e {
            lo = lo.min(*l).min(*v);
            hi = hi.max(*u).max(*v);
        }
    }
    let pad = ((hi - lo) * 0.08).max(0.05);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
    let right = w - 110.0;
    let x = |v: f64| label_w + (right - label_w) * (v - lo) / (hi - lo);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {h:.0}" width="{width}" height="{h:.0}" font-family="sans-serif" font-size="11"><title>{}</title><line x1="{:.1}" x2="{:.1}" y1="4" y2="{:.1}" stroke="#999" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#777">average</text>"##,
        escape(title),
        x(1.0),
        x(1.0),
        h - 20.0,
        x(1.0),
        h - 6.0,
    );
    for (i, (label, e)) in rows.iter().enumerate() {
        let yy = 6.0 + row_h * i as f64;
        row_label(&mut svg, label_w - 6.0, yy + 14.0, label);
        match e {
            Ok((v, l, u)) => {
                let colour = if *l > 1.0 {
                    GREEN
                } else if *u < 1.0 {
                    ORANGE
                } else {
                    GREY
                };
                let _ = write!(
                    svg,
                    r##"<line class="interval" x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"><title>{}: {:.2} ({:.2} to {:.2})</title></line><circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="#333">{:.2} ({:.2}–{:.2})</text>"##,
                    x(*l),
                    x(*u),
                    yy + 10.0,
                    yy + 10.0,
                    escape(label),
                    v,
                    l,
                    u,
                    x(*v),
                    yy + 10.0,
                    right + 8.0,
                    yy + 14.0,
                    v,
                    l,
                    u
                );
            }
            Err(why) => {
                let _ = write!(svg, r##"<text x="{label_w}" y="{:.1}" fill="#888">{}</text>"##, yy + 14.0, escape(why));
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Points on log-log axes (x and y above 0), each with a tooltip, and a fitted line y = exp(a) x^b when given.
pub fn log_scatter(
    title: &str,
    x_name: &str,
    y_name: &str,
    points: &[(String, f64, f64)],
    fit: Option<(f64, f64)>,
    width: u32,
    height: u32,
) -> String {
    let (w, h) = (f64::from(width), f64::from(height));
    let pts: Vec<&(String, f64, f64)> = points.iter().filter(|p| p.1 > 0.0 && p.2 > 0.0).collect();
    let range = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |a, x| (a.0.min(x.ln()), a.1.max(x.ln())));
        if lo.is_finite() { (lo - 0.1, hi.max(lo + 0.2) + 0.1) } else { (0.0, 1.0) }
    };
    let (x0, x1) = range(&mut pts.iter().map(|p| p.1));
    let (y0, y1) = range(&mut pts.iter().map(|p| p.2));
    let (left, bottom) = (50.0, h - 34.0);
    let px = |lx: f64| left + (w - left - 12.0) * (lx - x0) / (x1 - x0);
    let py = |ly: f64| bottom - (bottom - 10.0) * (ly - y0) / (y1 - y0);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><title>{}</title><line x1="{left}" x2="{:.1}" y1="{bottom}" y2="{bottom}" stroke="#999"/><line x1="{left}" x2="{left}" y1="10" y2="{bottom}" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{} (log scale)</text><text x="12" y="{:.1}" fill="#555" transform="rotate(-90 12 {:.1})" text-anchor="middle">{} (log scale)</text>"##,
        escape(title),
        w - 12.0,
        (left + w) / 2.0,
        h - 6.0,
        escape(x_name),
        bottom / 2.0,
        bottom / 2.0,
        escape(y_name),
    );
    for (v, at) in [(x0.exp(), px(x0)), (x1.exp(), px(x1))] {
        let _ = write!(
            svg,
            r##"<text x="{at:.1}" y="{:.1}" text-anchor="middle" fill="#777">{}</text>"##,
            bottom + 13.0,
            short(v)
        );
    }
    for (v, at) in [(y0.exp(), py(y0)), (y1.exp(), py(y1))] {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{at:.1}" text-anchor="end" fill="#777">{}</text>"##,
            left - 4.0,
            short(v)
        );
    }
    if let Some((a, b)) = fit {
        // Clipped to the plot: where the line leaves the y range, it ends there.
        let end = |lx: f64| {
            let ly = a + b * lx;
            let edge = if ly < y0 {
                Some(y0)
            } else if ly > y1 {
                Some(y1)
            } else {
                None
            };
            match edge {
                Some(e) if b.abs() > 1e-12 => (((e - a) / b).clamp(x0, x1), e),
                _ => (lx, ly.clamp(y0, y1)),
            }
        };
        let ((ax, ay), (bx, by)) = (end(x0), end(x1));
        let _ = write!(
            svg,
            r##"<line class="fit" x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{ORANGE}" stroke-width="2" stroke-dasharray="5 3"/>"##,
            px(ax),
            px(bx),
            py(ay),
            py(by)
        );
    }
    for (label, x, y) in pts {
        let _ = write!(
            svg,
            r##"<circle class="point" cx="{:.1}" cy="{:.1}" r="4" fill="{BLUE}" fill-opacity="0.7"><title>{}: {} and {}</title></circle>"##,
            px(x.ln()),
            py(y.ln()),
            escape(label),
            short(*x),
            short(*y)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// An estimate with its interval against zero: `|---●---|` drawn to scale, zero marked, numbers written.
pub fn interval(title: &str, effect: f64, lo: f64, hi: f64, width: u32) -> String {
    let (w, h) = (f64::from(width), 46.0);
    let span = lo.abs().max(hi.abs()).max(effect.abs()).max(1.0) * 1.1;
    let x = |v: f64| 20.0 + (w - 40.0) * (v + span) / (2.0 * span);
    let colour = if lo > 0.0 || hi < 0.0 { GREEN } else { GREY };
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {h}" width="{width}" height="{h}" font-family="sans-serif" font-size="11"><title>{}</title><line x1="{:.1}" x2="{:.1}" y1="4" y2="30" stroke="#999" stroke-dasharray="2 2"/><text x="{:.1}" y="42" text-anchor="middle" fill="#777">0</text><line class="interval" x1="{:.1}" x2="{:.1}" y1="17" y2="17" stroke="{colour}" stroke-width="3"/><line x1="{:.1}" x2="{:.1}" y1="10" y2="24" stroke="{colour}" stroke-width="2"/><line x1="{:.1}" x2="{:.1}" y1="10" y2="24" stroke="{colour}" stroke-width="2"/><circle cx="{:.1}" cy="17" r="5" fill="{colour}"/><text x="{:.1}" y="42" text-anchor="middle" fill="#333">{}</text><text x="{:.1}" y="42" text-anchor="middle" fill="#333">{}</text></svg>"##,
        escape(title),
        x(0.0),
        x(0.0),
        x(0.0),
        x(lo),
        x(hi),
        x(lo),
        x(lo),
        x(hi),
        x(hi),
        x(effect),
        x(lo),
        short(lo),
        x(hi),
        short(hi),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_draws_its_series_and_escapes_labels() {
        let svg = lines(
            "reach <weekly>",
            &["2018-01-07".into(), "2018-01-14".into(), "2018-01-21".into()],
            &[Series {
                name: "reach & more".into(),
                colour: BLUE,
                values: vec![Some(1.0), None, Some(3.0)],
                dashed: false,
            }],
            Some(&Band { lo: vec![Some(0.5); 3], hi: vec![Some(4.0); 3], colour: GREY }),
            600,
            200,
        );
        assert!(svg.contains("reach &#60;weekly&#62;") && svg.contains("reach &#38; more"), "{svg}");
        assert!(!svg.contains("<weekly>") && !svg.contains("reach & more"));
        // The gap breaks the line into two moves.
        assert_eq!(svg.matches(" M").count() + svg.matches("\"M").count(), 3, "{svg}");
        assert!(svg.contains("class=\"band\""));
    }

    #[test]
    fn relative_intervals_mark_the_average_and_say_too_few() {
        let svg = relative_intervals(
            "by <hour>",
            &[
                ("09:00".into(), Ok((1.3, 1.2, 1.4))),
                ("16:00".into(), Ok((0.8, 0.7, 0.9))),
                ("03:00".into(), Err("fewer than 20 <posts>".into())),
            ],
            600,
        );
        assert_eq!(svg.matches("class=\"interval\"").count(), 2);
        assert!(svg.contains(GREEN) && svg.contains(ORANGE) && svg.contains("fewer than 20 &#60;posts&#62;"));
        assert!(svg.contains("by &#60;hour&#62;") && svg.contains("average"));
        let s = log_scatter(
            "c",
            "posts",
            "engaged",
            &[("<a>".into(), 1.0, 2.0), ("b".into(), 0.0, 1.0)],
            Some((0.0, 1.0)),
            400,
            300,
        );
        assert_eq!(s.matches("class=\"point\"").count(), 1, "a point at 0 cannot be drawn on a log scale");
        assert!(s.contains("&#60;a&#62;") && s.contains("class=\"fit\""));
        assert!(s.contains(">posts (log scale)</text>") && s.contains(">engaged (log scale)</text>"), "{s}");
    }

    #[test]
    fn bars_scale_to_the_largest_and_say_na() {
        let svg =
            bars("t", &[("a".into(), Some(10.0)), ("b".into(), Some(5.0)), ("c".into(), None)], BLUE, 400, &short);
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
        assert!(svg.contains("n/a"));
        let long = "Burslem Bridge Medical Centre and a very long name indeed".to_owned();
        let svg = bars("t", &[(long.clone(), Some(1.0))], BLUE, 300, &short);
        assert!(svg.contains("…") && svg.contains(&long), "shortened on the axis, whole in the tooltip");
    }
}
