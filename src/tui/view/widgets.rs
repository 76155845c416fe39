//! Building blocks the views share: bordered panes, the scrolled side pane, and list tables
//! whose columns hide from the right when the terminal is narrow.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

use super::format::{fit_middle, highlighted, width};
use super::side_lines;
use crate::fmt::printable;
use crate::tui::layout;
use crate::tui::search::Fuzzy;
use crate::tui::state::{App, Cursor, Pane};

/// Draws the side pane of the current screen: its text scrolled, and where the text does
/// not fit, the lines shown out of how many in the title.
pub fn side_pane(frame: &mut Frame, app: &App, area: Rect, title: &str) {
    let inner = layout::inner(area);
    let lines = side_lines(app, inner.width);
    let height = usize::from(inner.height);
    let scroll = app.side_scroll.min(lines.len().saturating_sub(height));
    let mut spans = vec![Span::raw(title.to_owned())];
    if lines.len() > height {
        let last = (scroll + height).min(lines.len());
        let hint = if app.focus == Pane::Side {
            "↑↓"
        } else {
            "Tab ↓"
        };
        spans.push(Span::styled(
            format!("─ {}-{last} of {} · {hint} ", scroll + 1, lines.len()),
            app.theme.dim(),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(pane(app, Pane::Side, Line::from(spans)))
            .scroll((scroll as u16, 0)),
        area,
    );
}

/// A pane's border, highlighted when it has the focus.
pub fn pane<'a>(app: &App, pane: Pane, title: impl Into<Line<'a>>) -> Block<'a> {
    let block = Block::bordered().title(title);
    if app.focus == pane {
        block.border_style(app.theme.focused())
    } else {
        block.border_style(app.theme.dim())
    }
}

/// Width the fill column should get before other columns are hidden.
const MIN_FILL: usize = 30;

/// A column of a list table.
pub struct Column {
    /// Header.
    pub title: String,
    /// Right-aligned (numbers).
    pub right: bool,
    /// Takes the room left by the others (names).
    pub fill: bool,
    /// When the fill column gets too narrow, columns are hidden, highest `drop` first;
    /// 0 is never hidden.
    pub drop: u8,
}

impl Column {
    /// A column whose header shows ↓ or ↑ when the list is sorted by it.
    pub fn sortable(
        title: &str,
        sorted: Option<bool>,
        right: bool,
        fill: bool,
        drop: u8,
    ) -> Column {
        let arrow = match sorted {
            None => "",
            Some(true) => "↓",
            Some(false) => "↑",
        };
        Column {
            title: format!("{title}{arrow}"),
            right,
            fill,
            drop,
        }
    }
}

/// Names in the fill column: fitted to its width and, when shown whole, with the search's
/// matches marked.
pub struct NameCells {
    fuzzy: std::cell::RefCell<Option<Fuzzy>>,
    matched: Style,
}

impl NameCells {
    /// Marks matches of `query` (none when empty or `mark` is false).
    pub fn new(app: &App, query: &str, mark: bool) -> NameCells {
        NameCells {
            fuzzy: std::cell::RefCell::new((mark && !query.is_empty()).then(|| Fuzzy::new(query))),
            matched: app.theme.matched(),
        }
    }

    /// `name` after `indent` spaces, fitted into `fill` columns.
    pub fn cell(&self, indent: usize, name: &str, fill: usize, style: Style) -> Line<'static> {
        let pad = " ".repeat(indent);
        let shown = fit_middle(name, fill.saturating_sub(indent));
        match self.fuzzy.borrow_mut().as_mut() {
            // Sizing passes `usize::MAX`: no marks needed there.
            Some(f) if shown == *printable(name) && fill != usize::MAX => {
                let mut line = highlighted(&shown, &f.positions(&shown), style, self.matched);
                line.spans.insert(0, Span::raw(pad));
                line
            }
            _ => Line::from(format!("{pad}{shown}")),
        }
    }
}

/// One row of a list table: its cells and a style for the whole row.
pub struct ListRow {
    /// Cells, one per column.
    pub cells: Vec<Line<'static>>,
    /// Row style (severity colour).
    pub style: Style,
}

/// Draws the main pane as a table titled `title` of `len` rows, building only the visible
/// ones with `row(index, fill_width)`; the builder fits its fill column's text into
/// `fill_width`.
pub fn list_table(
    frame: &mut Frame,
    app: &App,
    title: &str,
    columns: &[Column],
    len: usize,
    cursor: Cursor,
    row: &dyn Fn(usize, usize) -> ListRow,
) {
    let area = app.areas().main;
    let block = pane(app, Pane::Main, title.to_owned());
    let inner = layout::table_rows(area);
    let height = usize::from(inner.height);
    let shown = cursor.offset..len.min(cursor.offset + height);
    // Size columns over every row when the list is small (no jitter while scrolling), else
    // over the visible rows.
    let sized = if len <= 2000 { 0..len } else { shown.clone() };
    let mut widths: Vec<usize> = columns.iter().map(|c| width(&c.title)).collect();
    for i in sized {
        for (w, cell) in widths.iter_mut().zip(&row(i, usize::MAX).cells) {
            *w = (*w).max(cell.width());
        }
    }
    // Hide the least important columns while the fill column (names) is cramped.
    let mut keep = vec![true; columns.len()];
    let wanted = columns
        .iter()
        .zip(&widths)
        .filter(|(c, _)| c.fill)
        .map(|(_, &w)| w.min(MIN_FILL))
        .max()
        .unwrap_or(0);
    let fill = loop {
        let kept: Vec<(&Column, usize)> = columns
            .iter()
            .zip(&widths)
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((c, w), _)| (c, *w))
            .collect();
        let fixed: usize = kept
            .iter()
            .filter(|(c, _)| !c.fill)
            .map(|(_, w)| w + 1)
            .sum();
        let fill = usize::from(inner.width).saturating_sub(fixed);
        let victim = (0..columns.len())
            .filter(|&i| keep[i] && columns[i].drop > 0)
            .max_by_key(|&i| columns[i].drop);
        match victim {
            Some(i) if fill < wanted => keep[i] = false,
            _ => break fill.max(8),
        }
    };
    let shown_columns: Vec<&Column> = columns
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    let constraints: Vec<Constraint> = columns
        .iter()
        .zip(&widths)
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|((c, &w), _)| Constraint::Length(if c.fill { fill } else { w } as u16))
        .collect();
    let header = Row::new(shown_columns.iter().map(|c| {
        let line = Line::from(c.title.clone());
        Cell::from(if c.right { line.right_aligned() } else { line })
    }))
    .style(app.theme.heading());
    let rows: Vec<Row> = shown
        .map(|i| {
            let r = row(i, fill);
            let cells = r
                .cells
                .into_iter()
                .zip(columns)
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|((line, c), _)| {
                    Cell::from(if c.right { line.right_aligned() } else { line })
                });
            Row::new(cells.collect::<Vec<_>>()).style(r.style)
        })
        .collect();
    let mut state = TableState::default()
        .with_offset(0)
        .with_selected((len > 0).then(|| cursor.selected - cursor.offset));
    let table = Table::new(rows, constraints)
        .header(header)
        .block(block)
        .column_spacing(1)
        .row_highlight_style(app.theme.selected());
    frame.render_stateful_widget(table, area, &mut state);
    if len == 0 {
        frame.render_widget(
            Paragraph::new(Span::styled("nothing to show", app.theme.dim())),
            inner,
        );
    }
}
