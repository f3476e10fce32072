//! Progress of long commands (seed, key rotation, import) on stderr, with
//! `indicatif`: a bar with the rate and the time left, redrawn at most a
//! few times a second, and nothing at all when stderr is not a terminal
//! (logs and pipes get only the report on stdout).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` units named `unit` ("residents", "bytes"…).
pub(super) fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = if unit == "bytes" {
        "[{bar:40}] {bytes}/{total_bytes} {msg} · {bytes_per_sec} · {eta} left".to_string()
    } else {
        format!(
            "[{{bar:40}}] {{human_pos}}/{{human_len}} {unit} {{msg}} · {{per_sec}} · {{eta}} left"
        )
    };
    // The templates are constants; a refused one falls back to the plain bar.
    let style = ProgressStyle::with_template(&template)
        .map(|s| s.progress_chars("#>-"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
