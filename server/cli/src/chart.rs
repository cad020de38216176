//! What the CLI's plots share: the embedded font (PNG text needs one; the binary runs in
//! containers without system fonts).

use plotters::style::FontStyle;

/// Registers the embedded font as "sans-serif" for the plots' text (once).
pub fn register_font() -> anyhow::Result<()> {
    static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    anyhow::ensure!(ok, "the embedded font could not be loaded");
    Ok(())
}
