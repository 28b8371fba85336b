//! Text positions, for errors that name the line and column of a bad value in a file; excerpts of posts.

/// The longest excerpt of a post's text the reports keep, in characters (the ellipsis included).
pub const EXCERPT_CHARS: usize = 160;

/// The start of `text` on one line: runs of whitespace (newlines included) become one space, and a text longer than
/// `max_chars` characters is cut at the last word boundary that fits, with `…` after it (mid-word only when one word
/// is longer than the excerpt).
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let one_line = words.join(" ");
    if one_line.chars().count() <= max_chars {
        return one_line;
    }
    let room = max_chars.saturating_sub(1);
    let mut out = String::new();
    for w in &words {
        let extra = usize::from(!out.is_empty()) + w.chars().count();
        if out.chars().count() + extra > room {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    if out.is_empty() {
        out = one_line.chars().take(room).collect();
    }
    out.push('…');
    out
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_and_columns_are_one_based() {
        assert_eq!(super::line_col("ab\ncd", 0), (1, 1));
        assert_eq!(super::line_col("ab\ncd", 4), (2, 2));
        assert_eq!(super::line_col("ab", 99), (1, 3));
    }

    #[test]
    fn excerpts_are_one_line_cut_at_a_word_within_the_limit() {
        use super::excerpt;
        assert_eq!(excerpt("Flu clinic\n\n  Saturday", 160), "Flu clinic Saturday");
        assert_eq!(excerpt("Watch the signs of stroke", 14), "Watch the…");
        assert_eq!(excerpt("Supercalifragilistic", 6), "Super…");
        assert_eq!(excerpt("", 10), "");
        let long = "Wörd ".repeat(100);
        let e = excerpt(&long, 160);
        assert!(e.chars().count() <= 160 && e.ends_with("Wörd…"), "{e}");
    }
}
