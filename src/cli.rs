//! Command-line definitions (clap derive) and their dispatch.

mod demo;
mod parse;
mod progress;
mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::audit::DiffOptions;
use crate::bn::Momentum;

pub use parse::{command, parse, parse_from};
pub use run::{Failure, run};

const ABOUT: &str = "Find BatchNorm statistics that moved inside frozen sub-models";

const LONG_ABOUT: &str = "\
Find BatchNorm statistics that moved inside frozen sub-models.

`requires_grad=False` freezes weights, not BatchNorm's running statistics: any forward pass \
in train mode moves running_mean/running_var and bumps num_batches_tracked. bnaudit lists \
every BatchNorm layer of a checkpoint, diffs two checkpoints and explains what \
changed, and gates CI so that frozen layers stay frozen.

A CHECKPOINT is a safetensors file or a PyTorch torch.save file (.pt, .pth, .bin, Lightning \
.ckpt, timm .pth.tar: recognised by content, read without executing anything), a sharded \
*.safetensors.index.json or pytorch_model.bin.index.json, or a directory holding exactly one \
of those. --key PATH picks the state dict inside a torch.save file (default: the top level, \
else state_dict, model_state_dict, model, module or net).";

const AFTER_HELP: &str = "\
Exit codes: 0 success (check: no violation), 1 check found violations (diff --exit-code: \
something changed), 2 usage error, 3 unreadable, malformed or incompatible checkpoint or \
activation file.

Examples:
  bnaudit demo
  bnaudit ls model.safetensors
  bnaudit ls --format json --output layers.json ckpt_dir/
  bnaudit diff pretrained.safetensors finetuned.safetensors
  bnaudit check pretrained.safetensors finetuned.safetensors --frozen backbone
  bnaudit explain pretrained.safetensors finetuned.safetensors --activations acts.safetensors
  bnaudit pretrained.safetensors finetuned.safetensors     (the UI, as `view`)

`bnaudit help <COMMAND>` or `bnaudit <COMMAND> --help` explains each command.";

const VIEW_AFTER_HELP: &str = "\
Exit codes: 0 success, 2 usage error or no usable terminal, 3 unreadable or malformed \
checkpoint or activation file.

Examples:
  bnaudit view model.safetensors
  bnaudit pretrained.safetensors finetuned.safetensors      (the same as view)
  bnaudit view A B --activations acts.safetensors
  bnaudit view A B > report.txt                             (not a terminal: the diff report)";

const DEMO_AFTER_HELP: &str = "\
Exit codes: 0 success, 2 usage error or no usable terminal, 3 the demo checkpoints (embedded \
in the binary) cannot be written to the temporary directory.

Examples:
  bnaudit demo
  bnaudit demo | less                                        (the diff report)
  bnaudit demo --format json";

const LS_AFTER_HELP: &str = "\
Exit codes: 0 success, 2 usage error, 3 unreadable or malformed checkpoint.

Examples:
  bnaudit ls model.safetensors
  bnaudit ls --all model.safetensors.index.json      (every tensor, not only BatchNorm)
  bnaudit ls ckpt_dir/ --format json --output layers.json";

const DIFF_AFTER_HELP: &str = "\
Exit codes: 0 success (with --exit-code: nothing changed), 1 with --exit-code: something \
changed (a cast alone is not a change), 2 usage error, 3 unreadable or malformed checkpoint.

Examples:
  bnaudit diff pretrained.safetensors finetuned.safetensors
  bnaudit diff a.safetensors b_dir/ --format json --output diff.json
  bnaudit diff a.safetensors b.safetensors --exit-code --atol 1e-6
  bnaudit diff ddp.safetensors plain.safetensors --strip-prefix-a module.
  bnaudit diff modelA.safetensors joint.safetensors   (model_A saved on its own: aligned with joint's model_A)";

const EXPLAIN_AFTER_HELP: &str = "\
Activations are streamed in 1 MiB tiles: memory stays small whatever the capture's size. \
A capture of the inner model meets a module./_orig_mod.-wrapped checkpoint. A layer that \
cannot be explained (track_running_stats=False, missing, channel mismatch, one value per \
channel in train mode) is listed as skipped with its reason and the rest explained. \
Stats-only captures (<layer>.batch_mean/batch_var/batch_count.<i>) replay A to B.

Exit codes: 0 success, 2 usage error, 3 unreadable or malformed checkpoint or activation \
file, or no layer that can be explained.

Examples:
  bnaudit explain pretrained.safetensors finetuned.safetensors
  bnaudit explain A B --activations acts.safetensors
  bnaudit explain A B --momentum 'backbone.**.bn*=cma' --momentum 0.1 --eps head=1e-3
  bnaudit explain A B --layer backbone.layer1.0.bn1 --momentum cma --format json";

/// The `bnaudit` command line.
#[derive(Debug, Parser)]
#[command(
    name = "bnaudit",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// What to do; without one, `bnaudit A [B]` is `bnaudit view A [B]`.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Checkpoints to view when no subcommand is given.
    #[arg(value_name = "CHECKPOINT", num_args = 1..=2)]
    pub checkpoints: Vec<PathBuf>,

    /// Activation file for the bare `bnaudit A B` form (as `view --activations`).
    #[arg(long, value_name = "FILE")]
    pub activations: Option<PathBuf>,

    /// Options of the bare `bnaudit A [B]` form.
    #[command(flatten)]
    pub view: OutputArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show one checkpoint, or the difference of two.
    ///
    /// On a terminal: the interactive UI (Overview, Layers, Detail, Tensors; `?` lists the
    /// keys). Otherwise, or with --format json or --output, the report: `ls` of one
    /// checkpoint, `diff` of two.
    #[command(after_help = VIEW_AFTER_HELP)]
    View(ViewArgs),
    /// Show the bundled example: a pretrained CNN and a fine-tune whose frozen backbone was
    /// left in train mode.
    ///
    /// On a terminal: the interactive UI on the pair. Otherwise, or with --format json or
    /// --output, their `diff` report.
    #[command(after_help = DEMO_AFTER_HELP)]
    Demo(DemoArgs),
    /// List the BatchNorm layers of a checkpoint with statistics and health flags.
    #[command(after_help = LS_AFTER_HELP)]
    Ls(LsArgs),
    /// Classify what changed between two checkpoints, layer by layer, and why.
    ///
    /// Every tensor is compared (bit-identical unless --atol/--rtol; across dtypes after
    /// rounding to the narrower one). Every BatchNorm layer gets a status (unchanged,
    /// frozen_stats_drift, trained, affine_only, stats_reset, only_in_a, only_in_b,
    /// incompatible) and the update rule's inference: train-mode forwards from the counter,
    /// the fraction of A's statistics retained, and whether B's statistics are consistent
    /// with it. Verdicts by sub-model come first.
    #[command(after_help = DIFF_AFTER_HELP)]
    Diff(DiffArgs),
    /// CI gate: fail when anything in the frozen scope changed between A and B.
    ///
    /// Every tensor in scope is compared (BatchNorm statistics, and weights too: a leaked
    /// requires_grad changes them). Patterns are dot-separated module paths: `*` matches
    /// within one segment, `**` any number of segments, `[12]` one character of a class; a
    /// pattern covers the module it names and everything under it. Without --frozen, the
    /// lists `frozen`, `trainable`, `allow_stats` are read from --config, else bnaudit.toml
    /// or [tool.bnaudit] in pyproject.toml in the working directory; command-line lists win
    /// key by key.
    #[command(after_help = CHECK_AFTER_HELP)]
    Check(CheckArgs),
    /// Re-run BatchNorm in every mode and replay the drift from A to B.
    ///
    /// With an activation file (written by assets/plugin/bnaudit_capture.py) every mode runs
    /// on the captured inputs and is compared with the recorded outputs, and A's statistics
    /// are replayed through the captured train-mode forwards. Without one, the update rule
    /// implies the batch statistics and synthetic inputs drawn from them are re-run.
    #[command(after_help = EXPLAIN_AFTER_HELP)]
    Explain(ExplainArgs),
    /// Write B with A's BatchNorm statistics put back in the frozen scope.
    ///
    /// In scope (--frozen/--trainable, else the configuration file as for `check`, else
    /// every layer whose status is frozen_stats_drift), each BatchNorm layer whose running
    /// statistics or counter differ gets A's running_mean, running_var and
    /// num_batches_tracked (or their Keras and Flax equivalents); --all also puts back the
    /// scope's other changed tensors. Everything else is B's, with B's names, dtypes and
    /// metadata (A's values cast to B's dtype), plus the metadata key bnaudit_restored
    /// listing what was put back. The output is a safetensors file written atomically; it
    /// may not be A, B or one of their files. The report goes to standard output.
    #[command(after_help = RESTORE_AFTER_HELP)]
    Restore(RestoreArgs),
}

const RESTORE_AFTER_HELP: &str = "\
Exit codes: 0 written (or planned, with --dry-run), 2 usage error (including an output that \
is one of the inputs, or a read-only one), 3 unreadable or malformed checkpoint.

Examples:
  bnaudit restore pretrained.safetensors finetuned.safetensors --frozen backbone -o fixed.safetensors
  bnaudit restore A B -o fixed.safetensors                (the scope from bnaudit.toml, or every drifted layer)
  bnaudit restore A B --frozen backbone --all -o fixed.safetensors --dry-run
  bnaudit check A fixed.safetensors --frozen backbone     (passes for what was restored)";

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The checkpoint whose statistics are put back (before fine-tuning).
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The checkpoint to repair (after fine-tuning).
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Modules whose BatchNorm statistics are put back. Repeatable; each value is a
    /// comma-separated list (`--frozen backbone,neck`).
    #[arg(long, value_name = "PATTERN[,...]")]
    pub frozen: Vec<String>,

    /// Modules carved out of the frozen scope: left as B has them (repeatable, comma lists).
    #[arg(long, value_name = "PATTERN[,...]")]
    pub trainable: Vec<String>,

    /// Read the pattern lists from FILE instead of looking in the working directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also put back the scope's weights and every other changed tensor in scope.
    #[arg(long)]
    pub all: bool,

    /// Print what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Comparison options.
    #[command(flatten)]
    pub compare: CompareArgs,

    /// Output options: --output names the restored checkpoint (required).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The checkpoint before (A).
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The checkpoint after (B).
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Comparison options.
    #[command(flatten)]
    pub compare: CompareArgs,

    /// Exit with status 1 when something changed (a cast alone is not a change).
    #[arg(long)]
    pub exit_code: bool,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How two checkpoints are compared (`diff`, `check`).
#[derive(Debug, Args, Clone, Default)]
pub struct CompareArgs {
    /// Strip PREFIX from A's tensor names instead of detecting a wrapper prefix
    /// (`module.` of DDP, `_orig_mod.` of torch.compile, `model.`); "" strips nothing.
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix_a: Option<String>,

    /// Strip PREFIX from B's tensor names instead of detecting it.
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix_b: Option<String>,

    /// Absolute tolerance: float values count as equal when |a - b| <= atol + rtol·|b|;
    /// integers (num_batches_tracked) always compare exactly.
    #[arg(long, value_name = "FLOAT", default_value_t = 0.0, value_parser = tolerance)]
    pub atol: f64,

    /// Relative tolerance (see --atol); both 0 means bit-identical.
    #[arg(long, value_name = "FLOAT", default_value_t = 0.0, value_parser = tolerance)]
    pub rtol: f64,

    /// Momentum to assume for every layer, in PyTorch's sense (new = (1-m)·old + m·batch),
    /// or `cma` for momentum=None; default: each convention's (PyTorch 0.1, Keras and Flax
    /// 0.01).
    #[arg(long, value_name = "FLOAT|cma")]
    pub momentum: Option<Momentum>,
}

impl CompareArgs {
    /// The options of the diff use case.
    pub fn options(&self) -> DiffOptions {
        DiffOptions {
            strip_prefix_a: self.strip_prefix_a.clone(),
            strip_prefix_b: self.strip_prefix_b.clone(),
            atol: self.atol,
            rtol: self.rtol,
            momentum: self.momentum,
        }
    }
}

/// A tolerance: a finite number, zero or more.
/// A setting of `explain`: for every layer, or for the layers a pattern covers.
#[derive(Debug, Clone, PartialEq)]
pub struct PerLayer<T> {
    /// The pattern (`None`: every layer).
    pub pattern: Option<String>,
    /// The value.
    pub value: T,
}

/// Parses `V` or `PATTERN=V`.
fn per_layer<T: std::str::FromStr>(s: &str) -> Result<PerLayer<T>, String>
where
    T::Err: std::fmt::Display,
{
    let (pattern, value) = match s.rsplit_once('=') {
        Some((p, v)) if !p.is_empty() => (Some(p.to_owned()), v),
        Some(_) => return Err(format!("{s:?} has no pattern before '='")),
        None => (None, s),
    };
    let value = value.parse::<T>().map_err(|e| e.to_string())?;
    Ok(PerLayer { pattern, value })
}

fn per_layer_eps(s: &str) -> Result<PerLayer<f64>, String> {
    let setting = per_layer::<f64>(s)?;
    tolerance(&setting.value.to_string()).map(|_| setting)
}

fn tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a finite number >= 0")),
    }
}

const CHECK_AFTER_HELP: &str = "\
Exit codes: 0 no violation, 1 violations, 2 usage or configuration error (including a \
frozen pattern that matches no tensor), 3 unreadable or malformed checkpoint.

Configuration (bnaudit.toml, or the same keys under [tool.bnaudit] in pyproject.toml):
  frozen = [\"backbone\"]
  trainable = [\"backbone.layer4\"]
  allow_stats = [\"**.bn1\"]

Examples:
  bnaudit check base.safetensors tuned.safetensors --frozen backbone
  bnaudit check A B --frozen backbone --trainable backbone.layer4 --allow-stats '**.bn1'
  bnaudit check A B --frozen 'encoder.layer[0-5],**.norm'
  bnaudit check A B                          (the scope from bnaudit.toml or pyproject.toml)
  bnaudit check A B --format github
  bnaudit check A B --format markdown >> \"$GITHUB_STEP_SUMMARY\"
  bnaudit check A B --format junit --output bnaudit.xml";

/// Arguments of `view`.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The checkpoint(s).
    #[arg(value_name = "CHECKPOINT", required = true, num_args = 1..=2)]
    pub checkpoints: Vec<PathBuf>,

    /// Activation file of the capture plugin: the UI's Detail shows `explain` on the
    /// captured inputs (modes, replay); as text, the `explain` report follows the diff.
    #[arg(long, value_name = "FILE")]
    pub activations: Option<PathBuf>,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The checkpoint.
    #[arg(value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,

    /// Also list every other tensor (name, dtype, shape, bytes).
    #[arg(long)]
    pub all: bool,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The reference checkpoint (before fine-tuning).
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The checkpoint to check (after fine-tuning).
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Modules that must not change. Repeatable; each value is a comma-separated list
    /// (`--frozen backbone,neck --frozen teacher`).
    #[arg(long, value_name = "PATTERN[,...]")]
    pub frozen: Vec<String>,

    /// Modules carved out of the frozen scope: allowed to change (repeatable, comma lists).
    #[arg(long, value_name = "PATTERN[,...]")]
    pub trainable: Vec<String>,

    /// Frozen modules whose BatchNorm running statistics and counters may move (their
    /// weights stay frozen; repeatable, comma lists).
    #[arg(long, value_name = "PATTERN[,...]")]
    pub allow_stats: Vec<String>,

    /// Read the pattern lists from FILE (a bnaudit.toml, or a pyproject.toml's
    /// [tool.bnaudit] table) instead of looking in the working directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Comparison options.
    #[command(flatten)]
    pub compare: CompareArgs,

    /// Output options; check also writes junit, github and markdown.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The checkpoint before (e.g. pretrained).
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The checkpoint after (e.g. fine-tuned).
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Activation file of the capture plugin: BatchNorm inputs and outputs to re-run.
    #[arg(long, value_name = "FILE")]
    pub activations: Option<PathBuf>,

    /// Explain this layer (repeatable; each value may be a comma-separated list); default:
    /// the captured layers, or those whose statistics changed.
    #[arg(long = "layer", value_name = "NAME[,...]", value_delimiter = ',')]
    pub layers: Vec<String>,

    /// Momentum in PyTorch's sense (new = (1-m)·old + m·batch), or `cma` for momentum=None;
    /// overrides the activation file's metadata and the convention's default. `PATTERN=M`
    /// sets it for the layers PATTERN covers (as in --frozen); repeatable, the last that
    /// covers a layer wins, a plain `M` is for every other layer.
    #[arg(long, value_name = "[PATTERN=]M|cma", value_parser = per_layer::<crate::bn::Momentum>)]
    pub momentum: Vec<PerLayer<crate::bn::Momentum>>,

    /// Epsilon; overrides the activation file's metadata and the convention's default.
    /// `PATTERN=E` and repetition as for --momentum.
    #[arg(long, value_name = "[PATTERN=]E", value_parser = per_layer_eps)]
    pub eps: Vec<PerLayer<f64>>,

    /// Seed of the synthetic inputs drawn when there is no activation file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Output and input options shared by every subcommand.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Write the report to FILE (atomically) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// When to colour text output; NO_COLOR in the environment turns `auto` off.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Read tensors with positioned reads instead of memory maps (network filesystems, WSL).
    #[arg(long)]
    pub no_mmap: bool,

    /// The state dict inside a torch.save file, as a dot path (e.g. `state_dict_ema`);
    /// default: the top level when it holds tensors, else the first of state_dict,
    /// model_state_dict, model, module, net that does. Applies to A and B.
    #[arg(long, value_name = "PATH")]
    pub key: Option<String>,

    /// --key for A only (the first checkpoint).
    #[arg(long, value_name = "PATH")]
    pub key_a: Option<String>,

    /// --key for B only (the second checkpoint).
    #[arg(long, value_name = "PATH")]
    pub key_b: Option<String>,
}

impl OutputArgs {
    /// The state-dict key for the checkpoint at position `side` (0 for A, 1 for B).
    pub fn key_for(&self, side: usize) -> Option<&str> {
        let one = if side == 0 { &self.key_a } else { &self.key_b };
        one.as_deref().or(self.key.as_deref())
    }
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The JSON contract (schema_version 1).
    Json,
    /// JUnit XML for CI test reports: one testcase per frozen layer or tensor group.
    Junit,
    /// GitHub Actions `::error` annotations and a summary line.
    Github,
    /// A Markdown report for $GITHUB_STEP_SUMMARY or a pull-request comment.
    Markdown,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When writing to a terminal and NO_COLOR is unset or empty.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}
