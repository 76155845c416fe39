//! Layers: every BatchNorm layer as a flat table or a module tree with counts per module,
//! sortable by any column, filtered by status, searched by name; the selection's verdict
//! below.

use ratatui::Frame;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use super::detail;
use super::format::fit_middle;
use super::widgets::{Column, ListRow, NameCells, list_table, side_pane};
use crate::fmt::printable;
use crate::tui::layout::Areas;
use crate::tui::model::LayerColumn;
use crate::tui::state::{App, Entry, GroupEntry, LayerFilter};
use crate::tui::theme::{compact_counts, status_severity};

/// Draws the Layers screen.
pub fn render(frame: &mut Frame, app: &App, areas: &Areas) {
    let v = &app.layers;
    let pair = app.pair();
    let cols = LayerColumn::all(pair);
    let columns: Vec<Column> = cols
        .iter()
        .map(|&c| {
            let sorted = (c == v.sort).then_some(v.descending);
            let fill = c == LayerColumn::Name;
            Column::sortable(c.title(pair), sorted, c.numeric(), fill, c.drop())
        })
        .collect();
    // Matches are marked in the flat table, where the full name is shown.
    let names = NameCells::new(app, &v.query, !v.tree);
    let row = |i: usize, fill: usize| -> ListRow {
        match &v.entries[i] {
            Entry::Group(g) => group_row(app, g, cols, fill),
            Entry::Layer { row, depth, label } => {
                let layer = &app.layer_rows[*row];
                let style = match app.reports.status(layer) {
                    Some(s) => app.theme.status(s),
                    None if !app.reports.flags(layer).is_empty() => app.theme.warning(),
                    None => Style::new(),
                };
                let cells = cols
                    .iter()
                    .map(|&c| {
                        if c == LayerColumn::Name {
                            names.cell(2 * depth, label, fill, style)
                        } else {
                            Line::from(c.cell(&app.reports, layer))
                        }
                    })
                    .collect();
                ListRow { cells, style }
            }
        }
    };
    let title = title(app);
    list_table(
        frame,
        app,
        &title,
        &columns,
        v.entries.len(),
        v.cursor,
        &row,
    );
    side_pane(frame, app, areas.side, " Selected ");
}

/// The table's title: counts, sort, filter, scope and search.
fn title(app: &App) -> String {
    let v = &app.layers;
    let shown = v
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::Layer { .. }))
        .count();
    let mut parts = vec![if v.tree {
        format!("Layers (tree) {shown}/{}", app.layer_rows.len())
    } else {
        format!("Layers {shown}/{}", app.layer_rows.len())
    }];
    if v.filter != LayerFilter::All {
        parts.push(format!("filter: {}", v.filter.label()));
    }
    if let Some(scope) = &v.scope {
        parts.push(format!("in {scope}"));
    }
    if !v.query.is_empty() {
        parts.push(format!("/{}", printable(&v.query)));
    }
    format!(" {} ", parts.join(" · "))
}

/// A module of the tree: its name with an arrow, and counts in the status and flags columns.
fn group_row(app: &App, g: &GroupEntry, cols: &[LayerColumn], fill: usize) -> ListRow {
    let worst = g
        .statuses
        .keys()
        .max_by_key(|&&s| crate::tui::theme::status_rank(s));
    let style = match worst {
        Some(&s) => app.theme.severity(status_severity(s)),
        None if g.flagged > 0 => app.theme.warning(),
        None => Style::new(),
    }
    .add_modifier(Modifier::BOLD);
    let cells = cols
        .iter()
        .map(|&c| match c {
            LayerColumn::Name => {
                let arrow = if g.expanded { "▾" } else { "▸" };
                let indent = "  ".repeat(g.depth);
                let count = format!(" ({})", g.layers);
                let room = fill.saturating_sub(indent.len() + 2 + count.len());
                Line::from(format!(
                    "{indent}{arrow} {}{count}",
                    fit_middle(&g.label, room)
                ))
            }
            LayerColumn::Status => Line::from(compact_counts(&g.statuses)),
            LayerColumn::Flags if g.flagged > 0 => Line::from(format!("{} flagged", g.flagged)),
            _ => Line::default(),
        })
        .collect();
    ListRow { cells, style }
}

/// The selected layer's verdict and inference (or the selected module's counts).
pub fn side_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    match app.selected_entry() {
        None if app.layer_rows.is_empty() => vec![Line::from(Span::styled(
            if app.reports.is_pair() {
                "Neither checkpoint has a BatchNorm layer; Tensors (4) lists every tensor."
            } else {
                "This checkpoint has no BatchNorm layer; Tensors (4) lists every tensor."
            },
            theme.dim(),
        ))],
        None => vec![Line::from(Span::styled(
            "No layer matches. Esc clears the search and filters.",
            theme.dim(),
        ))],
        Some(Entry::Group(g)) => {
            let mut lines = vec![Line::from(Span::styled(
                printable(&g.path).into_owned(),
                theme.heading(),
            ))];
            lines.push(Line::from(format!(
                "{} BatchNorm layers{}",
                g.layers,
                if g.flagged > 0 {
                    format!(", {} with health flags", g.flagged)
                } else {
                    String::new()
                }
            )));
            lines.push(Line::from(theme.counts(&g.statuses)));
            lines.push(Line::from(Span::styled(
                "Enter or ←/→ collapses and expands.",
                theme.dim(),
            )));
            lines
        }
        Some(Entry::Layer { row, .. }) => {
            let row = &app.layer_rows[*row];
            let mut lines = vec![Line::from(Span::styled(
                fit_middle(&row.name, width),
                theme.heading(),
            ))];
            lines.extend(detail::verdict_lines(app, row, width));
            lines.push(Line::from(Span::styled(
                "Enter shows its channels and statistics.",
                theme.dim(),
            )));
            lines
        }
    }
}
