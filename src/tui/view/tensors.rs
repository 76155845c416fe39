//! Tensors: every tensor of the checkpoint(s), with dtype, shape and size and, for a pair,
//! whether and how much it changed; searchable, sortable, filterable.

use ratatui::Frame;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::format::wrapped;
use super::widgets::{Column, ListRow, NameCells, list_table, side_pane};
use crate::fmt::{bytes, opt_num, printable};
use crate::tui::layout::Areas;
use crate::tui::model::{TensorColumn, shape};
use crate::tui::state::{App, TensorFilter};

/// Draws the Tensors screen.
pub fn render(frame: &mut Frame, app: &App, areas: &Areas) {
    let v = &app.tensors;
    let cols = TensorColumn::all(app.pair());
    let columns: Vec<Column> = cols
        .iter()
        .map(|&c| {
            let sorted = (c == v.sort).then_some(v.descending);
            let fill = c == TensorColumn::Name;
            Column::sortable(c.title(), sorted, c.numeric(), fill, c.drop())
        })
        .collect();
    let names = NameCells::new(app, &v.query, true);
    let row = |i: usize, fill: usize| -> ListRow {
        let t = &app.tensor_rows[v.entries[i]];
        let style = app
            .reports
            .change(t)
            .map_or_else(Style::new, |c| app.theme.change(c));
        let cells = cols
            .iter()
            .map(|&c| {
                if c == TensorColumn::Name {
                    names.cell(0, &t.name, fill, style)
                } else {
                    Line::from(c.cell(&app.reports, t))
                }
            })
            .collect();
        ListRow { cells, style }
    };
    let mut parts = vec![format!(
        "Tensors {}/{}",
        v.entries.len(),
        app.tensor_rows.len()
    )];
    if v.filter != TensorFilter::All {
        parts.push(format!("filter: {}", v.filter.label()));
    }
    if !v.query.is_empty() {
        parts.push(format!("/{}", printable(&v.query)));
    }
    let title = format!(" {} ", parts.join(" · "));
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

/// The selected tensor in full: name, each side, the change, its BatchNorm layer.
pub fn side_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let Some(t) = app.selected_tensor() else {
        return vec![Line::from(Span::styled(
            "No tensor matches. Esc clears the search and filter.",
            theme.dim(),
        ))];
    };
    let mut lines = wrapped(&t.name, width, 2, theme.heading());
    let side = |tag: &str, e: Option<&crate::audit::TensorEntry>| match e {
        Some(e) => format!(
            "{tag}{} {} · {}{}",
            e.dtype,
            shape(&e.shape),
            bytes(e.bytes),
            if e.decodable { "" } else { " · not decodable" }
        ),
        None => format!("{tag}absent"),
    };
    if r.is_pair() {
        lines.push(Line::from(side("A ", r.tensor_a(t))));
        lines.push(Line::from(side("B ", r.tensor_b(t))));
    } else {
        lines.push(Line::from(side("", r.tensor_a(t))));
    }
    if let Some(d) = r.tensor_diff(t) {
        let mut facts = vec![crate::tui::theme::change_label(d.change).to_owned()];
        if let Some(n) = d.changed_elements {
            facts.push(format!("{n} elements differ"));
        }
        if d.max_abs_diff.is_some() {
            facts.push(format!("max|Δ| {}", opt_num(d.max_abs_diff)));
        }
        if d.rel_l2.is_some() {
            facts.push(format!("rel L2 {}", opt_num(d.rel_l2)));
        }
        lines.push(Line::from(Span::styled(
            facts.join(" · "),
            theme.change(d.change),
        )));
    }
    let layer = r
        .tensor_b(t)
        .or(r.tensor_a(t))
        .and_then(|e| e.bn_layer.clone());
    if let Some(layer) = layer {
        lines.push(Line::from(Span::styled(
            format!("BatchNorm layer {}: Enter opens it.", printable(&layer)),
            theme.dim(),
        )));
    }
    lines
}
