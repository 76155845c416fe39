//! The restore dialog's overlay: the path being typed, the plan, the outcome.

use ratatui::Frame;
use ratatui::layout::Constraint;
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::fmt::printable;
use crate::tui::restore::Dialog;
use crate::tui::state::App;

/// The dialog's title and lines.
fn content(dialog: &Dialog) -> (&'static str, Vec<String>) {
    match dialog {
        Dialog::Path(p) => (
            " Restore · Enter shows the plan · Esc cancels ",
            vec![
                "Write B with A's statistics put back in every frozen_stats_drift layer, to:"
                    .to_owned(),
                format!("> {p}_"),
                "(a safetensors file; never A, B or one of their files)".to_owned(),
            ],
        ),
        Dialog::Planning(p) => (
            " Restore · Esc cancels ",
            vec![format!("Planning the restore into {} …", p.display())],
        ),
        Dialog::Plan { lines, .. } => {
            (" Restore plan · Enter writes · Esc cancels ", lines.clone())
        }
        Dialog::Writing(p) => (
            " Restore · Esc closes ",
            vec![format!("Writing {} …", p.display())],
        ),
        Dialog::Done { lines, failed } => (
            if *failed {
                " Restore failed · Enter or Esc closes "
            } else {
                " Restored · Enter or Esc closes "
            },
            lines.clone(),
        ),
    }
}

/// Draws the overlay; a plan too long for the screen keeps its first and last lines.
pub fn render(frame: &mut Frame, app: &App, dialog: &Dialog) {
    let (title, mut lines) = content(dialog);
    let width = app.size.width.saturating_sub(4).min(110);
    let room = usize::from(app.size.height.saturating_sub(4)).max(3);
    if lines.len() > room {
        let tail = lines.split_off(lines.len() - 2);
        lines.truncate(room - 3);
        lines.push("  …".to_owned());
        lines.extend(tail);
    }
    let height = (lines.len() as u16 + 2).min(app.size.height);
    let area = app
        .size
        .centered(Constraint::Length(width), Constraint::Length(height));
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(title)
        .border_style(app.theme.focused());
    // Paths and the report's names may come from a checkpoint (the report's are escaped
    // already, and escaping is idempotent).
    let lines: Vec<Line<'static>> = lines
        .iter()
        .map(|l| Line::from(printable(l).into_owned()))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
