//! The help overlay (`?`): every key, over the current screen.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::format::wrap;
use crate::tui::state::App;

/// Every key and what it does, in the order shown.
pub const KEYS: &[(&str, &str)] = &[
    ("1 2 3 4", "Overview, Layers, Detail, Tensors"),
    (
        "↑ ↓  k j",
        "move the selection (or scroll the focused pane)",
    ),
    ("PgUp PgDn", "one page up or down"),
    ("Home End  g G", "first or last row"),
    (
        "Enter  Space",
        "open: a verdict's layers, a layer's detail, a tensor's layer; expand or collapse a module",
    ),
    (
        "← →  h l",
        "tree: collapse or expand; Detail: previous or next layer",
    ),
    (
        "Tab  Shift-Tab",
        "move the focus between the list and the side pane",
    ),
    (
        "/",
        "fuzzy search names (Layers, Tensors); Enter keeps it, Esc cancels",
    ),
    ("s  S", "sort by the next column; reverse the order"),
    ("f", "next filter: status, change or health flag"),
    ("t", "Layers: module tree or flat table"),
    ("d", "Detail: plot A and B, or B − A"),
    (
        "w",
        "Layers, Detail of a pair: write B with A's drifted statistics put back (asks for the path, shows the plan, Enter writes)",
    ),
    (
        "mouse",
        "wheel scrolls, click selects, click again opens, click a tab",
    ),
    ("?", "the key list"),
    (
        "Esc",
        "close, cancel, clear the search and filters, back from Detail",
    ),
    ("q  Ctrl-C", "quit"),
];

/// Symbols used in the lists.
const LEGEND: &[(&str, &str)] = &[
    ("✗", "frozen drift (or stats reset): a problem"),
    ("● ◐", "trained, affine only: expected in a fine-tune"),
    ("− + ≠", "only in A, only in B, incompatible"),
    ("✓", "unchanged"),
    ("!", "health flag on the layer"),
];

/// The key list and legend wrapped to `width` columns.
fn lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let key_width = KEYS
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut add = |keys: &str, what: &str| {
        let text = wrap(what, width.saturating_sub(key_width + 2), 0);
        for (i, part) in text.into_iter().enumerate() {
            let keys = if i == 0 { keys } else { "" };
            out.push(Line::from(vec![
                Span::styled(format!("{keys:key_width$}  "), app.theme.heading()),
                Span::raw(part),
            ]));
        }
    };
    for (keys, what) in KEYS {
        add(keys, what);
    }
    add("", "");
    for (symbol, what) in LEGEND {
        add(symbol, what);
    }
    out
}

/// The overlay's box and its lines.
fn layout(app: &App) -> (Rect, Vec<Line<'static>>) {
    let width = app.size.width.saturating_sub(4).min(96);
    let lines = lines(app, usize::from(width.saturating_sub(2)));
    let height = app
        .size
        .height
        .saturating_sub(2)
        .min(lines.len() as u16 + 2);
    let area = app
        .size
        .centered(Constraint::Length(width), Constraint::Length(height));
    (area, lines)
}

/// How far the key list scrolls when it does not fit.
pub fn max_scroll(app: &App) -> usize {
    let (area, lines) = layout(app);
    lines
        .len()
        .saturating_sub(usize::from(area.height.saturating_sub(2)))
}

/// Draws the overlay.
pub fn render(frame: &mut Frame, app: &App) {
    let (area, lines) = layout(app);
    frame.render_widget(Clear, area);
    let title = if max_scroll(app) > 0 {
        " Keys · ↑↓ scroll · ? or Esc closes "
    } else {
        " Keys · ? or Esc closes "
    };
    let block = Block::bordered()
        .title(title)
        .border_style(app.theme.focused());
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .scroll((app.help_scroll as u16, 0)),
        area,
    );
}
