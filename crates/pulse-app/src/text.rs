//! Numbers and pictures for people, returned as strings (a surface decides where they go).

/// 1234567 -> "1,234,567".
pub fn thousands(x: impl Into<f64>) -> String {
    let n = x.into().round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A horizontal bar of `fraction` (0-1) of `width` cells, in eighths.
pub fn bar(fraction: f64, width: usize) -> String {
    let cells = (fraction.clamp(0.0, 1.0) * width as f64 * 8.0).round() as usize;
    let full = cells / 8;
    let part = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"][cells % 8];
    format!("{}{part}", "█".repeat(full))
}

/// A sparkline of a series (what a chart would show, in one line).
pub fn sparkline(values: &[f64]) -> String {
    let ticks = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    values
        .iter()
        .map(|v| if hi > lo { ticks[(((v - lo) / (hi - lo)) * 7.0).round() as usize] } else { ticks[0] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_pictures() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-999.6), "-1,000");
        assert_eq!(bar(0.5, 4), "██");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0]), "▁▅█");
        assert_eq!(sparkline(&[2.0, 2.0]), "▁▁");
    }
}
