//! The restore dialog (`w` on the Layers or Detail screen of a pair): asks for the output
//! path, shows `restore`'s plan, and writes only when confirmed. The plan and the write run
//! off the UI thread ([`super::jobs::restore`]), as `bnaudit restore` without patterns
//! does them: every layer whose status is `frozen_stats_drift`, into a path that may not be
//! A, B or one of their files.

use std::path::{Path, PathBuf};

use crate::audit::restore::RestoreReport;
use crate::report::{Style, text};

/// Where the dialog is.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    /// Typing the output path.
    Path(String),
    /// The plan is being made for this path.
    Planning(PathBuf),
    /// The plan (lines of the text report), waiting for Enter.
    Plan {
        /// The output.
        path: PathBuf,
        /// The report's lines.
        lines: Vec<String>,
    },
    /// Writing this path.
    Writing(PathBuf),
    /// Finished: what happened, and whether it failed.
    Done {
        /// One or more lines.
        lines: Vec<String>,
        /// Whether it failed.
        failed: bool,
    },
}

/// Work the dialog asks the runner to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Plan a restore into the path (nothing written).
    Plan(PathBuf),
    /// Plan again and write the path.
    Write(PathBuf),
}

/// The path offered first: B's name with `.restored` before the extension, beside B.
pub fn default_path(b: &Path) -> String {
    let stem = b
        .file_stem()
        .map_or_else(|| "checkpoint".into(), |s| s.to_string_lossy());
    let stem = stem.strip_suffix(".safetensors.index").unwrap_or(&stem);
    b.with_file_name(format!("{stem}.restored.safetensors"))
        .display()
        .to_string()
}

/// What an edit or key does to the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character typed.
    Char(char),
    /// Backspace.
    Erase,
    /// Enter.
    Confirm,
    /// Esc.
    Cancel,
}

impl Dialog {
    /// Applies `key`; returns the work to start, and whether the dialog stays open.
    pub fn key(&mut self, key: Key) -> (Option<Request>, bool) {
        match (&mut *self, key) {
            (_, Key::Cancel) => (None, false),
            (Dialog::Path(p), Key::Char(c)) => {
                p.push(c);
                (None, true)
            }
            (Dialog::Path(p), Key::Erase) => {
                p.pop();
                (None, true)
            }
            (Dialog::Path(p), Key::Confirm) if !p.trim().is_empty() => {
                let path = PathBuf::from(p.trim());
                *self = Dialog::Planning(path.clone());
                (Some(Request::Plan(path)), true)
            }
            (Dialog::Plan { path, .. }, Key::Confirm) => {
                let path = path.clone();
                *self = Dialog::Writing(path.clone());
                (Some(Request::Write(path)), true)
            }
            (Dialog::Done { .. }, Key::Confirm) => (None, false),
            _ => (None, true),
        }
    }

    /// Whether keys are text for the path.
    pub fn typing(&self) -> bool {
        matches!(self, Dialog::Path(_))
    }

    /// A background restore finished: the plan, or the file written, or why not. Results
    /// for a dialog that moved on (cancelled, another path) are dropped.
    pub fn finished(&mut self, path: &Path, result: Result<RestoreReport, String>) {
        let waiting = match self {
            Dialog::Planning(p) | Dialog::Writing(p) => p.as_path() == path,
            _ => false,
        };
        if !waiting {
            return;
        }
        let lines = |r: &RestoreReport| -> Vec<String> {
            text::restore(r, Style { color: false })
                .lines()
                .map(str::to_owned)
                .collect()
        };
        *self = match (&*self, result) {
            (_, Err(e)) => Dialog::Done {
                lines: vec![e],
                failed: true,
            },
            (Dialog::Planning(p), Ok(report)) => Dialog::Plan {
                path: p.clone(),
                lines: lines(&report),
            },
            (_, Ok(report)) => Dialog::Done {
                lines: lines(&report),
                failed: false,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_plan_write_and_cancel() {
        assert_eq!(
            default_path(Path::new("runs/finetuned.safetensors")),
            "runs/finetuned.restored.safetensors"
        );
        assert_eq!(
            default_path(Path::new("b/model.safetensors.index.json")),
            "b/model.restored.safetensors"
        );
        let mut d = Dialog::Path("ou".to_owned());
        assert_eq!(d.key(Key::Char('t')), (None, true));
        assert_eq!(d.key(Key::Erase), (None, true));
        assert_eq!(d.key(Key::Char('x')), (None, true));
        assert_eq!(
            d.key(Key::Confirm),
            (Some(Request::Plan(PathBuf::from("oux"))), true)
        );
        // A result for another path is not this dialog's.
        d.finished(Path::new("other"), Err("no".to_owned()));
        assert_eq!(d, Dialog::Planning(PathBuf::from("oux")));
        d.finished(Path::new("oux"), Err("refused".to_owned()));
        assert!(matches!(d, Dialog::Done { failed: true, .. }));
        assert_eq!(d.key(Key::Confirm), (None, false));
        assert_eq!(Dialog::Path(String::new()).key(Key::Confirm), (None, true));
        assert_eq!(Dialog::Writing("x".into()).key(Key::Cancel), (None, false));
    }
}
