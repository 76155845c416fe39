//! GitHub Actions workflow commands: a leading `::error` annotation with the verdicts when
//! the gate fails, one per violation for the [`MAX_ANNOTATIONS`] most severe, then every
//! violation as a plain log line and a summary line.
//!
//! GitHub shows about ten error annotations per step and drops the rest, so the leading
//! annotation counts the violations left unannotated and points to the log, where all of
//! them are listed.
//!
//! Escaping follows GitHub's runner (`toolkit/packages/core/src/command.ts`): in the
//! message `%`, CR and LF become `%25`, `%0D`, `%0A`; in property values also `:` and `,`
//! become `%3A` and `%2C`. The plain lines escape control characters, so no name can start
//! a line of its own that the runner would read as a command.

use std::fmt::Write;

use crate::audit::check::{CheckReport, Violation, ViolationKind};
use crate::audit::diff::Severity;
use crate::report::text::{compared_line, headline, scope_line, target};

/// Violations annotated one by one; GitHub shows about ten annotations per step.
pub const MAX_ANNOTATIONS: usize = 10;

/// Escapes the message part of a workflow command.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`title=…`) of a workflow command.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `s` for a plain log line: control characters (line breaks included) written as escapes.
fn escape_plain(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn error(out: &mut String, title: &str, message: &str) {
    let _ = writeln!(
        out,
        "::error title={}::{}",
        escape_property(title),
        escape_data(message)
    );
}

/// How much a violation matters, higher first: broken statistics, then drift of frozen
/// statistics, then changed or restructured frozen weights.
fn severity(kind: ViolationKind) -> u8 {
    match kind {
        ViolationKind::Nonfinite => 6,
        ViolationKind::NegativeVar => 5,
        ViolationKind::FrozenStatsDrift => 4,
        ViolationKind::FrozenWeightChanged => 3,
        ViolationKind::FrozenShapeChanged => 2,
        ViolationKind::FrozenTensorMissing => 1,
        ViolationKind::FrozenTensorAdded => 0,
    }
}

fn title(v: &Violation) -> String {
    format!("bnaudit: {} in {}", v.kind.as_str(), target(v))
}

/// Renders the `check` report as workflow commands.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    let mut ranked: Vec<&Violation> = report.violations.iter().collect();
    // Stable: equally severe violations keep the report's module order.
    ranked.sort_by_key(|v| std::cmp::Reverse(severity(v.kind)));
    let shown = ranked.len().min(MAX_ANNOTATIONS);
    if !report.passed {
        let mut message = format!("{}\n{}", headline(report), scope_line(report));
        for g in report
            .diff
            .groups
            .iter()
            .filter(|g| g.severity >= Severity::Warning)
        {
            message.push('\n');
            message.push_str(&g.verdict);
        }
        if ranked.len() > shown {
            let _ = write!(
                message,
                "\nThe {shown} most severe violations are annotated; the other {} are listed in this step's log.",
                ranked.len() - shown
            );
        }
        error(&mut out, "bnaudit check failed", &message);
    }
    for v in &ranked[..shown] {
        error(&mut out, &title(v), &v.detail);
    }
    for v in &report.violations {
        let _ = writeln!(
            out,
            "{}: {}",
            escape_plain(&title(v)),
            escape_plain(&v.detail)
        );
    }
    let _ = writeln!(
        out,
        "bnaudit check: {}; {}; {}",
        headline(report),
        scope_line(report),
        compared_line(report)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_the_runner_expects() {
        assert_eq!(escape_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(escape_property("bnaudit: a, b\n"), "bnaudit%3A a%2C b%0A");
        // `%` first, so an escape sequence in the input is itself escaped, not decoded.
        assert_eq!(escape_data("%0A"), "%250A");
        // A name cannot start a line of its own in the plain list.
        assert_eq!(escape_plain("a\n::error::x\t"), "a\\n::error::x\\t");
    }
}
