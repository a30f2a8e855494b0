//! The progress line of `pglogsink load` and of its `--verify`: a bar on a
//! terminal, a plain line about once a second otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on a terminal; otherwise (indicatif would draw nothing) a plain line about
/// once per second.
pub(crate) struct Progress {
    pub(crate) bar: ProgressBar,
    plain: bool,
    last_plain: Instant,
}

impl Progress {
    pub(crate) fn new(len: Option<u64>, template: &str) -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let bar = match (plain, len) {
            (true, _) => ProgressBar::hidden(),
            (false, Some(len)) => ProgressBar::new(len),
            (false, None) => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        if !plain {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Progress {
            bar,
            plain,
            last_plain: Instant::now(),
        }
    }

    pub(crate) fn update(
        &mut self,
        pos: u64,
        message: String,
        plain_line: impl FnOnce() -> String,
    ) {
        self.bar.set_position(pos);
        self.bar.set_message(message);
        if self.plain && self.last_plain.elapsed() >= Duration::from_secs(1) {
            self.last_plain = Instant::now();
            eprintln!("{}", plain_line());
        }
    }
}
