//! Text rendering of the `explain` report: per layer the verdict first, then the replay,
//! the modes table, the implied batch and the impact.

use std::fmt::Write;

use super::table;
use crate::audit::explain::{
    ExplainLayer, ExplainReport, Explained, Explainer, ImpliedBatch, Inputs, ModeResult, Source,
};
use crate::fmt::{num, opt_num, printable};
use crate::report::Style;

/// Renders the `explain` report: the layers of `layers` as they are explained, then the
/// report around them.
pub fn explain_layers(
    explainer: &Explainer<'_>,
    mut layers: Explained<'_, '_>,
    style: Style,
) -> String {
    let mut text = ExplainText::new(style);
    for layer in layers.by_ref() {
        text.layer(&layer);
    }
    text.finish(&explainer.report((), layers.into_skipped()))
}

/// The text report built layer by layer: each layer's details are rendered when it comes and
/// only its summary row is kept, so the text of wide layers never holds their channels. The
/// summary, which leads the text, is written once every layer is in.
struct ExplainText {
    style: Style,
    rows: Vec<SummaryRow>,
    details: String,
}

/// What the summary needs of a layer.
struct SummaryRow {
    name: String,
    max_rms_change: Option<f64>,
    verdict: String,
    good: bool,
}

impl ExplainText {
    /// No layer yet.
    fn new(style: Style) -> ExplainText {
        ExplainText {
            style,
            rows: Vec::new(),
            details: String::new(),
        }
    }

    /// Adds a layer, in report order.
    fn layer(&mut self, l: &ExplainLayer) {
        self.details.push('\n');
        render_layer(&mut self.details, l, self.style);
        self.rows.push(SummaryRow {
            name: l.name.clone(),
            max_rms_change: l.impact.max_rms_change,
            verdict: l.verdict.clone(),
            good: good(l),
        });
    }

    /// The whole text: `report`'s header, notes and skipped layers, the summary, then the
    /// layers added.
    fn finish(self, report: &ExplainReport<()>) -> String {
        let style = self.style;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            style.bold(&format!("A: {}", printable(&report.a)))
        );
        let _ = writeln!(
            out,
            "{}",
            style.bold(&format!("B: {}", printable(&report.b)))
        );
        if let Some(acts) = &report.activations {
            let _ = writeln!(
                out,
                "{}",
                style.bold(&format!("activations: {}", printable(acts)))
            );
        }
        let al = &report.alignment;
        if !al.strip_a.is_empty() || !al.strip_b.is_empty() {
            let _ = writeln!(
                out,
                "{}",
                style.dim(&format!(
                    "names aligned: {:?} stripped from A, {:?} from B",
                    al.strip_a, al.strip_b
                ))
            );
        }
        if let Some(al) = &report.activations_alignment
            && (!al.strip_a.is_empty() || !al.strip_b.is_empty())
        {
            let _ = writeln!(
                out,
                "{}",
                style.dim(&format!(
                    "activation names aligned: {}",
                    capture_prefix(&al.strip_a, &al.strip_b)
                ))
            );
        }
        for note in &report.notes {
            let _ = writeln!(out, "{}", printable(note));
        }
        if self.rows.len() + report.skipped.len() > 1 {
            summary(&mut out, &self.rows, report.skipped.len(), style);
        }
        for s in &report.skipped {
            let _ = writeln!(
                out,
                "{}",
                style.yellow(&format!("skipped {}: {}", s.name, s.reason))
            );
        }
        out.push_str(&self.details);
        out
    }
}

/// Layers named in the summary's impact table.
const TOP: usize = 5;

/// Counts, then the layers whose statistics move eval outputs most: read before the details,
/// which run to a dozen lines a layer.
fn summary(out: &mut String, layers: &[SummaryRow], skipped: usize, style: Style) {
    let accounted = layers.iter().filter(|l| l.good).count();
    let _ = writeln!(
        out,
        "\n{}",
        style.bold(&format!(
            "{} explained: {accounted} accounted for, {} not{}",
            super::plural(layers.len(), "layer"),
            layers.len() - accounted,
            if skipped == 0 {
                String::new()
            } else {
                format!(", {skipped} skipped")
            }
        ))
    );
    let mut by_impact: Vec<&SummaryRow> = layers
        .iter()
        .filter(|l| l.max_rms_change.is_some_and(|r| r > 0.0))
        .collect();
    by_impact.sort_by(|x, y| {
        let r = |l: &SummaryRow| l.max_rms_change.unwrap_or(0.0);
        r(y).total_cmp(&r(x)).then_with(|| x.name.cmp(&y.name))
    });
    if by_impact.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "largest impact in eval mode (top {} of {}):",
            by_impact.len().min(TOP),
            by_impact.len()
        ))
    );
    let top = &by_impact[..by_impact.len().min(TOP)];
    let rows: Vec<[String; 2]> = top
        .iter()
        .map(|l| [l.name.clone(), opt_num(l.max_rms_change)])
        .collect();
    let lines = table(["layer", "output std"], &rows, 1);
    let _ = writeln!(out, "{}", style.dim(&format!("{}  verdict", lines[0])));
    for (line, l) in lines[1..].iter().zip(top) {
        let _ = writeln!(out, "{line}  {}", l.verdict);
    }
}

/// How the capture's names were changed to meet the checkpoints'.
fn capture_prefix(strip_layers: &str, strip_capture: &str) -> String {
    match (strip_layers.is_empty(), strip_capture.is_empty()) {
        (false, true) => format!("{strip_layers:?} added to the captured names"),
        (true, false) => format!("{strip_capture:?} stripped from the captured names"),
        _ => format!("{strip_capture:?} stripped from the captured names, {strip_layers:?} added"),
    }
}

fn source(s: Source) -> &'static str {
    match s {
        Source::Activations => "from the activation file",
        Source::Option => "from the command line",
        Source::Convention => "convention default",
    }
}

fn good(layer: &ExplainLayer) -> bool {
    match &layer.replay {
        Some(r) => r.explains_b || (r.batches == 0 && !layer.stats_changed),
        None => !layer.stats_changed,
    }
}

fn render_layer(out: &mut String, l: &ExplainLayer, style: Style) {
    let _ = writeln!(
        out,
        "{}  {}",
        style.bold(&printable(&l.name)),
        style.dim(&format!(
            "({}, {} channels, momentum {} {}, eps {} {})",
            l.convention.as_str(),
            l.channels,
            l.momentum,
            source(l.momentum_source),
            num(l.eps),
            source(l.eps_source)
        ))
    );
    let verdict = printable(&l.verdict);
    let verdict = if good(l) {
        style.green(&verdict)
    } else {
        style.yellow(&verdict)
    };
    let _ = writeln!(out, "  {verdict}");
    if let Some(r) = &l.replay {
        let counter = match (r.nbt_replayed, l.nbt_b) {
            (Some(r), Some(b)) if r == b => format!("; counter {r}, as in B"),
            (Some(r), Some(b)) => format!("; counter {r}, B has {b}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  replay of {} batch{} from A: max error running_mean {} (relative {}), running_var {} (relative {}){counter}; tolerance {} relative ({} updates rounded to {})",
            r.batches,
            if r.batches == 1 { "" } else { "es" },
            num(r.max_abs_err_mean),
            num(r.max_rel_err_mean),
            num(r.max_abs_err_var),
            num(r.max_rel_err_var),
            num(r.tolerance),
            r.batches,
            r.dtype,
        );
    }
    if let (Some(best), Some(reproduced)) = (l.best_mode, l.reproduced) {
        let err = l
            .modes
            .iter()
            .find(|m| m.mode == best)
            .and_then(|m| m.max_abs_err);
        let line = format!(
            "  best mode: {}, which {} the recorded outputs (max error {})",
            best.as_str(),
            if reproduced {
                "reproduces"
            } else {
                "comes closest to but does not reproduce"
            },
            opt_num(err)
        );
        let _ = writeln!(
            out,
            "{}",
            if reproduced {
                line
            } else {
                style.yellow(&line)
            }
        );
    }
    let on = match &l.inputs {
        Inputs::Captured {
            forwards,
            train_forwards,
            with_outputs,
            statistics_only,
        } => format!(
            "{}, {train_forwards} in train mode, {with_outputs} with recorded outputs{}",
            super::plural(*forwards, "captured forward"),
            if *statistics_only > 0 {
                format!(", {statistics_only} as batch statistics only")
            } else {
                String::new()
            }
        ),
        Inputs::Synthetic {
            seed,
            samples,
            drawn_from,
        } => format!(
            "{samples} synthetic samples drawn from {} (seed {seed})",
            if *drawn_from == "implied_batch" {
                "the implied batch"
            } else {
                "A's running statistics"
            }
        ),
    };
    let _ = writeln!(out, "{}", style.dim(&format!("  modes on {on}:")));
    if !l.modes.is_empty() {
        modes_table(out, &l.modes, style);
    }
    if let Some(ib) = &l.implied_batch {
        implied_lines(out, ib);
    }
    if let Some(worst) = l.impact.worst.first() {
        let rest: Vec<String> = l.impact.worst[1..]
            .iter()
            .map(|w| format!("{} ({})", w.channel, opt_num(w.rms_change)))
            .collect();
        let _ = writeln!(
            out,
            "  impact in eval mode (A's inputs, B's statistics): channel {} moves by {} output std (mean shift {}, scale ×{}){}",
            worst.channel,
            opt_num(worst.rms_change),
            opt_num(worst.mean_shift),
            opt_num(worst.scale_ratio),
            if rest.is_empty() {
                String::new()
            } else {
                format!("; then channels {}", rest.join(", "))
            }
        );
    }
    for note in &l.notes {
        let _ = writeln!(
            out,
            "  {}",
            style.dim(&format!("note: {}", printable(note)))
        );
    }
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".to_owned()
    } else if lo == hi {
        num(lo)
    } else {
        format!("{}..{}", num(lo), num(hi))
    }
}

fn implied_lines(out: &mut String, ib: &ImpliedBatch) {
    let what = if ib.exact {
        "1 forward, exact".to_owned()
    } else {
        format!("{} forwards, weighted average", ib.forwards)
    };
    let _ = writeln!(
        out,
        "  implied batch ({what}): mean {}, {} var {}",
        range(&ib.mean),
        ib.var_kind,
        range(&ib.var)
    );
}

fn modes_table(out: &mut String, modes: &[ModeResult], style: Style) {
    let header = [
        "mode",
        "uses",
        "updates",
        "out mean",
        "out std",
        "max_abs_err",
        "vs train",
    ];
    let rows: Vec<[String; 7]> = modes
        .iter()
        .map(|m| {
            [
                m.mode.as_str().to_owned(),
                m.uses.to_owned(),
                if m.updates { "yes" } else { "no" }.to_owned(),
                opt_num(m.output.map(|o| o.mean)),
                opt_num(m.output.map(|o| o.std)),
                opt_num(m.max_abs_err),
                opt_num(m.max_abs_diff_vs_train),
            ]
        })
        .collect();
    for (i, line) in table(header, &rows, 3).into_iter().enumerate() {
        // Nested under the layer: two more spaces than a top-level table.
        let line = format!("  {line}");
        let _ = writeln!(out, "{}", if i == 0 { style.dim(&line) } else { line });
    }
}
