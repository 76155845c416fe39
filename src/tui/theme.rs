//! How statuses look: a symbol and a short label for every status (so a monochrome terminal
//! still tells them apart) and, when colour is on, a colour by severity.

use ratatui::style::{Color, Modifier, Style};

use crate::audit::diff::{Severity, Status, TensorChange};
use crate::bn::Flag;

/// Colours on or off; every style the views use comes from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Colour on; off for `NO_COLOR` and `--color never`.
    pub color: bool,
}

impl Theme {
    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// Style of a severity: red, yellow, cyan, green; bold without colour for the two that
    /// need attention.
    pub fn severity(self, s: Severity) -> Style {
        match s {
            Severity::Problem => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            Severity::Warning if !self.color => Style::new().add_modifier(Modifier::BOLD),
            Severity::Warning => self.fg(Color::Yellow),
            Severity::Info => self.fg(Color::Cyan),
            Severity::Unchanged => self.fg(Color::Green),
        }
    }

    /// Style of a layer status, by its severity.
    pub fn status(self, s: Status) -> Style {
        self.severity(status_severity(s))
    }

    /// Style of a tensor change.
    pub fn change(self, c: TensorChange) -> Style {
        self.severity(match c {
            TensorChange::Unchanged => Severity::Unchanged,
            TensorChange::Changed | TensorChange::DtypeChanged => Severity::Info,
            TensorChange::Added | TensorChange::Removed | TensorChange::ShapeChanged => {
                Severity::Warning
            }
        })
    }

    /// Health flags and warnings.
    pub fn warning(self) -> Style {
        self.severity(Severity::Warning)
    }

    /// Errors.
    pub fn error(self) -> Style {
        self.severity(Severity::Problem)
    }

    /// Titles and column headers.
    pub fn heading(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Secondary text.
    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    /// The selected row: reversed video works with and without colour.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// Characters of a name matched by the search.
    pub fn matched(self) -> Style {
        self.fg(Color::Yellow)
            .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }

    /// Border of the pane that has the focus.
    pub fn focused(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// Checkpoint A's series in plots.
    pub fn series_a(self) -> Style {
        self.fg(Color::Blue)
    }

    /// Checkpoint B's series (or the difference) in plots.
    pub fn series_b(self) -> Style {
        self.fg(Color::Magenta)
    }
}

/// Severity of a layer status, for colour and ordering: frozen drift and resets are what the
/// tool exists to catch; training is expected.
pub fn status_severity(s: Status) -> Severity {
    match s {
        Status::Unchanged => Severity::Unchanged,
        Status::Trained | Status::AffineOnly => Severity::Info,
        Status::OnlyInA | Status::OnlyInB | Status::Incompatible => Severity::Warning,
        Status::FrozenStatsDrift | Status::StatsReset => Severity::Problem,
    }
}

/// One-character symbol of a severity.
pub fn severity_symbol(s: Severity) -> &'static str {
    match s {
        Severity::Problem => "✗",
        Severity::Warning => "!",
        Severity::Info => "●",
        Severity::Unchanged => "✓",
    }
}

/// One-character symbol of a layer status.
pub fn status_symbol(s: Status) -> &'static str {
    match s {
        Status::Unchanged => "✓",
        Status::FrozenStatsDrift => "✗",
        Status::Trained => "●",
        Status::AffineOnly => "◐",
        Status::StatsReset => "↺",
        Status::OnlyInA => "−",
        Status::OnlyInB => "+",
        Status::Incompatible => "≠",
    }
}

/// Short label of a layer status.
pub fn status_label(s: Status) -> &'static str {
    match s {
        Status::Unchanged => "unchanged",
        Status::FrozenStatsDrift => "frozen drift",
        Status::Trained => "trained",
        Status::AffineOnly => "affine only",
        Status::StatsReset => "stats reset",
        Status::OnlyInA => "only in A",
        Status::OnlyInB => "only in B",
        Status::Incompatible => "incompatible",
    }
}

/// Short label of a tensor change.
pub fn change_label(c: TensorChange) -> &'static str {
    match c {
        TensorChange::Unchanged => "= same",
        TensorChange::Changed => "~ changed",
        TensorChange::Added => "+ added",
        TensorChange::Removed => "− removed",
        TensorChange::DtypeChanged => "~ dtype",
        TensorChange::ShapeChanged => "≠ shape",
    }
}

/// Rank of a status for sorting: most severe highest.
pub fn status_rank(s: Status) -> u8 {
    match s {
        Status::Unchanged => 0,
        Status::AffineOnly => 1,
        Status::Trained => 2,
        Status::OnlyInA => 3,
        Status::OnlyInB => 4,
        Status::Incompatible => 5,
        Status::StatsReset => 6,
        Status::FrozenStatsDrift => 7,
    }
}

/// Rank of a tensor change for sorting: most notable highest.
pub fn change_rank(c: TensorChange) -> u8 {
    match c {
        TensorChange::Unchanged => 0,
        TensorChange::DtypeChanged => 1,
        TensorChange::Changed => 2,
        TensorChange::Added => 3,
        TensorChange::Removed => 4,
        TensorChange::ShapeChanged => 5,
    }
}

/// What a status means, in one sentence (DESIGN's status table).
pub fn status_meaning(s: Status) -> &'static str {
    match s {
        Status::Unchanged => "nothing changed (a cast alone included).",
        Status::FrozenStatsDrift => {
            "running statistics changed while weight and bias did not: train-mode forwards \
             ran through a frozen layer."
        }
        Status::Trained => {
            "weight, bias and running statistics all changed: the layer was trained."
        }
        Status::AffineOnly => {
            "weight or bias changed, running statistics did not: trained with BatchNorm in \
             eval mode."
        }
        Status::StatsReset => {
            "the counter went down or the statistics were re-initialised (update_bn, \
             precise-BN or a reset)."
        }
        Status::OnlyInA => "the layer exists in A only.",
        Status::OnlyInB => "the layer exists in B only.",
        Status::Incompatible => "channel count or convention differs between A and B.",
    }
}

/// What a health flag means, in one sentence.
pub fn flag_meaning(f: Flag) -> &'static str {
    match f {
        Flag::Nonfinite => "a NaN or infinity in its tensors.",
        Flag::NegativeVar => "a negative running variance: impossible for real statistics.",
        Flag::ZeroVar => "a running variance of exactly zero: that channel outputs its bias alone.",
        Flag::TinyVar => {
            "a running variance below 1e-5: eps dominates, the channel is nearly constant."
        }
        Flag::DefaultInit => "mean 0, variance 1, counter 0: the statistics were never updated.",
        Flag::CounterWithoutStats => {
            "a positive counter with initial statistics: reset after training, or the counter \
             was copied without them."
        }
        Flag::ZeroWeight => "a weight of exactly zero: that channel outputs its bias alone.",
    }
}

/// Status counts, most severe first.
pub fn by_severity(counts: &std::collections::BTreeMap<Status, usize>) -> Vec<(Status, usize)> {
    let mut out: Vec<(Status, usize)> = counts.iter().map(|(&s, &n)| (s, n)).collect();
    out.sort_by_key(|&(s, _)| std::cmp::Reverse(status_rank(s)));
    out
}

/// Status counts as `✗4 ●1`, most severe first.
pub fn compact_counts(counts: &std::collections::BTreeMap<Status, usize>) -> String {
    let parts: Vec<String> = by_severity(counts)
        .into_iter()
        .map(|(s, n)| format!("{}{n}", status_symbol(s)))
        .collect();
    parts.join(" ")
}

impl Theme {
    /// Status counts as coloured `✗ 4 frozen drift` spans, most severe first.
    pub fn counts(
        self,
        counts: &std::collections::BTreeMap<Status, usize>,
    ) -> Vec<ratatui::text::Span<'static>> {
        by_severity(counts)
            .into_iter()
            .map(|(s, n)| {
                ratatui::text::Span::styled(
                    format!("{} {n} {}  ", status_symbol(s), status_label(s)),
                    self.status(s),
                )
            })
            .collect()
    }
}
