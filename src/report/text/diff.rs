//! The `diff` report as text: verdicts first, then the BatchNorm layers that changed, the
//! reasoning behind each group, and the other tensors that changed.

use std::collections::HashSet;
use std::fmt::Write;

use super::{checkpoint_line, table};
use crate::audit::diff::{
    Alignment, DiffReport, Group, LayerDiff, Severity, Status, TensorChange, TensorDiff,
};
use crate::fmt::{num, opt_num, printable, shape, submodel};
use crate::report::Style;

/// Changed tensors listed before the rest is only counted (JSON lists them all).
const MAX_TENSOR_ROWS: usize = 40;

/// Renders the `diff` report.
pub fn diff(report: &DiffReport, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A  {}", checkpoint_line(&report.a));
    let _ = writeln!(out, "B  {}", checkpoint_line(&report.b));
    for w in report.a.warnings.iter().chain(&report.b.warnings) {
        let _ = writeln!(
            out,
            "{}",
            style.yellow(&format!("warning: {}", printable(w)))
        );
    }
    let _ = writeln!(out, "{}", style.dim(&alignment(&report.alignment)));
    out.push('\n');
    verdicts(&mut out, &report.groups, style);
    layers(&mut out, report, style);
    tensors(&mut out, report, style);
    if !report.summary.changed {
        let _ = writeln!(
            out,
            "\n{}",
            style.green("No change (a cast alone is not one).")
        );
    }
    out
}

/// "aligned: \"module.\" stripped from B (detected); 39 tensors matched, 0 only in A, 0
/// only in B", and for a sub-model saved on its own "\"model_A.\" added to A's names (A is
/// the sub-model model_A of B)".
pub fn alignment(al: &Alignment) -> String {
    let stripped: Vec<String> = [("A", &al.strip_a), ("B", &al.strip_b)]
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(side, p)| format!("{p:?} stripped from {side}"))
        .chain(
            al.submodel()
                .map(|(side, p)| format!("{p:?} added to {side}'s names")),
        )
        .collect();
    let submodel = al.submodel().map_or_else(String::new, |(side, p)| {
        let other = if side == "A" { "B" } else { "A" };
        format!(
            "; {side} is {other}'s sub-model {}, saved on its own",
            p.trim_end_matches(['.', '/'])
        )
    });
    format!(
        "aligned: {}{}{submodel}; {} tensors matched, {} only in A, {} only in B",
        if stripped.is_empty() {
            "names as they are".to_owned()
        } else {
            stripped.join(", ")
        },
        match (stripped.is_empty(), al.detected) {
            (true, _) => "",
            (false, true) => " (detected)",
            (false, false) => " (forced)",
        },
        al.matched,
        al.only_a,
        al.only_b
    )
}

fn mark(severity: Severity, style: Style) -> String {
    match severity {
        Severity::Problem => style.red("✗"),
        Severity::Warning => style.yellow("!"),
        Severity::Info => style.bold("•"),
        Severity::Unchanged => style.green("✓"),
    }
}

/// The "Verdicts" block: one line per group, marked and coloured by severity.
pub fn verdicts(out: &mut String, groups: &[Group], style: Style) {
    if groups.is_empty() {
        let _ = writeln!(out, "No BatchNorm layers on either side.");
        return;
    }
    let _ = writeln!(out, "{}", style.bold("Verdicts"));
    for g in groups {
        let verdict = printable(&g.verdict);
        let text = match g.severity {
            Severity::Problem => style.red(&verdict),
            Severity::Warning => style.yellow(&verdict),
            _ => verdict.into_owned(),
        };
        let _ = writeln!(out, "  {} {text}", mark(g.severity, style));
    }
}

/// "Tensors: 39 (16 unchanged, 23 changed)", bold.
fn heading<'a>(
    out: &mut String,
    style: Style,
    title: &str,
    total: usize,
    counts: impl Iterator<Item = (&'a str, usize)>,
) {
    let counts: Vec<String> = counts.map(|(what, n)| format!("{n} {what}")).collect();
    let _ = writeln!(
        out,
        "\n{}",
        style.bold(&format!("{title}: {total} ({})", counts.join(", ")))
    );
}

fn counter(l: &LayerDiff) -> String {
    match (l.nbt_a, l.nbt_b) {
        (Some(a), Some(b)) => format!("{a} → {b}"),
        (Some(a), None) => format!("{a} → -"),
        (None, Some(b)) => format!("- → {b}"),
        (None, None) => "-".to_owned(),
    }
}

/// A statistic's largest difference; "non-finite" for one that changed without a finite
/// difference (NaN or infinity appeared).
fn delta(changed: Option<bool>, max: Option<f64>) -> String {
    match (changed, max) {
        (Some(true), None) => "non-finite".to_owned(),
        _ => opt_num(max),
    }
}

/// Train-mode forwards: counted (since a reset, after one), or bounded from below.
fn forwards(l: &LayerDiff) -> String {
    match (l.inference.forwards, l.inference.forwards_min) {
        (Some(k), _) if l.status == Status::StatsReset => format!("{k} since reset"),
        (Some(k), _) => format!("{k:+}"),
        (None, Some(n)) => format!("≥{n}"),
        (None, None) => "-".to_owned(),
    }
}

fn layers(out: &mut String, report: &DiffReport, style: Style) {
    let changed: Vec<&LayerDiff> = report
        .layers
        .iter()
        .filter(|l| l.status != Status::Unchanged || l.nbt_delta.is_some_and(|d| d != 0))
        .collect();
    if report.layers.is_empty() {
        return;
    }
    let counts = report
        .summary
        .statuses
        .iter()
        .map(|(s, n)| (s.as_str(), *n));
    heading(out, style, "BatchNorm layers", report.layers.len(), counts);
    if changed.is_empty() {
        return;
    }
    let rows: Vec<[String; 9]> = changed
        .iter()
        .map(|l| {
            let inf = &l.inference;
            let d = &l.max_abs_diff;
            [
                l.name.clone(),
                l.status.as_str().to_owned(),
                counter(l),
                forwards(l),
                opt_num(inf.retained),
                inf.consistent
                    .map_or("-", |c| if c { "yes" } else { "NO" })
                    .to_owned(),
                delta(l.changed.running_mean, d.running_mean),
                delta(l.changed.running_var, d.running_var),
                opt_num(match (d.weight, d.bias) {
                    (Some(w), Some(b)) => Some(w.max(b)),
                    (w, b) => w.or(b),
                }),
            ]
        })
        .collect();
    let header = [
        "layer",
        "status",
        "batches",
        "forwards",
        "retained",
        "consistent",
        "max|Δmean|",
        "max|Δvar|",
        "max|Δaffine|",
    ];
    for (i, line) in table(header, &rows, 2).into_iter().enumerate() {
        let line = match i.checked_sub(1).map(|r| changed[r].status) {
            None => style.dim(&line),
            Some(Status::FrozenStatsDrift | Status::StatsReset) => style.yellow(&line),
            Some(_) => line,
        };
        let _ = writeln!(out, "{line}");
    }
    reasoning(out, &changed, style);
}

/// The notes of the first changed layer of each sub-model: the algebra behind the verdicts,
/// without repeating it for every layer.
fn reasoning(out: &mut String, changed: &[&LayerDiff], style: Style) {
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for l in changed {
        let key = (submodel(&l.name), l.status, l.inference.consistent);
        if l.inference.notes.is_empty() || !seen.insert(key) {
            continue;
        }
        lines.push(format!("  {}", style.bold(&printable(&l.name))));
        lines.extend(
            l.inference
                .notes
                .iter()
                .map(|n| format!("    {}", printable(n))),
        );
    }
    if !lines.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.bold("Why (first layer of each sub-model, status and consistency)")
        );
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn dtypes(t: &TensorDiff) -> String {
    match (t.dtype_a, t.dtype_b) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a} → {b}"),
        (Some(d), None) | (None, Some(d)) => d.to_string(),
        (None, None) => String::new(),
    }
}

fn shapes(t: &TensorDiff) -> String {
    match (&t.shape_a, &t.shape_b) {
        (Some(a), Some(b)) if a != b => format!("{} → {}", shape(&t.shape_a), shape(&t.shape_b)),
        (Some(_), _) => shape(&t.shape_a),
        (None, Some(_)) => shape(&t.shape_b),
        (None, None) => String::new(),
    }
}

fn tensors(out: &mut String, report: &DiffReport, style: Style) {
    let tensors = &report.tensors;
    let counts = report
        .summary
        .tensor_changes
        .iter()
        .map(|(c, n)| (c.as_str(), *n));
    heading(out, style, "Tensors", tensors.len(), counts);
    // BatchNorm tensors are in the layer table already.
    let changed: Vec<&TensorDiff> = tensors
        .iter()
        .filter(|t| t.change != TensorChange::Unchanged && t.bn_layer.is_none())
        .collect();
    let rows: Vec<[String; 7]> = changed
        .iter()
        .take(MAX_TENSOR_ROWS)
        .map(|t| {
            [
                t.name.clone(),
                t.change.as_str().to_owned(),
                dtypes(t),
                shapes(t),
                t.changed_elements
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                opt_num(t.max_abs_diff),
                t.rel_l2.map_or_else(|| "-".to_owned(), num),
            ]
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "  other tensors that differ: {}", changed.len());
    let header = [
        "tensor", "change", "dtype", "shape", "elements", "max|Δ|", "rel L2",
    ];
    for (i, line) in table(header, &rows, 4).into_iter().enumerate() {
        let _ = writeln!(out, "{}", if i == 0 { style.dim(&line) } else { line });
    }
    if changed.len() > MAX_TENSOR_ROWS {
        let _ = writeln!(
            out,
            "  … and {} more (--format json lists every tensor)",
            changed.len() - MAX_TENSOR_ROWS
        );
    }
}
