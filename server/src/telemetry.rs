//! Tracing setup for the binaries: RUST_LOG is honoured (default `info`), text or JSON lines.

use tracing_subscriber::EnvFilter;

/// `format` is `text` or `json`.
pub fn init(format: &str) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => return Err(format!("--log-format {other:?}: use text or json")),
    }
    Ok(())
}
