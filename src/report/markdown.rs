//! Markdown for `$GITHUB_STEP_SUMMARY` or a pull-request comment: a heading with the
//! verdict, the scope, the diff's verdicts, and a table of violations.

use std::fmt::Write;

use crate::audit::check::CheckReport;
use crate::fmt::printable;
use crate::report::text::{alignment, compared_line, headline, scope_line};

/// Makes `s` safe inside a table cell: control characters (line breaks included) made
/// [`printable`], pipes escaped.
fn cell(s: &str) -> String {
    printable(s).replace('|', "\\|")
}

/// `s` as inline code in a table cell; empty stays empty.
fn code(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else if s.contains('`') {
        format!("`` {} ``", cell(s))
    } else {
        format!("`{}`", cell(s))
    }
}

/// Renders the `check` report as GitHub-flavoured Markdown.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    let mark = if report.passed { "✅" } else { "❌" };
    let _ = writeln!(out, "### {mark} bnaudit check: {}\n", headline(report));
    let _ = writeln!(
        out,
        "- A: {}\n- B: {}",
        code(&report.diff.a.path),
        code(&report.diff.b.path)
    );
    let _ = writeln!(out, "- scope: {}", scope_line(report));
    let _ = writeln!(out, "- {}", alignment(&report.diff.alignment));
    let _ = writeln!(out, "- {}", compared_line(report));
    if !report.diff.groups.is_empty() {
        let _ = writeln!(out, "\n**Verdicts**\n");
        for g in &report.diff.groups {
            let _ = writeln!(out, "- {}", printable(&g.verdict));
        }
    }
    if !report.violations.is_empty() {
        let _ = writeln!(
            out,
            "\n| kind | layer | tensor | detail |\n|---|---|---|---|"
        );
        for v in &report.violations {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                v.kind.as_str(),
                code(&v.layer),
                code(v.tensor.as_deref().unwrap_or("")),
                cell(&v.detail)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b\\nc");
        assert_eq!(code("x`y"), "`` x`y ``");
        assert_eq!(code(""), "");
    }
}
