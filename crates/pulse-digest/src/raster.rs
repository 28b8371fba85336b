//! SVG charts drawn as PNG, for email (mail clients do not show SVG). The drawings are [`pulse_app::chart`]'s, the same
//! the dashboard inlines; text is set in a font carried inside the binary (Ubuntu Light), so a server with no fonts
//! installed draws the same picture.

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

fn options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(epaint_default_fonts::UBUNTU_LIGHT.to_vec());
        let family = db.faces().next().and_then(|f| f.families.first()).map(|(name, _)| name.clone());
        if let Some(family) = family {
            db.set_sans_serif_family(family);
        }
        usvg::Options { fontdb: Arc::new(db), ..usvg::Options::default() }
    })
}

/// Draws `svg` at `scale` times its size (2 for sharp pictures on high-density screens) and encodes it as PNG, on
/// a white background.
pub fn png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    let tree = usvg::Tree::from_str(svg, options()).map_err(|e| format!("not a drawable SVG: {e}"))?;
    let size = tree.size().to_int_size().scale_by(scale).ok_or("the drawing has no size")?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("the drawing is too large")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| format!("encoding PNG: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_becomes_a_png_with_its_text_drawn() {
        let with_text =
            pulse_app::chart::bars("t", &[("Millfield".into(), Some(10.0))], pulse_app::chart::BLUE, 300, &|v| {
                format!("{v}")
            });
        let without = with_text.replace("Millfield", "");
        let a = png(&with_text, 1.0).unwrap();
        let b = png(&without, 1.0).unwrap();
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        // The label is drawn (the font was found): the pictures differ.
        assert_ne!(a, b);
        assert!(png("<svg", 1.0).unwrap_err().contains("not a drawable SVG"));
    }
}
