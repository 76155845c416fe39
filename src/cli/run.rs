//! Dispatch of parsed arguments to audits and renderers, and the exit-code mapping.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::demo::DemoPair;
use super::progress::ProgressLine;
use super::{CheckArgs, Cli, ColorChoice, Command, Format, OutputArgs, RestoreArgs};
use crate::audit::align::normalise_prefix;
use crate::audit::check::{CheckError, CheckOptions};
use crate::audit::compare::Progress;
use crate::audit::config::{self, ScopePatterns};
use crate::audit::explain::{ExplainError, Explainer};
use crate::audit::restore::{self, RestoreError, RestoreOptions};
use crate::audit::scope::Scope;
use crate::audit::{self, DiffOptions, ExplainOptions, LsOptions};
use crate::checkpoint::write::WriteError;
use crate::checkpoint::{Checkpoint, CheckpointError, ReadMode};
use crate::output;
use crate::report::{self, Style};
use crate::tui;

/// A failed run: the exit code and what to print on stderr.
#[derive(Debug)]
pub struct Failure {
    /// Process exit code (2 usage, 3 input).
    pub code: u8,
    /// The message.
    pub error: anyhow::Error,
}

impl Failure {
    /// A usage error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }

    /// An input error (exit 3).
    pub fn input(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 3,
            error: error.into(),
        }
    }
}

impl From<CheckpointError> for Failure {
    fn from(e: CheckpointError) -> Failure {
        Failure::input(e)
    }
}

impl From<ExplainError> for Failure {
    fn from(e: ExplainError) -> Failure {
        Failure::input(e)
    }
}

/// Runs the command line; `Ok` carries the exit code (0, or 1 for `check` violations).
pub fn run(cli: Cli) -> Result<u8, Failure> {
    let output = match &cli.command {
        Some(Command::Ls(a)) => &a.output,
        Some(Command::View(a)) => &a.output,
        Some(Command::Demo(a)) => &a.output,
        Some(Command::Explain(a)) => &a.output,
        Some(Command::Diff(a)) => &a.output,
        Some(Command::Check(a)) => &a.output,
        Some(Command::Restore(a)) => &a.output,
        None => &cli.view,
    };
    let is_check = matches!(cli.command, Some(Command::Check(_)));
    if !is_check
        && matches!(
            output.format,
            Format::Junit | Format::Github | Format::Markdown
        )
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--format {} is only available for `check`; use text or json",
            format_name(output.format)
        )));
    }
    match cli.command {
        Some(Command::Ls(args)) => {
            let ckpt = open(&args.checkpoint, &args.output, args.output.key_for(0))?;
            let report = audit::ls(&ckpt, LsOptions { all: args.all })?;
            show_ls(&report, &args.output)
        }
        Some(Command::Explain(args)) => {
            let (a, b) = open_pair(&args.a, &args.b, &args.output)?;
            let acts = args
                .activations
                .as_deref()
                .map(|p| open(p, &args.output, None))
                .transpose()?;
            let (momentum, momentum_for) = per_layer("--momentum", &args.momentum)?;
            let (eps, eps_for) = per_layer("--eps", &args.eps)?;
            let options = ExplainOptions {
                layers: args.layers.clone(),
                momentum,
                eps,
                momentum_for,
                eps_for,
                seed: args.seed,
            };
            // Layers are written as they are explained: a report of wide layers is never
            // held whole.
            let explainer = Explainer::new(&a, &b, acts.as_ref(), &options)?;
            let layers = explainer.layers()?;
            emit(&args.output, |format, style, out| match format {
                Format::Json => report::json::explain(out, &explainer, layers),
                _ => out
                    .write_all(report::text::explain_layers(&explainer, layers, style).as_bytes()),
            })
        }
        Some(Command::Diff(args)) => {
            let report = diff(&args.a, &args.b, &args.compare.options(), &args.output)?;
            show_diff(&report, &args.output)?;
            Ok(u8::from(args.exit_code && report.summary.changed))
        }
        Some(Command::View(args)) => {
            view(&args.checkpoints, args.activations.as_deref(), &args.output)
        }
        Some(Command::Demo(args)) => {
            let demo = DemoPair::unpack().map_err(|e| {
                Failure::input(anyhow::anyhow!(
                    "cannot unpack the demo checkpoints into {}: {e}",
                    std::env::temp_dir().display()
                ))
            })?;
            view(&demo.paths(), None, &args.output)
        }
        Some(Command::Check(args)) => check(&args),
        Some(Command::Restore(args)) => restore(&args),
        None => view(&cli.checkpoints, cli.activations.as_deref(), &cli.view),
    }
}

/// Opens both checkpoints and diffs them, with a progress line on a terminal.
fn diff(
    a: &Path,
    b: &Path,
    options: &DiffOptions,
    output: &OutputArgs,
) -> Result<audit::DiffReport, Failure> {
    let (a, b) = open_pair(a, b, output)?;
    diff_opened(&a, &b, options)
}

/// Diffs checkpoints already opened, with a progress line on a terminal.
fn diff_opened(
    a: &Checkpoint,
    b: &Checkpoint,
    options: &DiffOptions,
) -> Result<audit::DiffReport, Failure> {
    forced_prefixes_apply(a, b, options)?;
    Ok(with_progress(|p| audit::diff(a, b, options, p))?)
}

/// `--strip-prefix-a/-b` that starts no tensor name would strip nothing while the report
/// says it was stripped: a typo, reported as a usage error.
fn forced_prefixes_apply(
    a: &Checkpoint,
    b: &Checkpoint,
    options: &DiffOptions,
) -> Result<(), Failure> {
    let sides = [
        ("a", a, &options.strip_prefix_a),
        ("b", b, &options.strip_prefix_b),
    ];
    for (side, ckpt, prefix) in sides {
        let Some(p) = prefix.as_deref().map(normalise_prefix) else {
            continue;
        };
        if !p.is_empty() && !ckpt.tensors().iter().any(|t| t.name.starts_with(&p)) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--strip-prefix-{side} {p:?}: no tensor name of {} starts with it",
                ckpt.path().display()
            )));
        }
    }
    Ok(())
}

/// Runs a comparison with a progress line on stderr when it is a terminal.
fn with_progress<T>(work: impl FnOnce(Option<Progress<'_>>) -> T) -> T {
    let line = ProgressLine::on_stderr();
    let update = |done, total| {
        if let Some(l) = &line {
            l.update(done, total);
        }
    };
    let out = work(line.as_ref().map(|_| &update as Progress<'_>));
    if let Some(l) = &line {
        l.finish();
    }
    out
}

fn show_ls(report: &audit::LsReport, output: &OutputArgs) -> Result<u8, Failure> {
    emit(output, |format, style, out| match format {
        Format::Json => report::json::ls(out, report),
        _ => out.write_all(report::text::ls(report, style).as_bytes()),
    })
}

fn show_diff(report: &audit::DiffReport, output: &OutputArgs) -> Result<u8, Failure> {
    emit(output, |format, style, out| match format {
        Format::Json => report::json::write(out, report),
        _ => out.write_all(report::text::diff(report, style).as_bytes()),
    })
}

/// `view`: the terminal UI when writing text to a terminal; else the diff report of a
/// pair (then, with an activation file, the explain report), the `ls` report of one
/// checkpoint.
fn view(paths: &[PathBuf], activations: Option<&Path>, output: &OutputArgs) -> Result<u8, Failure> {
    if paths.is_empty() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no checkpoint given: bnaudit A [B], bnaudit demo, or bnaudit --help"
        )));
    }
    if activations.is_some() && paths.len() != 2 {
        return Err(Failure::usage(anyhow::anyhow!(
            "--activations needs two checkpoints (A and B)"
        )));
    }
    if interactive(output) {
        return ui(paths, activations, output);
    }
    if let [a, b] = paths {
        if let Some(acts) = activations {
            return view_explained(a, b, acts, output);
        }
        let report = diff(a, b, &DiffOptions::default(), output)?;
        return show_diff(&report, output);
    }
    // One checkpoint: exactly what `ls` prints (the JSON contract's object, not a list).
    let report = audit::ls(
        &open(&paths[0], output, output.key_for(0))?,
        LsOptions::default(),
    )?;
    show_ls(&report, output)
}

/// Splits `explain`'s per-layer settings into the one for every layer (the last given) and
/// the compiled patterns, in order.
type Settings<T> = (Option<T>, Vec<(audit::scope::Patterns, T)>);

fn per_layer<T: Copy>(
    key: &'static str,
    settings: &[crate::cli::PerLayer<T>],
) -> Result<Settings<T>, Failure> {
    let global = settings
        .iter()
        .rev()
        .find(|s| s.pattern.is_none())
        .map(|s| s.value);
    let patterns = settings
        .iter()
        .filter_map(|s| s.pattern.as_ref().map(|p| (p, s.value)))
        .map(|(p, v)| {
            audit::scope::Patterns::new(key, std::slice::from_ref(p))
                .map(|p| (p, v))
                .map_err(Failure::usage)
        })
        .collect::<Result<_, _>>()?;
    Ok((global, patterns))
}

/// `view A B --activations FILE` as text: the diff report, then the explain report.
fn view_explained(a: &Path, b: &Path, acts: &Path, output: &OutputArgs) -> Result<u8, Failure> {
    if output.format == Format::Json {
        return Err(Failure::usage(anyhow::anyhow!(
            "view --activations has no JSON form: use `bnaudit diff` and `bnaudit explain` with --format json"
        )));
    }
    let (a, b) = open_pair(a, b, output)?;
    let acts = open(acts, output, None)?;
    let report = diff_opened(&a, &b, &DiffOptions::default())?;
    let options = ExplainOptions::default();
    let explainer = Explainer::new(&a, &b, Some(&acts), &options)?;
    let layers = explainer.layers()?;
    emit(output, |_, style, out| {
        write!(
            out,
            "{}\n{}",
            report::text::diff(&report, style),
            report::text::explain_layers(&explainer, layers, style)
        )
    })
}

/// Names of the checkpoint files bnaudit reads (safetensors and torch.save, with their shard
/// indexes), matched in any case: `-o model.safetensors` or `-o model.pt` would replace the
/// checkpoint just read with a report.
const CHECKPOINT_SUFFIXES: [&str; 7] = [
    ".safetensors",
    ".safetensors.index.json",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".bin.index.json",
];

/// Whether `path` is named like a checkpoint (see [`CHECKPOINT_SUFFIXES`]; `.pth.tar` ends
/// in `.tar` and is matched whole).
fn is_checkpoint_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_ascii_lowercase)
        .is_some_and(|n| {
            n.ends_with(".pth.tar") || CHECKPOINT_SUFFIXES.iter().any(|s| n.ends_with(s))
        })
}

/// Whether `view` and `demo` start the UI: text for a terminal, no `--output`.
fn interactive(output: &OutputArgs) -> bool {
    output.format == Format::Text && output.output.is_none() && std::io::stdout().is_terminal()
}

/// Opens the checkpoints and their `ls` reports (input errors exit 3 before the screen
/// changes), then runs the UI.
fn ui(paths: &[PathBuf], activations: Option<&Path>, output: &OutputArgs) -> Result<u8, Failure> {
    let (a, b) = match paths {
        [a, b] => {
            let (a, b) = open_pair(a, b, output)?;
            (a, Some(b))
        }
        _ => (open(&paths[0], output, output.key_for(0))?, None),
    };
    let activations = activations.map(|p| open(p, output, None)).transpose()?;
    let session = tui::Session::new(a, b, activations);
    let reports = session.reports()?;
    let theme = tui::Theme {
        color: match output.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => no_color_unset(),
        },
    };
    tui::run(session, reports, DiffOptions::default(), theme)
        .map_err(|e| Failure::usage(anyhow::anyhow!("terminal: {e}")))?;
    Ok(0)
}

/// Pattern lists as given on the command line, and `--config`.
struct ScopeArgs<'a> {
    frozen: &'a [String],
    trainable: &'a [String],
    allow_stats: &'a [String],
    config: Option<&'a Path>,
}

/// The frozen scope from the command line over the configuration file (`None` when neither
/// gives a `frozen` list), and the configuration file read, if any.
fn scope(args: ScopeArgs<'_>) -> Result<(Option<Scope>, Option<PathBuf>), Failure> {
    let config = match args.config {
        Some(path) => Some(config::load(path).map_err(Failure::usage)?),
        None => config::discover(Path::new(".")).map_err(Failure::usage)?,
    };
    let given = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let cli = ScopePatterns {
        frozen: given(args.frozen),
        trainable: given(args.trainable),
        allow_stats: given(args.allow_stats),
    };
    let (patterns, path) = match config {
        Some(c) => (cli.over(c.patterns), Some(c.path)),
        None => (cli, None),
    };
    let frozen = patterns.frozen.unwrap_or_default();
    if frozen.is_empty() {
        return Ok((None, path));
    }
    let scope = Scope::new(
        &frozen,
        &patterns.trainable.unwrap_or_default(),
        &patterns.allow_stats.unwrap_or_default(),
    )
    .map_err(Failure::usage)?;
    Ok((Some(scope), path))
}

/// `check`'s scope: a `frozen` list is required.
fn check_scope(args: &CheckArgs) -> Result<(Scope, Option<PathBuf>), Failure> {
    let (found, path) = scope(ScopeArgs {
        frozen: &args.frozen,
        trainable: &args.trainable,
        allow_stats: &args.allow_stats,
        config: args.config.as_deref(),
    })?;
    match found {
        Some(scope) => Ok((scope, path)),
        None => {
            let place = match &path {
                Some(p) => p.display().to_string(),
                None => "bnaudit.toml or [tool.bnaudit] of pyproject.toml".to_owned(),
            };
            Err(Failure::usage(anyhow::anyhow!(
                "no frozen scope: give --frozen PATTERN, or a `frozen` list in {place}"
            )))
        }
    }
}

/// `check`: exit 1 when the frozen scope changed.
fn check(args: &CheckArgs) -> Result<u8, Failure> {
    let (scope, config) = check_scope(args)?;
    let (a, b) = open_pair(&args.a, &args.b, &args.output)?;
    let diff = args.compare.options();
    forced_prefixes_apply(&a, &b, &diff)?;
    let options = CheckOptions {
        scope,
        config,
        diff,
    };
    let report =
        with_progress(|p| audit::check::check(&a, &b, &options, p)).map_err(|e| match e {
            CheckError::Input(e) => Failure::input(e),
            e @ (CheckError::UnmatchedPatterns { .. } | CheckError::NothingFrozen { .. }) => {
                Failure::usage(e)
            }
        })?;
    emit(&args.output, |format, style, out| {
        let text = match format {
            Format::Json => return report::json::write(out, &report),
            Format::Text => report::text::check(&report, style),
            Format::Junit => report::junit::render(&report),
            Format::Github => report::github::render(&report),
            Format::Markdown => report::markdown::render(&report),
        };
        out.write_all(text.as_bytes())
    })?;
    Ok(if report.passed { 0 } else { 1 })
}

/// `restore`: plan, write the output unless `--dry-run`, print the report.
fn restore(args: &RestoreArgs) -> Result<u8, Failure> {
    let out = args
        .output
        .output
        .clone()
        .ok_or_else(|| Failure::usage(anyhow::anyhow!("restore needs --output FILE")))?;
    let (scope, config) = scope(ScopeArgs {
        frozen: &args.frozen,
        trainable: &args.trainable,
        allow_stats: &[],
        config: args.config.as_deref(),
    })?;
    let (a, b) = open_pair(&args.a, &args.b, &args.output)?;
    let diff = args.compare.options();
    forced_prefixes_apply(&a, &b, &diff)?;
    restore::refuse_inputs(&out, &a, &b).map_err(restore_failure)?;
    // Opened first: a read-only or impossible target fails before the comparison runs.
    let file = if args.dry_run {
        None
    } else {
        Some(output::Output::create(&out).map_err(Failure::usage)?)
    };
    let options = RestoreOptions {
        scope,
        config,
        all: args.all,
        diff,
        output: out,
        dry_run: args.dry_run,
    };
    let plan = with_progress(|p| restore::plan(&a, &b, &options, p)).map_err(restore_failure)?;
    if let Some(mut file) = file {
        plan.write(&mut file).map_err(|e| match e {
            WriteError::Io(e) => Failure::usage(anyhow::anyhow!(
                "{}: cannot write output: {e}",
                file.target().display()
            )),
            e => restore_failure(e.into()),
        })?;
        file.commit().map_err(Failure::usage)?;
    }
    let report = OutputArgs {
        output: None,
        ..args.output.clone()
    };
    emit(&report, |format, style, w| match format {
        Format::Json => report::json::write(w, &plan.report),
        _ => w.write_all(report::text::restore(&plan.report, style).as_bytes()),
    })
}

/// Exit codes of `restore`'s errors: the output's problems are usage errors (2), the
/// inputs' are input errors (3).
fn restore_failure(e: RestoreError) -> Failure {
    match e {
        RestoreError::Scope(_)
        | RestoreError::OutputIsInput { .. }
        | RestoreError::Write(WriteError::Io(_)) => Failure::usage(e),
        _ => Failure::input(e),
    }
}

fn format_name(format: Format) -> String {
    use clap::ValueEnum;
    format
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// Opens a checkpoint; `key` picks the state dict inside a torch.save file.
fn open(path: &Path, output: &OutputArgs, key: Option<&str>) -> Result<Checkpoint, Failure> {
    let mode = if output.no_mmap {
        ReadMode::Pread
    } else {
        ReadMode::Mmap
    };
    Ok(Checkpoint::open_key(path, mode, key)?)
}

/// Opens A and B at once, each on its own core: parsing a million-tensor header takes most of
/// a second. A's error is the one reported when both fail, as when they were opened in turn.
fn open_pair(a: &Path, b: &Path, output: &OutputArgs) -> Result<(Checkpoint, Checkpoint), Failure> {
    let (a, b) = rayon::join(
        || open(a, output, output.key_for(0)),
        || open(b, output, output.key_for(1)),
    );
    Ok((a?, b?))
}

/// Whether `NO_COLOR` leaves colour on: unset or empty (no-color.org), for reports and UI
/// alike.
fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Renders with the requested format into `--output` (atomically, once complete) or
/// straight to stdout through a buffer.
fn emit(
    output: &OutputArgs,
    render: impl FnOnce(Format, Style, &mut dyn Write) -> std::io::Result<()>,
) -> Result<u8, Failure> {
    let to_terminal = output.output.is_none() && std::io::stdout().is_terminal();
    let style = Style {
        color: match output.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => to_terminal && no_color_unset(),
        },
    };
    match output.output.as_deref() {
        Some(path) if is_checkpoint_name(path) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "{}: refusing to write a report to a checkpoint's name (a typo for another --output?)",
                path.display()
            )));
        }
        Some(path) => {
            // Rendered straight into the temporary file: a report of gigabytes is not held.
            let mut out = output::Output::create(path).map_err(Failure::usage)?;
            render(output.format, style, &mut out).map_err(|e| {
                Failure::usage(anyhow::anyhow!(
                    "{}: cannot write output: {e}",
                    path.display()
                ))
            })?;
            out.commit().map_err(Failure::usage)?;
        }
        None => {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            match render(output.format, style, &mut out).and_then(|()| out.flush()) {
                // A closed pipe (`bnaudit ls x | head`) is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "cannot write to standard output: {e}"
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(0)
}
