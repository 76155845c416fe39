//! Where each pane goes for a terminal size: one pure function shared by the renderer and by
//! the state (page sizes, mouse clicks), so a click lands on the row that was drawn there.

use ratatui::layout::{Constraint, Layout, Rect};

use super::state::Screen;

/// The panes of a screen. Every screen has a tab bar, a main pane (a list, or the plots),
/// a side pane (details of the selection) and a footer; Overview adds a top pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Tab bar, first line.
    pub tabs: Rect,
    /// Overview's checkpoint summary (empty elsewhere).
    pub top: Rect,
    /// The list (or the Detail plots).
    pub main: Rect,
    /// Details of the selection.
    pub side: Rect,
    /// Key hints, search prompt and progress, last line.
    pub footer: Rect,
}

/// Smallest terminal the screens are laid out for; below it a notice asks for more room.
pub const MIN_SIZE: (u16, u16) = (40, 12);

/// Terminal width from which Detail puts plots and facts side by side.
const WIDE: u16 = 110;

/// Lines of the Overview's summary pane (with borders).
pub fn top_height(pair: bool) -> u16 {
    if pair { 6 } else { 5 }
}

/// Lays out `screen` in a terminal of `size`; `groups` is the length of the Overview's
/// list, which gets no more room than it needs so the selected verdict has the rest.
pub fn areas(size: Rect, screen: Screen, pair: bool, groups: usize) -> Areas {
    let [tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(size);
    let side_height = |min: u16, max: u16| (body.height / 4).clamp(min, max);
    let (top, main, side) = match screen {
        Screen::Overview => {
            let rest = body.height.saturating_sub(top_height(pair));
            let list = (groups as u16 + 3).clamp(5, rest.saturating_sub(side_height(5, 9)).max(5));
            let [top, main, side] = Layout::vertical([
                Constraint::Length(top_height(pair)),
                Constraint::Length(list),
                Constraint::Min(0),
            ])
            .areas(body);
            (top, main, side)
        }
        Screen::Layers => {
            let [main, side] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(side_height(6, 12))])
                    .areas(body);
            (Rect::default(), main, side)
        }
        Screen::Tensors => {
            let [main, side] =
                Layout::vertical([Constraint::Min(3), Constraint::Length(side_height(5, 7))])
                    .areas(body);
            (Rect::default(), main, side)
        }
        Screen::Detail if size.width >= WIDE => {
            let [main, side] =
                Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(body);
            (Rect::default(), main, side)
        }
        Screen::Detail => {
            let [main, side] =
                Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(body);
            (Rect::default(), main, side)
        }
    };
    Areas {
        tabs,
        top,
        main,
        side,
        footer,
    }
}

/// The rows of a bordered table with one header line: where data rows are drawn.
pub fn table_rows(main: Rect) -> Rect {
    let inside = inner(main);
    Rect {
        y: inside.y + 1,
        height: inside.height.saturating_sub(1),
        ..inside
    }
}

/// The inside of a bordered pane.
pub fn inner(pane: Rect) -> Rect {
    Rect {
        x: pane.x + 1,
        y: pane.y + 1,
        width: pane.width.saturating_sub(2),
        height: pane.height.saturating_sub(2),
    }
}

/// Label of each tab and the columns it covers in the tab bar.
pub fn tabs() -> Vec<(Screen, String, std::ops::Range<u16>)> {
    let mut x = 0u16;
    Screen::ALL
        .into_iter()
        .map(|s| {
            let label = format!(" {} {} ", s.key(), s.title());
            let width = label.chars().count() as u16;
            let span = x..x + width;
            x += width + 1;
            (s, label, span)
        })
        .collect()
}

/// Whether `(column, row)` is inside `area`.
pub fn contains(area: Rect, column: u16, row: u16) -> bool {
    column >= area.x && column < area.right() && row >= area.y && row < area.bottom()
}
