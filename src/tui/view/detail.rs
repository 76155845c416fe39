//! Detail: one layer in depth. Plots of every channel of running_mean, running_var, weight and
//! bias (A and B overlaid, or B − A), and beside them the verdict, the inference, the summary
//! statistics and the flags.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};

use super::format::{fit_middle, wrapped};
use super::widgets::{pane, side_pane};
use crate::audit::ChannelSeries;
use crate::audit::diff::Momentum;
use crate::audit::explain::{ExplainLayer, Inputs, Source};
use crate::bn::Role;
use crate::fmt::{num, opt_num, printable};
use crate::tui::layout::Areas;
use crate::tui::model::{Job, LayerRow};
use crate::tui::state::{App, Pane};
use crate::tui::theme::{flag_meaning, status_label, status_meaning, status_symbol};

/// Smallest plot, borders included.
const PLOT_HEIGHT: u16 = 8;
/// Narrowest plot, borders included.
const PLOT_WIDTH: u16 = 36;

/// One line series of a plot.
struct Series {
    name: &'static str,
    points: Vec<(f64, f64)>,
    style: Style,
    marker: Marker,
    graph: GraphType,
}

/// One plot: a tensor of the layer, channel by channel.
struct Plot {
    title: &'static str,
    series: Vec<Series>,
}

/// Draws the Detail screen.
pub fn render(frame: &mut Frame, app: &App, areas: &Areas) {
    plots(frame, app, areas.main);
    let title = match app.detail_row() {
        Some(row) => format!(
            " {} ",
            fit_middle(&row.name, usize::from(areas.side.width).saturating_sub(4))
        ),
        None => " Detail ".to_owned(),
    };
    side_pane(frame, app, areas.side, &title);
}

/// Plots that fit in `area`: columns and rows of the grid.
fn grid(area: Rect) -> (u16, u16) {
    let cols = (area.width / PLOT_WIDTH).clamp(1, 2);
    let rows = (area.height / PLOT_HEIGHT).max(1);
    (cols, rows)
}

/// The last first-plot index that still fills the pane.
pub fn max_plot_offset(app: &App) -> usize {
    let main = layout_main(app);
    let (cols, rows) = grid(main);
    plot_list(app)
        .len()
        .saturating_sub(usize::from(cols * rows))
}

fn layout_main(app: &App) -> Rect {
    crate::tui::layout::areas(app.size, crate::tui::state::Screen::Detail, app.pair(), 0).main
}

/// Points `(channel, value)` of the finite values.
fn points<'a>(values: impl IntoIterator<Item = &'a f64>) -> Vec<(f64, f64)> {
    values
        .into_iter()
        .enumerate()
        .filter(|(_, y)| y.is_finite())
        .map(|(i, &y)| (i as f64, y))
        .collect()
}

/// The plots of the layer Detail shows: its tensors, then what explain adds.
fn plot_list(app: &App) -> Vec<Plot> {
    let Some(row) = app.detail_row() else {
        return Vec::new();
    };
    let Some(Ok(channels)) = app.reports.channels.get(&row.name) else {
        return Vec::new();
    };
    let explained = app.reports.layer_explain(row);
    let mut out = Vec::new();
    for role in [
        Role::RunningMean,
        Role::RunningVar,
        Role::Weight,
        Role::Bias,
    ] {
        if let Some(plot) = channels.get(role).and_then(|s| tensor_plot(app, role, s)) {
            out.push(plot);
        }
        // How much the outputs move matters more than the affine parameters: right after
        // the statistics.
        if let (Role::RunningVar, Some(e)) = (role, explained) {
            let rms: Vec<f64> = e.impact.rms_change.clone();
            out.push(Plot {
                title: "impact (output std)",
                series: vec![Series {
                    name: "B vs A",
                    points: points(&rms),
                    style: app.theme.series_b(),
                    marker: Marker::Braille,
                    graph: GraphType::Bar,
                }],
            });
        }
    }
    if let Some(ib) = explained.and_then(|e| e.implied_batch.as_ref()) {
        for (title, values) in [
            ("implied batch mean", &ib.mean),
            ("implied batch var", &ib.var),
        ] {
            out.push(Plot {
                title,
                series: vec![Series {
                    name: "batch",
                    points: points(values),
                    style: app.theme.series_b(),
                    marker: Marker::Braille,
                    graph: GraphType::Line,
                }],
            });
        }
    }
    out
}

/// A tensor's plot: A and B overlaid, or B − A.
fn tensor_plot(app: &App, role: Role, s: &ChannelSeries) -> Option<Plot> {
    let theme = app.theme;
    let mut series = Vec::new();
    match (&s.delta, app.detail.delta) {
        (Some(d), true) => series.push(Series {
            name: "B−A",
            points: points(d),
            style: theme.series_b(),
            marker: Marker::Braille,
            graph: GraphType::Bar,
        }),
        _ => {
            if let Some(a) = &s.a {
                series.push(Series {
                    name: "A",
                    points: points(a),
                    style: theme.series_a(),
                    marker: Marker::Braille,
                    graph: GraphType::Line,
                });
            }
            if let Some(b) = &s.b {
                // Without colour B is drawn as dots so the two series stay apart.
                let (marker, graph) = if theme.color {
                    (Marker::Braille, GraphType::Line)
                } else {
                    (Marker::Dot, GraphType::Scatter)
                };
                series.push(Series {
                    name: "B",
                    points: points(b),
                    style: theme.series_b(),
                    marker,
                    graph,
                });
            }
        }
    }
    (!series.is_empty()).then(|| Plot {
        title: role.as_str(),
        series,
    })
}

fn plots(frame: &mut Frame, app: &App, area: Rect) {
    let list = plot_list(app);
    if list.is_empty() {
        let text = match app.detail_row().map(|r| app.reports.channels.get(&r.name)) {
            None => Span::styled(
                "Select a layer on the Layers screen (2) and press Enter.",
                app.theme.dim(),
            ),
            Some(Some(Err(e))) => Span::styled(
                format!("Cannot read its values: {}", printable(e)),
                app.theme.error(),
            ),
            Some(_) => Span::styled("Reading the layer's values…", app.theme.dim()),
        };
        frame.render_widget(
            Paragraph::new(text)
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(pane(app, Pane::Main, " Channels ")),
            area,
        );
        return;
    }
    let (cols, rows) = grid(area);
    let per_page = usize::from(cols * rows);
    let shown: Vec<&Plot> = list
        .iter()
        .skip(app.detail.plot_offset)
        .take(per_page)
        .collect();
    let used_rows = shown.len().div_ceil(usize::from(cols)) as u16;
    let row_areas = Layout::vertical(vec![
        Constraint::Ratio(1, u32::from(used_rows.max(1)));
        usize::from(used_rows.max(1))
    ])
    .split(area);
    for (i, plot) in shown.iter().enumerate() {
        let r = row_areas[i / usize::from(cols)];
        let in_row = if i / usize::from(cols) == (shown.len() - 1) / usize::from(cols) {
            shown.len() - (i / usize::from(cols)) * usize::from(cols)
        } else {
            usize::from(cols)
        };
        let col_areas =
            Layout::horizontal(vec![Constraint::Ratio(1, in_row as u32); in_row]).split(r);
        let page = (list.len() > per_page).then_some((app.detail.plot_offset + i, list.len()));
        draw_plot(frame, app, plot, col_areas[i % usize::from(cols)], page);
    }
}

/// Draws one plot; `page` is its position among all plots when they do not all fit.
fn draw_plot(frame: &mut Frame, app: &App, plot: &Plot, area: Rect, page: Option<(usize, usize)>) {
    let theme = app.theme;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut channels = 0usize;
    for s in &plot.series {
        for &(x, y) in &s.points {
            lo = lo.min(y);
            hi = hi.max(y);
            channels = channels.max(x as usize + 1);
        }
    }
    if plot.series.iter().any(|s| s.graph == GraphType::Bar) {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        // A constant series: centre it in a band of ±10% (±1 around zero).
        let pad = if hi == 0.0 { 1.0 } else { hi.abs() * 0.1 };
        (lo, hi) = (lo - pad, hi + pad);
    }
    let mut title = vec![Span::styled(format!(" {} ", plot.title), theme.heading())];
    for s in &plot.series {
        let symbol = if s.marker == Marker::Dot {
            "•"
        } else {
            "⣿"
        };
        title.push(Span::styled(format!("{symbol}{} ", s.name), s.style));
    }
    if let Some((index, count)) = page {
        title.push(Span::styled(format!("{}/{count} ", index + 1), theme.dim()));
    }
    let datasets: Vec<Dataset> = plot
        .series
        .iter()
        .map(|s| {
            Dataset::default()
                .marker(s.marker)
                .graph_type(s.graph)
                .style(s.style)
                .data(&s.points)
        })
        .collect();
    let last = channels.saturating_sub(1).max(1) as f64;
    let chart = Chart::new(datasets)
        .block(pane(app, Pane::Main, Line::from(title)))
        .x_axis(
            Axis::default()
                .bounds([0.0, last])
                .labels(vec![
                    Line::from("0"),
                    Line::from(format!("{}", channels.saturating_sub(1))).right_aligned(),
                ])
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![Line::from(num(lo)), Line::from(num(hi))])
                .style(theme.dim()),
        );
    frame.render_widget(chart, area);
}

/// The layer's facts: verdict, inference, statistics per tensor, flags.
pub fn side_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let Some(row) = app.detail_row() else {
        return vec![Line::from(Span::styled(
            "No layer selected.",
            app.theme.dim(),
        ))];
    };
    let mut lines = verdict_lines(app, row, width);
    lines.extend(flag_lines(app, row, width));
    lines.extend(explain_lines(app, row, width));
    lines.push(Line::default());
    lines.extend(stats_lines(app, row));
    lines
}

/// Status and what it means, then the inference of the diff (or the layer's facts for one
/// checkpoint).
pub fn verdict_lines(app: &App, row: &LayerRow, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let mut lines = Vec::new();
    if let Some(l) = r.layer_ls(row) {
        let counter = match (r.layer_a(row), r.layer_b(row)) {
            (Some(a), Some(b)) if r.is_pair() => format!(
                " · counter {} → {}",
                opt_counter(a.num_batches_tracked),
                opt_counter(b.num_batches_tracked)
            ),
            _ => format!(" · counter {}", opt_counter(l.num_batches_tracked)),
        };
        lines.push(Line::from(Span::styled(
            format!(
                "{} · {} channels · {}{counter}",
                l.convention.as_str(),
                l.channels,
                l.dtype
            ),
            theme.dim(),
        )));
    }
    match (&r.diff, r.layer_diff(row)) {
        (_, Some(d)) => {
            let head = format!(
                "{} {}: {}",
                status_symbol(d.status),
                status_label(d.status),
                status_meaning(d.status)
            );
            lines.extend(wrapped(&head, width, 2, theme.status(d.status)));
            let inf = &d.inference;
            let mut facts = Vec::new();
            match (inf.forwards, inf.forwards_min) {
                (Some(k), _) => facts.push(format!("{k} train-mode forwards (counter)")),
                (None, Some(k)) => facts.push(format!("at least {k} train-mode forwards")),
                _ => {}
            }
            facts.push(match inf.momentum {
                Momentum::Value(m) => format!("momentum {} ({})", num(m), inf.momentum_source),
                Momentum::Cma => format!("momentum: cumulative average ({})", inf.momentum_source),
            });
            if let Some(ret) = inf.retained {
                facts.push(format!("{}% of A's statistics retained", num(ret * 100.0)));
            }
            if let Some(c) = inf.consistent {
                facts.push(format!(
                    "update rule {}",
                    if c { "consistent" } else { "NOT consistent" }
                ));
            }
            lines.extend(wrapped(&facts.join(" · "), width, 2, Style::new()));
            for note in &inf.notes {
                lines.extend(wrapped(&format!("· {note}"), width, 2, theme.dim()));
            }
        }
        (Job::Running(_), None) => lines.push(Line::from(Span::styled(
            "Status: comparing the checkpoints…",
            theme.dim(),
        ))),
        (Job::Failed(_), None) => lines.push(Line::from(Span::styled(
            "Status unknown: the comparison failed.",
            theme.error(),
        ))),
        _ => {}
    }
    lines
}

fn opt_counter(n: Option<i64>) -> String {
    n.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// Summary statistics of each tensor on each side, and how much it changed.
fn stats_lines(app: &App, row: &LayerRow) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let sides: Vec<(&str, &crate::audit::LsLayer)> = if r.is_pair() {
        [("A", r.layer_a(row)), ("B", r.layer_b(row))]
            .into_iter()
            .filter_map(|(t, l)| Some((t, l?)))
            .collect()
    } else {
        r.layer_a(row).map(|l| ("", l)).into_iter().collect()
    };
    let diff = r.layer_diff(row);
    let mut lines = Vec::new();
    for role in Role::FLOATS {
        let present: Vec<_> = sides
            .iter()
            .filter_map(|(tag, l)| Some((tag, l.stats.get(&role).copied().flatten()?)))
            .collect();
        if present.is_empty() {
            continue;
        }
        let mut head = vec![Span::styled(role.as_str().to_owned(), theme.heading())];
        let max = diff.and_then(|d| match role {
            Role::Weight => d.max_abs_diff.weight,
            Role::Bias => d.max_abs_diff.bias,
            Role::RunningMean => d.max_abs_diff.running_mean,
            Role::RunningVar => d.max_abs_diff.running_var,
            Role::NumBatchesTracked => None,
        });
        if let Some(m) = max {
            head.push(Span::raw(format!("  max|Δ| {}", num(m))));
        }
        lines.push(Line::from(head));
        for (tag, s) in present {
            let nonfinite = if s.nonfinite > 0 {
                format!("  {} non-finite", s.nonfinite)
            } else {
                String::new()
            };
            lines.push(Line::from(format!(
                "  {tag:1} {} ± {}  [{} .. {}]{nonfinite}",
                opt_num(s.mean),
                opt_num(s.std),
                opt_num(s.min),
                opt_num(s.max)
            )));
        }
    }
    lines
}

fn flag_lines(app: &App, row: &LayerRow, width: usize) -> Vec<Line<'static>> {
    let flags = app.reports.flags(row);
    if flags.is_empty() {
        return vec![Line::from(Span::styled("no health flags", app.theme.dim()))];
    }
    let mut lines = vec![Line::from(Span::styled(
        "health flags",
        app.theme.heading(),
    ))];
    for f in flags {
        lines.extend(wrapped(
            &format!("! {}: {}", f.as_str(), flag_meaning(f)),
            width,
            2,
            app.theme.warning(),
        ));
    }
    lines
}

/// Where explain's momentum or eps came from.
fn source(s: Source) -> &'static str {
    match s {
        Source::Activations => "activation file",
        Source::Option => "option",
        Source::Convention => "convention",
    }
}

/// What `explain` found for the layer: its verdict, impact, implied batch, replay and, on
/// captured inputs, the modes table.
fn explain_lines(app: &App, row: &LayerRow, width: usize) -> Vec<Line<'static>> {
    let theme = app.theme;
    let r = &app.reports;
    let mut lines = Vec::new();
    let text = |lines: &mut Vec<Line<'static>>, s: String, style: Style| {
        lines.extend(wrapped(&s, width, 2, style));
    };
    let e = match (&r.explain, r.layer_explain(row)) {
        (_, Some(e)) => e,
        (Job::Running(_), None) if r.is_pair() => {
            text(&mut lines, "explain: running…".to_owned(), theme.dim());
            return lines;
        }
        (Job::Failed(msg), None) => {
            text(&mut lines, format!("explain failed: {msg}"), theme.error());
            return lines;
        }
        _ => return lines,
    };
    lines.push(Line::default());
    lines.push(Line::from(Span::styled("explain", theme.heading())));
    text(&mut lines, e.verdict.clone(), Style::new());
    text(
        &mut lines,
        format!(
            "momentum {} ({}) · eps {} ({})",
            e.momentum,
            source(e.momentum_source),
            num(e.eps),
            source(e.eps_source)
        ),
        theme.dim(),
    );
    if let Some(w) = e.impact.worst.first() {
        let rest: Vec<String> = e.impact.worst[1..]
            .iter()
            .map(|w| format!("{} ({})", w.channel, opt_num(w.rms_change)))
            .collect();
        let then = if rest.is_empty() {
            String::new()
        } else {
            format!("; then {}", rest.join(", "))
        };
        text(
            &mut lines,
            format!(
                "impact: channel {} moves by {} output std (mean shift {}, scale ×{}){then}",
                w.channel,
                opt_num(w.rms_change),
                opt_num(w.mean_shift),
                opt_num(w.scale_ratio)
            ),
            Style::new(),
        );
    }
    if let Some(ib) = &e.implied_batch {
        let what = if ib.exact {
            "one forward, exact".to_owned()
        } else {
            format!("{} forwards, weighted average", ib.forwards)
        };
        let negative = if ib.negative_var_channels.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ib
                .negative_var_channels
                .iter()
                .map(usize::to_string)
                .collect();
            format!(" · negative variance in channels {}", list.join(", "))
        };
        text(
            &mut lines,
            format!(
                "implied batch: {what}, {} variance (plotted){negative}",
                ib.var_kind
            ),
            Style::new(),
        );
    }
    if let Some(rp) = &e.replay {
        text(
            &mut lines,
            format!(
                "replay of {} batches from A: max error mean {}, var {} · {}",
                rp.batches,
                num(rp.max_abs_err_mean),
                num(rp.max_abs_err_var),
                if rp.explains_b {
                    "explains B"
                } else {
                    "does NOT explain B"
                }
            ),
            if rp.explains_b {
                Style::new()
            } else {
                theme.warning()
            },
        );
    }
    match &e.inputs {
        Inputs::Captured {
            forwards,
            train_forwards,
            with_outputs,
            ..
        } => {
            text(
                &mut lines,
                format!(
                    "modes on {forwards} captured forwards ({train_forwards} in train mode, \
                     {with_outputs} with outputs):"
                ),
                theme.dim(),
            );
            lines.extend(modes_table(app, e, width));
        }
        Inputs::Synthetic { samples, .. } => text(
            &mut lines,
            format!(
                "modes re-ran on {samples} synthetic samples: an activation file \
                 (view A B --activations FILE) re-runs them on captured inputs"
            ),
            theme.dim(),
        ),
    }
    for note in &e.notes {
        lines.extend(wrapped(&format!("· {note}"), width, 2, theme.dim()));
    }
    lines
}

/// The modes table: output mean and std of each mode and its error against the recorded
/// outputs; the best mode marked.
fn modes_table(app: &App, e: &ExplainLayer, width: usize) -> Vec<Line<'static>> {
    let vs_train = width >= 60;
    let mut header = format!(
        "  {:14} {:3} {:>9} {:>9} {:>9}",
        "mode", "upd", "out mean", "out std", "max|err|"
    );
    if vs_train {
        header.push_str(&format!(" {:>9}", "vs train"));
    }
    let mut lines = vec![Line::from(Span::styled(header, app.theme.heading()))];
    for m in &e.modes {
        let best = e.best_mode == Some(m.mode);
        let mut row = format!(
            "{}{:14} {:3} {:>9} {:>9} {:>9}",
            if best { "▶ " } else { "  " },
            m.mode.as_str(),
            if m.updates { "yes" } else { "no" },
            opt_num(m.output.map(|o| o.mean)),
            opt_num(m.output.map(|o| o.std)),
            opt_num(m.max_abs_err)
        );
        if vs_train {
            row.push_str(&format!(" {:>9}", opt_num(m.max_abs_diff_vs_train)));
        }
        let style = if best {
            app.theme.heading()
        } else {
            Style::new()
        };
        lines.push(Line::from(Span::styled(row, style)));
    }
    if let (Some(best), Some(reproduced)) = (e.best_mode, e.reproduced) {
        let text = format!(
            "▶ best mode {} {} the recorded outputs",
            best.as_str(),
            if reproduced {
                "reproduces"
            } else {
                "comes closest to, but does not reproduce,"
            }
        );
        let style = if reproduced {
            Style::new()
        } else {
            app.theme.warning()
        };
        lines.extend(wrapped(&text, width, 2, style));
    }
    lines
}
