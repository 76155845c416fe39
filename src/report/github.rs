//! GitHub Actions workflow commands: one `::error` annotation per violation, a leading one
//! with the verdicts when the gate fails, and a plain summary line.
//!
//! Escaping follows GitHub's runner (`toolkit/packages/core/src/command.ts`): in the
//! message `%`, CR and LF become `%25`, `%0D`, `%0A`; in property values also `:` and `,`
//! become `%3A` and `%2C`.

use std::fmt::Write;

use crate::audit::check::CheckReport;
use crate::audit::diff::Severity;
use crate::report::text::{compared_line, headline, scope_line, target};

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

fn error(out: &mut String, title: &str, message: &str) {
    let _ = writeln!(
        out,
        "::error title={}::{}",
        escape_property(title),
        escape_data(message)
    );
}

/// Renders the `check` report as workflow commands.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
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
        error(&mut out, "bnaudit check failed", &message);
    }
    for v in &report.violations {
        error(
            &mut out,
            &format!("bnaudit: {} in {}", v.kind.as_str(), target(v)),
            &v.detail,
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
    }
}
