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

/// A campaign's effect for a reader: in words first, with the lift over what was expected without it, then the figures
/// and what the interval means. `metric` in words ("video views"); `counterfactual` is what was expected.
pub fn campaign_words(
    metric: &str,
    effect: f64,
    lo: f64,
    hi: f64,
    level: Option<f64>,
    counterfactual: Option<f64>,
) -> String {
    let level = level.map(|l| format!("{:.0}%", l * 100.0)).unwrap_or_else(|| "95%".into());
    let range = format!("the true effect lies between {} and {} with {level} confidence", signed(lo), signed(hi));
    let expected = counterfactual.filter(|c| *c > 0.0);
    if lo <= 0.0 && hi >= 0.0 {
        return format!(
            "no clear effect: {metric} were about what was expected without the campaign{} ({range})",
            expected.map(|c| format!(" (about {})", thousands(c))).unwrap_or_default()
        );
    }
    let more = if effect >= 0.0 { "more" } else { "fewer" };
    match expected {
        Some(c) => format!(
            "about {} {metric} {more} than the {} expected without the campaign, a lift of {:+.0}% ({range})",
            thousands(effect.abs()),
            thousands(c),
            effect / c * 100.0
        ),
        None => {
            format!("about {} {metric} {more} than expected without the campaign ({range})", thousands(effect.abs()))
        }
    }
}

fn signed(v: f64) -> String {
    format!("{}{}", if v > 0.0 { "+" } else { "" }, thousands(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_effects_in_words() {
        assert_eq!(
            campaign_words("video views", 4635.0, 3900.0, 5400.0, Some(0.94), Some(1500.0)),
            "about 4,635 video views more than the 1,500 expected without the campaign, a lift of +309% \
             (the true effect lies between +3,900 and +5,400 with 94% confidence)"
        );
        assert!(campaign_words("views", 20.0, -10.0, 50.0, None, Some(400.0)).starts_with("no clear effect"));
    }

    #[test]
    fn numbers_and_pictures() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-999.6), "-1,000");
        assert_eq!(bar(0.5, 4), "██");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0]), "▁▅█");
        assert_eq!(sparkline(&[2.0, 2.0]), "▁▁");
    }
}
