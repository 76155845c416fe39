//! Overview: the checkpoints at the top, then the diff's verdicts by sub-model, most severe
//! first (or, for one checkpoint, its sub-models), and the selected verdict in full.

use ratatui::Frame;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Gauge, Paragraph};

use super::format::{fit_end, fit_middle, wrapped};
use super::widgets::{Column, ListRow, list_table, pane, side_pane};
use crate::audit::CheckpointSummary;
use crate::audit::diff::{DiffReport, LayerDiff};
use crate::fmt::{self, opt_num, printable};
use crate::tui::layout::{Areas, inner};
use crate::tui::model::{GroupRow, Job};
use crate::tui::state::{App, Pane};
use crate::tui::theme::{change_rank, compact_counts, severity_symbol, status_symbol};

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
            let lines = wrapped(
                &format!("The comparison failed: {e}"),
                width,
                0,
                app.theme.error(),
            );
            frame.render_widget(Paragraph::new(lines).block(block), areas.main);
        }
        _ => groups(frame, app),
    }
    side_pane(frame, app, areas.side, " Selected ");
}

/// One line per checkpoint, then what the diff found (or the layer count).
fn top_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let mut lines = Vec::new();
    let sides: Vec<(&str, &CheckpointSummary)> = match &r.b {
        Some(b) => vec![("A ", &r.a.checkpoint), ("B ", &b.checkpoint)],
        None => vec![("", &r.a.checkpoint)],
    };
    // One decision for both lines, so that A and B stay aligned.
    let dtypes = sides.iter().all(|(tag, c)| {
        tag.len()
            + super::format::width(super::file_name(&c.path))
            + super::format::width(&facts(c, true))
            <= width
    });
    for (tag, c) in sides {
        lines.push(checkpoint(app, tag, c, &facts(c, dtypes), width));
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

/// Size, tensor count, dtypes (when there is room) and BatchNorm count of a checkpoint.
fn facts(c: &CheckpointSummary, dtypes: bool) -> String {
    let mut parts: Vec<String> = c.origin().into_iter().collect();
    if c.files.len() > 1 {
        parts.push(format!("{} shards", c.files.len()));
    }
    parts.push(format!("{} tensors", c.tensors));
    parts.push(fmt::bytes(c.bytes));
    if dtypes {
        let list: Vec<String> = c.dtypes.iter().map(|(d, n)| format!("{d}×{n}")).collect();
        parts.push(list.join(" "));
    }
    parts.push(format!("{} BatchNorm", c.bn_layers));
    format!("  {}", parts.join(" · "))
}

/// A checkpoint's line: its path (the file name when the path does not fit) and facts.
fn checkpoint(
    app: &App,
    tag: &str,
    c: &CheckpointSummary,
    facts: &str,
    width: usize,
) -> Line<'static> {
    let room = width.saturating_sub(tag.len() + super::format::width(facts));
    // The whole path when it fits, else the file name.
    let full = printable(&c.path);
    let path = if super::format::width(&full) <= room {
        full.into_owned()
    } else {
        fit_middle(super::file_name(&c.path), room.max(12))
    };
    Line::from(vec![
        Span::styled(tag.to_owned(), app.theme.heading()),
        Span::styled(path, app.theme.heading()),
        Span::raw(facts.to_owned()),
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
        let label = crate::tui::theme::change_label(change);
        let (symbol, label) = label.split_once(' ').unwrap_or(("", label));
        tensors.push(Span::styled(
            format!("  {symbol} {n} {label}"),
            theme.change(change),
        ));
    }
    vec![Line::from(layers), Line::from(tensors)]
}

fn groups(frame: &mut Frame, app: &App) {
    let theme = app.theme;
    let r = &app.reports;
    let title = if app.pair() {
        " Verdicts by sub-model, most severe first "
    } else {
        " Sub-models "
    };
    let columns = if app.pair() {
        vec![
            Column {
                title: "sub-model".into(),
                right: false,
                fill: false,
                drop: 0,
            },
            Column {
                title: "layers".into(),
                right: true,
                fill: false,
                drop: 2,
            },
            Column {
                title: "statuses".into(),
                right: false,
                fill: false,
                drop: 1,
            },
            Column {
                title: "verdict".into(),
                right: false,
                fill: true,
                drop: 0,
            },
        ]
    } else {
        vec![
            Column {
                title: "sub-model".into(),
                right: false,
                fill: true,
                drop: 0,
            },
            Column {
                title: "layers".into(),
                right: true,
                fill: false,
                drop: 0,
            },
            Column {
                title: "flagged".into(),
                right: true,
                fill: false,
                drop: 0,
            },
        ]
    };
    let row = |i: usize, name_width: usize| -> ListRow {
        match &app.groups[i] {
            GroupRow::Verdict(_) => {
                let g = r
                    .group(&app.groups[i])
                    .expect("verdict rows exist with the diff");
                let verdict = fit_end(&g.verdict, name_width);
                ListRow {
                    cells: vec![
                        Line::from(format!(
                            "{} {}",
                            severity_symbol(g.severity),
                            printable(&g.prefix)
                        )),
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
                        "{} {}",
                        if *flagged > 0 { "!" } else { " " },
                        printable(prefix)
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
        title,
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
        if r.is_pair() {
            lines.push(Line::from(Span::styled(
                "The verdicts appear here when the comparison is done.",
                theme.dim(),
            )));
        } else {
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
            let head = format!("{} {}", severity_symbol(g.severity), printable(&g.prefix));
            lines.push(Line::from(Span::styled(head, theme.severity(g.severity))));
            lines.extend(wrapped(&g.verdict, width, 0, Style::new()));
            lines.push(Line::from(theme.counts(&g.statuses)));
            // Its layers, biggest drift first, as the Layers screen sorts them.
            let mut layers: Vec<_> = app
                .layer_rows
                .iter()
                .filter(|row| crate::tui::state::in_scope(&row.name, &g.prefix))
                .filter_map(|row| Some((row, r.layer_diff(row)?)))
                .collect();
            let drift = |d: &LayerDiff| d.max_abs_diff.running_mean.unwrap_or(0.0);
            layers.sort_by(|(_, x), (_, y)| drift(y).total_cmp(&drift(x)));
            if !layers.is_empty() {
                lines.push(Line::from(Span::styled(
                    "its layers, biggest drift first:",
                    theme.dim(),
                )));
            }
            for (row, d) in layers {
                let numbers = format!(
                    "  |Δmean| {} |Δvar| {}",
                    opt_num(d.max_abs_diff.running_mean),
                    opt_num(d.max_abs_diff.running_var)
                );
                let room = width.saturating_sub(2 + super::format::width(&numbers));
                lines.push(Line::from(Span::styled(
                    format!(
                        "{} {:room$}{numbers}",
                        status_symbol(d.status),
                        fit_middle(&row.name, room)
                    ),
                    theme.status(d.status),
                )));
            }
        }
        None => {
            let prefix = row.prefix(r).to_owned();
            let layers: Vec<_> =
                r.a.layers
                    .iter()
                    .filter(|l| crate::tui::state::in_module(&l.name, &prefix))
                    .collect();
            let conventions: std::collections::BTreeSet<&str> =
                layers.iter().map(|l| l.convention.as_str()).collect();
            lines.push(Line::from(vec![
                Span::styled(printable(&prefix).into_owned(), theme.heading()),
                Span::raw(format!(
                    "  {} BatchNorm layers ({})",
                    layers.len(),
                    conventions.into_iter().collect::<Vec<_>>().join(", ")
                )),
            ]));
            for l in layers.iter().filter(|l| !l.flags.is_empty()) {
                let flags: Vec<&str> = l.flags.iter().map(|f| f.as_str()).collect();
                lines.push(Line::from(Span::styled(
                    format!("! {}: {}", printable(&l.name), flags.join(", ")),
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
        lines.extend(wrapped(
            &format!("warning: {w}"),
            width,
            2,
            app.theme.warning(),
        ));
    }
    for (k, v) in &c.metadata {
        let k = printable(k);
        let room = width.saturating_sub(super::format::width(&k) + 2).max(8);
        lines.push(Line::from(vec![
            Span::styled(format!("{k}: "), app.theme.dim()),
            Span::raw(fit_middle(v, room)),
        ]));
    }
    lines
}
