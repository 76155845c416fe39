//! A progress line on stderr for long comparisons, shown only on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fmt::bytes;

/// Comparisons shorter than this show nothing, so quick runs do not flicker.
const DELAY: Duration = Duration::from_millis(300);

/// Redraws at most this often.
const INTERVAL: Duration = Duration::from_millis(100);

/// The `\r`-redrawn line "comparing 1.2 GiB / 2.0 GiB (60%)".
pub struct ProgressLine {
    start: Instant,
    /// When the line was last drawn, `None` before the first time.
    drawn: Mutex<Option<Instant>>,
}

impl ProgressLine {
    /// A progress line, or `None` when stderr is not a terminal.
    pub fn on_stderr() -> Option<ProgressLine> {
        std::io::stderr().is_terminal().then(|| ProgressLine {
            start: Instant::now(),
            drawn: Mutex::new(None),
        })
    }

    /// Records `done` of `total` bytes; redraws when due.
    pub fn update(&self, done: u64, total: u64) {
        let now = Instant::now();
        if now - self.start < DELAY {
            return;
        }
        // A worker that finds the line busy skips this update; another comes soon.
        let Ok(mut drawn) = self.drawn.try_lock() else {
            return;
        };
        if drawn.is_some_and(|t| now - t < INTERVAL) {
            return;
        }
        *drawn = Some(now);
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[Kcomparing {} / {} ({percent}%)",
            bytes(done),
            bytes(total)
        );
        let _ = err.flush();
    }

    /// Erases the line if it was drawn.
    pub fn finish(&self) {
        if self.drawn.lock().is_ok_and(|d| d.is_some()) {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
