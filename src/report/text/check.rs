//! Text report of `check`: the verdict first, then what was compared, the diff's verdicts,
//! and every violation. The sentences here are shared by the CI formats.

use std::fmt::Write;

use super::diff::{alignment, verdicts};
use super::{checkpoint_line, plural};
use crate::audit::check::{CheckReport, Violation};
use crate::audit::scope::Patterns;
use crate::fmt::{bytes, printable};
use crate::report::Style;

/// `PASSED`/`FAILED` and the count of violations, e.g. `FAILED: 21 violations in the frozen
/// scope`.
pub fn headline(report: &CheckReport) -> String {
    match report.violations.len() {
        0 => "PASSED: the frozen scope is unchanged".to_owned(),
        1 => "FAILED: 1 violation in the frozen scope".to_owned(),
        n => format!("FAILED: {n} violations in the frozen scope"),
    }
}

fn patterns(p: &Patterns) -> String {
    if p.is_empty() {
        "-".to_owned()
    } else {
        printable(&p.as_slice().join(" ")).into_owned()
    }
}

/// The scope in one line: `frozen: backbone; trainable: -; allow_stats: -` and its source.
pub fn scope_line(report: &CheckReport) -> String {
    let s = &report.scope.patterns;
    let source = report
        .scope
        .config
        .as_ref()
        .map_or_else(String::new, |c| format!(" (config {})", printable(c)));
    format!(
        "frozen: {}; trainable: {}; allow_stats: {}{source}",
        patterns(&s.frozen),
        patterns(&s.trainable),
        patterns(&s.allow_stats)
    )
}

/// What was compared, e.g. `compared 120 frozen tensors (12.3 MiB) in 41 modules, 20 of them
/// BatchNorm layers`.
pub fn compared_line(report: &CheckReport) -> String {
    let c = &report.compared;
    format!(
        "compared {} ({} read from A and B) in {}, {} of them {}",
        plural(c.tensors, "frozen tensor"),
        bytes(c.bytes),
        plural(c.modules, "module"),
        c.batchnorm_layers,
        if c.batchnorm_layers == 1 {
            "a BatchNorm layer"
        } else {
            "BatchNorm layers"
        }
    )
}

/// Where a violation is: the tensor, or the layer for a layer-wide one.
pub fn target(v: &Violation) -> &str {
    v.tensor.as_deref().unwrap_or(&v.layer)
}

/// Renders the `check` report for people.
pub fn check(report: &CheckReport, style: Style) -> String {
    let mut out = String::new();
    let head = format!("bnaudit check: {}", headline(report));
    let _ = writeln!(
        out,
        "{}",
        if report.passed {
            style.green(&style.bold(&head))
        } else {
            style.red(&style.bold(&head))
        }
    );
    let _ = writeln!(out, "  A  {}", checkpoint_line(&report.diff.a));
    let _ = writeln!(out, "  B  {}", checkpoint_line(&report.diff.b));
    let _ = writeln!(out, "  {}", scope_line(report));
    let _ = writeln!(out, "  {}", style.dim(&alignment(&report.diff.alignment)));
    let _ = writeln!(out, "  {}", compared_line(report));
    if !report.diff.groups.is_empty() {
        out.push('\n');
        verdicts(&mut out, &report.diff.groups, style);
    }
    if !report.violations.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("Violations"));
        let kind_w = report
            .violations
            .iter()
            .map(|v| v.kind.as_str().len())
            .max()
            .unwrap_or(0);
        let target_w = report
            .violations
            .iter()
            .map(|v| printable(target(v)).chars().count())
            .max()
            .unwrap_or(0);
        for v in &report.violations {
            let t = printable(target(v));
            let pad = " ".repeat(target_w - t.chars().count());
            let _ = writeln!(
                out,
                "  {}  {t}{pad}  {}",
                style.red(&format!("{:kind_w$}", v.kind.as_str())),
                printable(&v.detail)
            );
        }
    }
    out
}
