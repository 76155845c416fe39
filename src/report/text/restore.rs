//! Text report of `restore`: what was put back, per sub-model and layer, and what stays B's.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{alignment, plural};
use crate::audit::check::{ViolationKind, leaf};
use crate::audit::restore::{RestoreReport, Restored, ScopeSource};
use crate::fmt::{bytes, submodel};
use crate::report::Style;

/// The scope in one line.
fn scope_line(report: &RestoreReport) -> String {
    let s = &report.scope;
    match s.source {
        ScopeSource::FrozenStatsDrift => {
            "scope: every layer whose status is frozen_stats_drift (no --frozen, no configuration)"
                .to_owned()
        }
        ScopeSource::Patterns => {
            let list = |l: &[String]| {
                if l.is_empty() {
                    "-".to_owned()
                } else {
                    l.join(" ")
                }
            };
            format!(
                "scope: frozen: {}; trainable: {}; allow_stats: {}{}",
                list(&s.frozen),
                list(&s.trainable),
                list(&s.allow_stats),
                s.config
                    .as_ref()
                    .map_or_else(String::new, |c| format!(" (config {c})"))
            )
        }
    }
}

/// One line per layer: its restored tensors, the casts, and the counter's story.
fn layer_line(layer: &str, tensors: &[&Restored]) -> String {
    let names: Vec<String> = tensors
        .iter()
        .map(|r| match &r.cast_from {
            Some(from) => format!("{} (cast from {from})", leaf(&r.tensor)),
            None => leaf(&r.tensor).to_owned(),
        })
        .collect();
    let counter = tensors
        .iter()
        .find(|r| r.detail.starts_with("num_batches_tracked"))
        .map_or_else(String::new, |r| format!("  [{}]", r.detail));
    format!("  {layer}: {}{counter}", names.join(", "))
}

/// Renders the `restore` report for people.
pub fn restore(report: &RestoreReport, style: Style) -> String {
    let mut out = String::new();
    let stats = report
        .restored
        .iter()
        .filter(|r| r.reason == ViolationKind::FrozenStatsDrift)
        .count();
    let head = if report.restored.is_empty() {
        "bnaudit restore: nothing to put back; the output is B's tensors as they are".to_owned()
    } else {
        format!(
            "bnaudit restore: put back A's values of {} ({} BatchNorm statistics and counters)",
            plural(report.restored.len(), "tensor"),
            stats
        )
    };
    let _ = writeln!(out, "{}", style.bold(&head));
    let _ = writeln!(out, "  A: {}", report.a);
    let _ = writeln!(out, "  B: {}", report.b);
    let _ = writeln!(out, "{}", scope_line(report));
    let al = &report.alignment;
    if !al.strip_a.is_empty() || !al.strip_b.is_empty() {
        let _ = writeln!(out, "{} (the output keeps B's names)", alignment(al));
    }
    for sub in &report.submodels {
        let _ = writeln!(
            out,
            "\n{}",
            style.bold(&format!(
                "{}: {} restored in {}",
                sub.name,
                plural(sub.tensors, "tensor"),
                plural(sub.layers, "layer")
            ))
        );
        let mut by_layer: BTreeMap<&str, Vec<&Restored>> = BTreeMap::new();
        for r in report
            .restored
            .iter()
            .filter(|r| submodel(&r.layer) == sub.name)
        {
            by_layer.entry(&r.layer).or_default().push(r);
        }
        for (layer, tensors) in by_layer {
            let _ = writeln!(out, "{}", layer_line(layer, &tensors));
        }
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.yellow(&format!(
                "not restored: {} in scope that differ",
                plural(report.skipped.len(), "tensor")
            ))
        );
        for s in &report.skipped {
            let _ = writeln!(out, "  {}: {}", s.tensor, s.reason);
        }
    }
    let _ = writeln!(
        out,
        "\nkept B's values of the other {}",
        plural(report.kept, "tensor")
    );
    let done = if report.dry_run {
        format!(
            "dry run: nothing written ({} would be {})",
            report.output,
            bytes(report.bytes)
        )
    } else {
        format!("wrote {} ({})", report.output, bytes(report.bytes))
    };
    let _ = writeln!(out, "{}", style.green(&done));
    out
}
