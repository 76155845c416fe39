//! Drawing a frame: the tab bar, the current screen (one render function per view), the
//! footer, and the help overlay on top. Pure functions of [`App`]: everything that draws
//! lives under this module, everything that decides (state, events, jobs) beside it.

pub mod detail;
pub mod format;
pub mod help;
pub mod layers;
pub mod overview;
pub mod restore;
pub mod tensors;
pub mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{LineGauge, Paragraph};

use crate::fmt::printable;
use crate::tui::layout::{self, MIN_SIZE};
use crate::tui::model::Job;
use crate::tui::state::{App, Screen};
use format::{fit_middle, width};

/// Draws the whole UI.
pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "Terminal too small ({}×{}): bnaudit needs {}×{}. Enlarge it, or press q.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(
            Paragraph::new(text).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let areas = app.areas();
    tabs(frame, app, areas.tabs);
    match app.screen {
        Screen::Overview => overview::render(frame, app, &areas),
        Screen::Layers => layers::render(frame, app, &areas),
        Screen::Detail => detail::render(frame, app, &areas),
        Screen::Tensors => tensors::render(frame, app, &areas),
    }
    footer(frame, app, areas.footer);
    if app.help {
        help::render(frame, app);
    }
    if let Some(dialog) = &app.restore {
        restore::render(frame, app, dialog);
    }
}

/// The side pane's text for the current screen at `width` columns (also used to bound
/// scrolling).
pub fn side_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    match app.screen {
        Screen::Overview => overview::side_lines(app, width),
        Screen::Layers => layers::side_lines(app, width),
        Screen::Detail => detail::side_lines(app, width),
        Screen::Tensors => tensors::side_lines(app, width),
    }
}

fn tabs(frame: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    let mut spans = Vec::new();
    for (screen, label, _) in layout::tabs() {
        let style = if screen == app.screen {
            theme
                .selected()
                .add_modifier(ratatui::style::Modifier::BOLD)
        } else {
            theme.dim()
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    let used: usize = spans.iter().map(|s| width(&s.content)).sum();
    let files = match &app.reports.b {
        Some(b) => format!(
            "{} → {}",
            file_name(&app.reports.a.checkpoint.path),
            file_name(&b.checkpoint.path)
        ),
        None => file_name(&app.reports.a.checkpoint.path).to_owned(),
    };
    let room = usize::from(area.width).saturating_sub(used + 1);
    if room > 8 {
        let files = fit_middle(&files, room);
        let pad = room - width(&files);
        spans.push(Span::raw(" ".repeat(pad)));
        spans.push(Span::styled(files, theme.heading()));
    }
    frame.render_widget(Line::from(spans), area);
}

/// The last component of a path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn footer(frame: &mut Frame, app: &App, area: Rect) {
    let theme = app.theme;
    // Right: the comparison's gauge, then explain's state.
    let status: Option<Span> = match (&app.reports.diff, &app.reports.explain) {
        (Job::Running(_), _) => None,
        (Job::Failed(_), _) => Some(Span::styled("✗ comparison failed", theme.error())),
        (_, Job::Running(_)) => Some(Span::styled("explaining…", theme.dim())),
        (_, Job::Failed(_)) => Some(Span::styled("✗ explain failed", theme.error())),
        _ => None,
    };
    let gauge_width = match (&app.reports.diff, &status) {
        (Job::Running(_), _) => 30.min(area.width / 2),
        (_, Some(s)) => s.width() as u16,
        _ => 0,
    };
    let [left, right] = Layout::horizontal([Constraint::Min(0), Constraint::Length(gauge_width)])
        .spacing(1)
        .areas(area);
    let line = if app.editing.is_some() {
        let count = match app.screen {
            Screen::Tensors => app.tensors.entries.len(),
            _ => app.layers.entries.len(),
        };
        Line::from(vec![
            Span::styled("/", theme.heading()),
            Span::raw(printable(app.query()).into_owned()),
            Span::styled("█", theme.dim()),
            Span::styled(
                format!("  {count} shown · Enter keep · Esc cancel"),
                theme.dim(),
            ),
        ])
    } else {
        let hints: &[(&str, &str)] = match app.screen {
            Screen::Overview => &[("↑↓", "select"), ("⏎", "its layers"), ("1-4", "screens")],
            Screen::Layers => &[
                ("⏎", "detail"),
                ("/", "search"),
                ("s", "sort"),
                ("f", "filter"),
                ("t", "tree"),
            ],
            Screen::Detail if app.pair() => &[("←→", "layer"), ("d", "Δ/A,B"), ("Tab", "pane")],
            Screen::Detail => &[("←→", "layer"), ("Tab", "pane")],
            Screen::Tensors => &[
                ("/", "search"),
                ("s", "sort"),
                ("f", "filter"),
                ("⏎", "layer"),
            ],
        };
        let mut spans = Vec::new();
        for (key, what) in hints.iter().chain(&[("?", "help"), ("q", "quit")]) {
            spans.push(Span::styled(format!(" {key}"), theme.heading()));
            spans.push(Span::styled(format!(" {what} "), theme.dim()));
        }
        Line::from(spans)
    };
    frame.render_widget(line, left);
    match &app.reports.diff {
        Job::Running(p) => {
            let gauge = LineGauge::default()
                .ratio(p.ratio())
                .label(format!("comparing {:>3.0}%", p.ratio() * 100.0))
                .filled_style(theme.focused())
                .unfilled_style(theme.dim());
            frame.render_widget(gauge, right);
        }
        _ => {
            if let Some(status) = status {
                frame.render_widget(Line::from(status), right);
            }
        }
    }
}
