//! Plain-text reports for people: headline first, then compact aligned tables.

mod check;
mod diff;
mod explain;
mod restore;

use std::collections::HashMap;
use std::fmt::Write;

pub use check::{check, compared_line, headline, scope_line, target};
pub use diff::{alignment, diff};
pub use explain::explain_layers;
pub use restore::restore;

use super::Style;
use crate::audit::{CheckpointSummary, LsLayer, LsReport};
use crate::bn::{Flag, Role};
use crate::fmt::{self, bytes, opt_num, printable, submodel};

pub use crate::fmt::plural;

/// One line describing a checkpoint: path, files, tensors, size and dtypes.
pub fn checkpoint_line(c: &CheckpointSummary) -> String {
    let dtypes: Vec<String> = c.dtypes.iter().map(|(d, n)| format!("{d}×{n}")).collect();
    let mut files = c.origin().map(|o| format!("{o}, ")).unwrap_or_default();
    if c.files.len() > 1 {
        files.push_str(&format!("{} shards, ", c.files.len()));
    }
    format!(
        "{}  ({files}{}, {}, {})",
        printable(&c.path),
        plural(c.tensors, "tensor"),
        bytes(c.bytes),
        dtypes.join(" ")
    )
}

/// Renders the `ls` report: a summary, then the layers grouped by sub-model.
pub fn ls(report: &LsReport, style: Style) -> String {
    let mut out = String::new();
    let c = &report.checkpoint;
    let _ = writeln!(out, "{}", style.bold(&checkpoint_line(c)));
    for w in &c.warnings {
        let _ = writeln!(
            out,
            "{}",
            style.yellow(&format!("warning: {}", printable(w)))
        );
    }
    let flagged = report.layers.iter().filter(|l| !l.flags.is_empty()).count();
    let _ = writeln!(
        out,
        "{}{}",
        plural(report.layers.len(), "BatchNorm layer"),
        if flagged > 0 {
            format!(
                ", {}",
                style.yellow(&format!("{flagged} with health flags"))
            )
        } else {
            String::new()
        }
    );
    if !report.layers.is_empty() {
        out.push('\n');
        ls_table(&mut out, &report.layers, style);
    }
    if let Some(tensors) = &report.tensors {
        out.push('\n');
        let _ = writeln!(out, "{}", style.bold(&plural(tensors.len(), "tensor")));
        let shapes: Vec<String> = tensors
            .iter()
            .map(|t| {
                let dims: Vec<String> = t.shape.iter().map(u64::to_string).collect();
                format!("[{}]", dims.join(", "))
            })
            .collect();
        let names: Vec<_> = tensors.iter().map(|t| printable(&t.name)).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let shape_width = shapes.iter().map(String::len).max().unwrap_or(0);
        for ((t, name), shape) in tensors.iter().zip(&names).zip(&shapes) {
            let _ = writeln!(
                out,
                "  {name:width$}  {:11}  {shape:shape_width$}  {:>9}{}{}",
                t.dtype.as_str(),
                bytes(t.bytes),
                if t.decodable {
                    String::new()
                } else {
                    style.dim("  (not decodable)")
                },
                t.bn_layer.as_ref().map_or_else(String::new, |l| style
                    .dim(&format!("  (BatchNorm {})", printable(l))))
            );
        }
    }
    out
}

fn range(layer: &LsLayer, role: Role) -> String {
    match layer.stats.get(&role).copied().flatten() {
        Some(s) => fmt::range(s.min, s.max),
        None => "-".to_owned(),
    }
}

fn flags(list: &[Flag]) -> String {
    let names: Vec<&str> = list.iter().map(|f| f.as_str()).collect();
    names.join(",")
}

fn ls_table(out: &mut String, layers: &[LsLayer], style: Style) {
    let rows: Vec<[String; 8]> = layers
        .iter()
        .map(|l| {
            [
                printable(&l.name).into_owned(),
                l.channels.to_string(),
                l.dtype.to_string(),
                l.num_batches_tracked
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                range(l, Role::RunningMean),
                range(l, Role::RunningVar),
                match (
                    l.stats.get(&Role::Weight).copied().flatten(),
                    &l.keys.weight,
                ) {
                    (Some(s), _) => format!("{}±{}", opt_num(s.mean), opt_num(s.std)),
                    (None, None) => "none".to_owned(),
                    (None, Some(_)) => "-".to_owned(),
                },
                flags(&l.flags),
            ]
        })
        .collect();
    let header = [
        "layer",
        "C",
        "dtype",
        "batches",
        "running_mean",
        "running_var",
        "weight",
        "flags",
    ];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 8]| {
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            // Left-align names and flags, right-align numbers.
            if i == 0 || i == 2 || i == 7 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
            s.push_str("  ");
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", style.dim(&line(header)));
    // Counted once up front: counting per group heading was quadratic in the layers.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in layers {
        *counts.entry(submodel(&l.name)).or_default() += 1;
    }
    let mut current = None;
    for (layer, row) in layers.iter().zip(&rows) {
        let group = submodel(&layer.name);
        if current != Some(group) {
            let count = counts[group];
            let conv = layer.convention.as_str();
            let _ = writeln!(
                out,
                "{}",
                style.bold(&format!(
                    "{}  ({}, {conv})",
                    printable(group),
                    plural(count, "layer")
                ))
            );
            current = Some(group);
        }
        let text = line(row.each_ref().map(String::as_str));
        let _ = writeln!(
            out,
            "{}",
            if layer.flags.is_empty() {
                text
            } else {
                style.yellow(&text)
            }
        );
    }
}

/// Left-aligns the first `left` columns, right-aligns the rest; two spaces between. Cells
/// are made [`printable`]: they hold names from the checkpoint.
pub(crate) fn table<const N: usize>(
    header: [&str; N],
    rows: &[[String; N]],
    left: usize,
) -> Vec<String> {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|r| r.each_ref().map(|c| printable(c).into_owned()))
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if i < left {
                s.push_str(cell);
                s.push_str(&pad);
            } else {
                s.push_str(&pad);
                s.push_str(cell);
            }
            s.push_str("  ");
        }
        s.trim_end().to_owned()
    };
    std::iter::once(line(header))
        .chain(rows.iter().map(|r| line(r.each_ref().map(String::as_str))))
        .collect()
}
