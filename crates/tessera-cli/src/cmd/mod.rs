//! One module per subcommand: flags (clap) and a `run` that calls the library.

pub mod detect;
pub mod eval;
pub mod generate;
pub mod keygen;
pub mod serve;
pub mod train;
pub mod vae;
pub mod world;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, hidden when `json` output is requested so stdout stays parseable.
pub fn progress(len: u64, what: &str, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
