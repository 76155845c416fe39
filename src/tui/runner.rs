//! The runner owns the terminal: raw mode, alternate screen and mouse capture on entry, all
//! restored on quit, on error and on panic (a panic hook restores before the message is
//! printed). It feeds terminal events and background results to the state and redraws.

use std::io::{self, stdout};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::layout::Rect;

use super::events;
use super::model::{Job, Progress, Reports};
use super::session::Session;
use super::state::App;
use super::theme::Theme;
use super::view;
use crate::audit::diff::{DiffOptions, DiffReport};
use crate::audit::explain::ExplainReport;

/// What the background thread reports.
pub enum Message {
    /// The comparison advanced.
    Progress(Progress),
    /// The comparison finished, or failed with a message.
    Diff(Box<Result<DiffReport, String>>),
    /// The explanation finished, or failed with a message.
    Explain(Box<Result<ExplainReport, String>>),
}

/// Restores the terminal when dropped: on quit, on error, and while unwinding.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture);
        ratatui::restore();
        super::fault::disarm();
    }
}

/// Enters the UI's terminal mode and installs the panic hook.
fn enter() -> io::Result<(TerminalGuard, DefaultTerminal)> {
    // Created first so that a failure half-way (raw mode on, no alternate screen) restores.
    let guard = TerminalGuard;
    super::fault::arm();
    // Raw mode, alternate screen, and a panic hook that restores both.
    let terminal = ratatui::try_init()?;
    let restore_terminal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(stdout(), DisableMouseCapture);
        restore_terminal(info);
    }));
    execute!(stdout(), EnableMouseCapture)?;
    Ok((guard, terminal))
}

/// Runs the UI over `session` and its `reports` until the user quits; with two checkpoints
/// they are compared in the background with `options`.
pub fn run(
    session: Session,
    reports: Reports,
    options: DiffOptions,
    theme: Theme,
) -> io::Result<()> {
    let (_guard, mut terminal) = enter()?;
    let size = terminal.size()?;
    let mut app = App::new(reports, theme, Rect::new(0, 0, size.width, size.height));
    let (tx, rx) = mpsc::channel();
    super::jobs::spawn(&session, options.clone(), tx)?;
    event_loop(&mut terminal, &mut app, &session, &rx, &options)
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    session: &Session,
    rx: &Receiver<Message>,
    options: &DiffOptions,
) -> io::Result<()> {
    // Restores report on a channel of their own: the comparison's channel closing is how
    // a panicked comparison is noticed.
    let (restore_tx, restore_rx) = mpsc::channel();
    let mut listening = true;
    // Draw only when something changed: an idle UI costs no CPU.
    let mut dirty = true;
    loop {
        if let Some(row) = app.wanted_channels() {
            let name = row.name.clone();
            let channels = session.channels(row).map_err(|e| e.to_string());
            app.on_channels(name, channels);
        }
        if dirty {
            terminal.draw(|frame| view::render(frame, app))?;
            dirty = false;
        }
        // Wait briefly for input so that background progress still shows.
        if event::poll(Duration::from_millis(100))? {
            // Take every pending event before the next frame so key repeat never lags.
            loop {
                let event = event::read()?;
                if let Some(action) = events::action(&event, app.typing()) {
                    app.apply(action);
                    dirty = true;
                }
                if app.quit || !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        while listening {
            let message = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    listening = false;
                    // The worker ended without a report: it panicked.
                    let lost = || "the background work stopped unexpectedly".to_owned();
                    if matches!(app.reports.diff, Job::Running(_)) {
                        app.on_diff(Err(lost()));
                    }
                    if matches!(app.reports.explain, Job::Running(_)) {
                        app.on_explain(Err(lost()));
                    }
                    dirty = true;
                    break;
                }
            };
            match message {
                Message::Progress(p) => app.on_progress(p),
                Message::Diff(d) => app.on_diff(*d),
                Message::Explain(e) => app.on_explain(*e),
            }
            dirty = true;
        }
        if let Some(request) = app.restore_request.take() {
            super::jobs::restore(session, request, options.clone(), restore_tx.clone())?;
        }
        while let Ok((path, result)) = restore_rx.try_recv() {
            app.on_restore(&path, result);
            dirty = true;
        }
        if app.quit {
            return Ok(());
        }
    }
}
