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

/// A campaign's effect with its interval in words: "+4,633 (95% interval 2,998 to 7,820)", or "could not be told
/// apart from zero (...)" when the interval spans zero. `level` is the interval's level (0.95), when known.
pub fn effect_words(effect: f64, lo: f64, hi: f64, level: Option<f64>) -> String {
    let level = level.map(|l| format!("{:.0}%", l * 100.0)).unwrap_or_else(|| "95%".into());
    if lo <= 0.0 && hi >= 0.0 {
        format!("could not be told apart from zero ({level} interval {} to {})", thousands(lo), thousands(hi))
    } else {
        format!(
            "{}{} ({level} interval {} to {})",
            if effect >= 0.0 { "+" } else { "" },
            thousands(effect),
            thousands(lo),
            thousands(hi)
        )
    }
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
