//! Overview: the checkpoints at the top, then the diff's verdicts by sub-model, most severe
//! first (or, for one checkpoint, its sub-models), and the selected verdict in full.

use ratatui::Frame;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use super::format::{fit_end, fit_middle, wrap};
use super::layout::{Areas, inner};
use super::model::{GroupRow, Job};
use super::state::{App, Pane};
use super::theme::{change_rank, compact_counts, severity_symbol};
use super::ui::{Column, ListRow, list_table, pane};
use crate::audit::CheckpointSummary;
use crate::audit::diff::DiffReport;
use crate::report;

/// Draws the Overview.
pub fn render(frame: &mut Frame, app: &App, areas: &Areas) {
    let top = pane(app, Pane::Main, " Checkpoints ").border_style(app.theme.dim());
    let width = usize::from(inner(areas.top).width);
    frame.render_widget(Paragraph::new(top_lines(app, width)).block(top), areas.top);
    match (&app.reports.diff, app.pair()) {
        (Job::Running(p), true) => {
            let block = pane(app, Pane::Main, " Verdicts ");
            let area = inner(areas.main);
            frame.render_widget(block, areas.main);
            let text = Paragraph::new(vec![
                Line::from("Comparing every tensor of A and B in the background…"),
                Line::from(Span::styled(
                    "Layers and Tensors already list both checkpoints.",
                    app.theme.dim(),
                )),
            ]);
            frame.render_widget(text, area);
            if area.height > 3 {
                let gauge_area = ratatui::layout::Rect {
                    y: area.y + 3,
                    height: 1,
                    ..area
                };
                frame.render_widget(
                    Gauge::default()
                        .ratio(p.ratio())
                        .gauge_style(app.theme.focused()),
                    gauge_area,
                );
            }
        }
        (Job::Failed(e), true) => {
            let block = pane(app, Pane::Main, " Verdicts ");
            let lines: Vec<Line> = wrap(&format!("The comparison failed: {e}"), width, 0)
                .into_iter()
                .map(|l| Line::from(Span::styled(l, app.theme.error())))
                .collect();
            frame.render_widget(Paragraph::new(lines).block(block), areas.main);
        }
        _ => groups(frame, app, areas),
    }
    let side = pane(app, Pane::Side, " Selected ");
    let lines = side_lines(app, usize::from(inner(areas.side).width));
    frame.render_widget(
        Paragraph::new(lines)
            .block(side)
            .scroll((app.side_scroll as u16, 0)),
        areas.side,
    );
}

/// One line per checkpoint, then what the diff found (or the layer count).
fn top_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let mut lines = Vec::new();
    match &r.b {
        Some(b) => {
            lines.push(checkpoint(app, "A ", &r.a.checkpoint, width));
            lines.push(checkpoint(app, "B ", &b.checkpoint, width));
        }
        None => lines.push(checkpoint(app, "", &r.a.checkpoint, width)),
    }
    match r.diff() {
        Some(d) => lines.extend(diff_summary(app, d)),
        None if r.is_pair() => lines.push(Line::from(Span::styled(
            "Layers and tensors: comparing…",
            theme.dim(),
        ))),
        None => {
            let flagged = r.a.layers.iter().filter(|l| !l.flags.is_empty()).count();
            let mut spans = vec![Span::raw(format!("{} BatchNorm layers", r.a.layers.len()))];
            if flagged > 0 {
                spans.push(Span::styled(
                    format!(" · ! {flagged} with health flags"),
                    theme.warning(),
                ));
            }
            lines.push(Line::from(spans));
        }
    }
    lines
}

fn checkpoint(app: &App, tag: &str, c: &CheckpointSummary, width: usize) -> Line<'static> {
    let dtypes: Vec<String> = c.dtypes.iter().map(|(d, n)| format!("{d}×{n}")).collect();
    let shards = if c.files.len() > 1 {
        format!("{} shards · ", c.files.len())
    } else {
        String::new()
    };
    let facts = format!(
        "  {shards}{} tensors · {} · {} · {} BatchNorm",
        c.tensors,
        report::bytes(c.bytes),
        dtypes.join(" "),
        c.bn_layers
    );
    let room = width.saturating_sub(tag.len() + super::format::width(&facts));
    Line::from(vec![
        Span::styled(tag.to_owned(), app.theme.heading()),
        Span::styled(fit_middle(&c.path, room.max(12)), app.theme.heading()),
        Span::raw(facts),
    ])
}

fn diff_summary(app: &App, d: &DiffReport) -> Vec<Line<'static>> {
    let theme = app.theme;
    let mut layers = vec![Span::raw(format!("Layers {}:  ", d.summary.layers))];
    layers.extend(theme.counts(&d.summary.statuses));
    let mut tensors = vec![Span::raw(format!("Tensors {}:", d.summary.tensors))];
    let mut changes: Vec<_> = d.summary.tensor_changes.iter().collect();
    changes.sort_by_key(|(c, _)| std::cmp::Reverse(change_rank(**c)));
    for (&change, &n) in changes {
        let label = super::theme::change_label(change);
        let (symbol, label) = label.split_once(' ').unwrap_or(("", label));
        tensors.push(Span::styled(
            format!("  {symbol} {n} {label}"),
            theme.change(change),
        ));
    }
    vec![Line::from(layers), Line::from(tensors)]
}

fn groups(frame: &mut Frame, app: &App, areas: &Areas) {
    let theme = app.theme;
    let r = &app.reports;
    let title = if app.pair() {
        " Verdicts by sub-model, most severe first "
    } else {
        " Sub-models "
    };
    let columns = if app.pair() {
        vec![
            Column { title: "sub-model".into(), right: false, fill: false },
            Column { title: "layers".into(), right: true, fill: false },
            Column { title: "statuses".into(), right: false, fill: false },
            Column { title: "verdict".into(), right: false, fill: true },
        ]
    } else {
        vec![
            Column { title: "sub-model".into(), right: false, fill: true },
            Column { title: "layers".into(), right: true, fill: false },
            Column { title: "flagged".into(), right: true, fill: false },
        ]
    };
    let row = |i: usize, name_width: usize| -> ListRow {
        match &app.groups[i] {
            GroupRow::Verdict(_) => {
                let g = r.group(&app.groups[i]).expect("verdict rows exist with the diff");
                let verdict = fit_end(&g.verdict, name_width);
                ListRow {
                    cells: vec![
                        Line::from(format!("{} {}", severity_symbol(g.severity), g.prefix)),
                        Line::from(g.layers.to_string()),
                        Line::from(compact_counts(&g.statuses)),
                        Line::from(verdict),
                    ],
                    style: theme.severity(g.severity),
                }
            }
            GroupRow::Submodel {
                prefix,
                layers,
                flagged,
            } => ListRow {
                cells: vec![
                    Line::from(format!(
                        "{} {prefix}",
                        if *flagged > 0 { "!" } else { " " }
                    )),
                    Line::from(layers.to_string()),
                    Line::from(flagged.to_string()),
                ],
                style: if *flagged > 0 {
                    theme.warning()
                } else {
                    ratatui::style::Style::new()
                },
            },
        }
    };
    list_table(
        frame,
        app,
        areas.main,
        pane(app, Pane::Main, title),
        &columns,
        app.groups.len(),
        app.overview,
        &row,
    );
}

/// The selected verdict in full (or the sub-model's flags), for the side pane.
pub fn side_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let mut lines = Vec::new();
    let Some(row) = app.selected_group() else {
        if !r.is_pair() {
            lines.push(Line::from(Span::styled(
                "No BatchNorm layer in this checkpoint.",
                theme.dim(),
            )));
            lines.extend(metadata(app, width));
        }
        return lines;
    };
    match r.group(row) {
        Some(g) => {
            let head = format!("{} {}", severity_symbol(g.severity), g.prefix);
            lines.push(Line::from(Span::styled(head, theme.severity(g.severity))));
            for l in wrap(&g.verdict, width, 0) {
                lines.push(Line::from(l));
            }
            lines.push(Line::from(theme.counts(&g.statuses)));
        }
        None => {
            let prefix = row.prefix(r).to_owned();
            let layers: Vec<_> = r
                .a
                .layers
                .iter()
                .filter(|l| super::state::in_module(&l.name, &prefix))
                .collect();
            let conventions: std::collections::BTreeSet<&str> =
                layers.iter().map(|l| l.convention.as_str()).collect();
            lines.push(Line::from(vec![
                Span::styled(prefix, theme.heading()),
                Span::raw(format!(
                    "  {} BatchNorm layers ({})",
                    layers.len(),
                    conventions.into_iter().collect::<Vec<_>>().join(", ")
                )),
            ]));
            for l in layers.iter().filter(|l| !l.flags.is_empty()) {
                let flags: Vec<&str> = l.flags.iter().map(|f| f.as_str()).collect();
                lines.push(Line::from(Span::styled(
                    format!("! {}: {}", l.name, flags.join(", ")),
                    theme.warning(),
                )));
            }
            lines.extend(metadata(app, width));
        }
    }
    lines.push(Line::from(Span::styled(
        "Enter lists its layers.",
        theme.dim(),
    )));
    lines
}

/// The checkpoint's metadata and warnings (one checkpoint).
fn metadata(app: &App, width: usize) -> Vec<Line<'static>> {
    let c = &app.reports.a.checkpoint;
    let mut lines = Vec::new();
    for w in &c.warnings {
        for l in wrap(&format!("warning: {w}"), width, 2) {
            lines.push(Line::from(Span::styled(l, app.theme.warning())));
        }
    }
    for (k, v) in &c.metadata {
        lines.push(Line::from(vec![
            Span::styled(format!("{k}: "), app.theme.dim()),
            Span::raw(fit_middle(v, width.saturating_sub(k.len() + 2).max(8))),
        ]));
    }
    lines
}
