//! Work off the UI thread: the full comparison of two checkpoints, which reads every byte
//! of both and can take minutes on multi-gigabyte files, then `explain` (which re-runs
//! BatchNorm on the captured or synthetic inputs). Progress and the reports come back over
//! a channel; the UI keeps answering keys meanwhile. Also the restore dialog's plan and
//! write.

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::thread;

use std::path::PathBuf;

use super::model::Progress;
use super::restore::Request;
use super::runner::Message;
use super::session::Session;
use crate::audit::diff::{DiffOptions, diff};
use crate::audit::explain::{ExplainOptions, explain};
use crate::audit::restore::{self, RestoreOptions, RestoreReport};
use crate::output::Output;

/// Starts comparing and explaining A and B in the background when there are two
/// checkpoints.
pub fn spawn(session: &Session, options: DiffOptions, tx: Sender<Message>) -> io::Result<()> {
    let Some(b) = &session.b else {
        return Ok(());
    };
    let a = Arc::clone(&session.a.checkpoint);
    let b = Arc::clone(&b.checkpoint);
    let activations = session.activations.clone();
    thread::Builder::new()
        .name("bnaudit-diff".to_owned())
        .spawn(move || {
            // The engine reports often, from several threads: pass on whole per-mille steps.
            let last = AtomicU64::new(u64::MAX);
            let progress = |done: u64, total: u64| {
                let step = done.saturating_mul(1000).checked_div(total).unwrap_or(1000);
                if last.swap(step, Ordering::Relaxed) != step {
                    let _ = tx.send(Message::Progress(Progress { done, total }));
                }
            };
            let report = catching("comparing A and B", || {
                diff(&a, &b, &options, Some(&progress)).map_err(|e| e.to_string())
            });
            let _ = tx.send(Message::Diff(Box::new(report)));
            let explained = catching("explaining the drift", || {
                explain(&a, &b, activations.as_deref(), &ExplainOptions::default())
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(Message::Explain(Box::new(explained)));
        })?;
    Ok(())
}

/// Runs one job, its panic (a bug) turned into its error: the UI shows it and keeps
/// running; the runner's panic hook leaves the terminal alone for threads other than the
/// UI's.
pub(super) fn catching<T>(
    what: &str,
    job: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|payload| {
        Err(format!(
            "internal error while {what}: {}",
            message(&*payload)
        ))
    })
}

/// The text a panic was raised with.
fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// What a restore job sends back: the path it was for, and its report or why it failed.
pub type RestoreResult = (PathBuf, Result<RestoreReport, String>);

/// Plans, or plans and writes, a restore of the session's pair in the background, as
/// `bnaudit restore A B -o PATH` without patterns does (every `frozen_stats_drift` layer).
/// A panic comes back as the job's error, as for the comparison, so the dialog always
/// hears back.
pub fn restore(
    session: &Session,
    request: Request,
    options: DiffOptions,
    tx: Sender<RestoreResult>,
) -> io::Result<()> {
    let Some(b) = &session.b else {
        return Ok(());
    };
    let a = Arc::clone(&session.a.checkpoint);
    let b = Arc::clone(&b.checkpoint);
    let (path, write) = match request {
        Request::Plan(p) => (p, false),
        Request::Write(p) => (p, true),
    };
    thread::Builder::new()
        .name("bnaudit-restore".to_owned())
        .spawn(move || {
            let run = || -> Result<RestoreReport, String> {
                restore::refuse_inputs(&path, &a, &b).map_err(|e| e.to_string())?;
                let options = RestoreOptions {
                    scope: None,
                    config: None,
                    all: false,
                    diff: options,
                    output: path.clone(),
                    dry_run: !write,
                };
                let plan = restore::plan(&a, &b, &options, None).map_err(|e| e.to_string())?;
                if write {
                    let mut out = Output::create(&path).map_err(|e| e.to_string())?;
                    plan.write(&mut out).map_err(|e| e.to_string())?;
                    out.commit().map_err(|e| e.to_string())?;
                }
                Ok(plan.report)
            };
            let what = if write {
                "writing the restore"
            } else {
                "planning the restore"
            };
            let result = catching(what, run);
            let _ = tx.send((path, result));
        })?;
    Ok(())
}
