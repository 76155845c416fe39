//! Terminal colours, off unless asked for.

/// Whether and how to colour text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Emit ANSI colour codes.
    pub color: bool,
}

impl Style {
    /// Wraps `s` in the SGR code `code` when colour is on.
    fn paint(self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// Errors and violations.
    pub fn red(self, s: &str) -> String {
        self.paint("31", s)
    }

    /// Warnings and drift.
    pub fn yellow(self, s: &str) -> String {
        self.paint("33", s)
    }

    /// Passing or unchanged.
    pub fn green(self, s: &str) -> String {
        self.paint("32", s)
    }

    /// Headings.
    pub fn bold(self, s: &str) -> String {
        self.paint("1", s)
    }

    /// Secondary detail.
    pub fn dim(self, s: &str) -> String {
        self.paint("2", s)
    }
}
