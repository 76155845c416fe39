//! The runner owns the terminal: raw mode, alternate screen and mouse capture on entry, all
//! restored when the UI ends: on quit, on error, on SIGTERM, SIGINT or SIGHUP (from
//! [`crate::signals`], after a restore being written has lost its temporary file; the exit
//! code is 128 + the signal's number), and on a panic of the UI thread (a panic hook
//! restores before the message is printed). A background job's panic is that job's error,
//! shown in the UI, which keeps running. It feeds terminal events and background results to
//! the state and redraws.

use std::io::{self, stdout};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{self, LeaveAlternateScreen};
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
        restore();
        super::fault::disarm();
        let _ = crate::signals::restore_terminal_with(None);
    }
}

/// Mouse capture off, cooked mode, the main screen back.
fn restore() {
    // Each step whatever the others did, and no `ratatui::restore`: it reports a failure
    // with `eprintln!`, which panics when the terminal is gone (a hang-up), and a panic on
    // the signal handler's thread would keep the process from exiting.
    let _ = execute!(stdout(), DisableMouseCapture);
    let _ = terminal::disable_raw_mode();
    let _ = execute!(stdout(), LeaveAlternateScreen);
}

/// Restores the terminal on a signal, from the signal handler's thread.
fn restore_on_signal() {
    // Never unlocked: the process exits right after, and the UI thread must not draw over
    // the restored screen meanwhile (the lock is reentrant, so `restore` still writes).
    std::mem::forget(stdout().lock());
    restore();
}

/// Enters the UI's terminal mode and installs the panic hook.
fn enter() -> io::Result<(TerminalGuard, DefaultTerminal)> {
    // Before the terminal changes: a signal from here on restores it on the way out.
    crate::signals::restore_terminal_with(Some(restore_on_signal))?;
    // Created first so that a failure half-way (raw mode on, no alternate screen) restores.
    let guard = TerminalGuard;
    super::fault::arm();
    // Raw mode, alternate screen, and ratatui's panic hook that restores both.
    let terminal = ratatui::try_init()?;
    let restore_terminal = std::panic::take_hook();
    install_panic_hook(
        thread::current().id(),
        Box::new(move |info| {
            let _ = execute!(stdout(), DisableMouseCapture);
            restore_terminal(info);
        }),
    );
    execute!(stdout(), EnableMouseCapture)?;
    Ok((guard, terminal))
}

/// What a panic hook is.
type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Panics of the UI thread go to `on_ui_panic` (which restores the terminal, then prints);
/// the others are background jobs', caught by [`super::jobs`] as the job's error and shown
/// in the UI: restoring the terminal then would leave the UI running in a cooked terminal,
/// and a message printed over the alternate screen would garble it.
fn install_panic_hook(ui: ThreadId, on_ui_panic: Hook) {
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().id() == ui {
            on_ui_panic(info);
        }
    }));
}

/// Runs the UI over `session` and its `reports` until the user quits (a terminating signal
/// ends the process, see [`crate::signals`]); with two checkpoints they are compared in the
/// background with `options`.
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::install_panic_hook;
    use crate::tui::jobs::catching;

    /// A job's panic comes back as its error and leaves the terminal alone; a panic of the
    /// UI thread restores it.
    #[test]
    fn only_a_ui_panic_restores_the_terminal() {
        let restored = Arc::new(AtomicUsize::new(0));
        let previous = std::panic::take_hook();
        let count = Arc::clone(&restored);
        install_panic_hook(
            thread::current().id(),
            Box::new(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let job: Result<(), String> = thread::spawn(|| {
            catching("comparing", || -> Result<(), String> {
                panic!("header sizes were checked on open")
            })
        })
        .join()
        .expect("the job thread ends normally");
        let after_job = restored.load(Ordering::SeqCst);
        let ui = std::panic::catch_unwind(|| panic!("the UI failed"));
        let after_ui = restored.load(Ordering::SeqCst);
        std::panic::set_hook(previous);
        assert_eq!(
            job,
            Err("internal error while comparing: header sizes were checked on open".to_owned())
        );
        assert_eq!(after_job, 0, "a job's panic does not restore the terminal");
        assert!(ui.is_err());
        assert_eq!(after_ui, 1, "the UI thread's panic does");
    }
}
