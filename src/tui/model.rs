//! What the screens list: the audit reports, the state of the background comparison, and rows
//! that join A, B and the diff by aligned name. Rows hold indices into the reports, never
//! numbers of their own, so a TUI screen and a CLI report show the same values.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::audit::diff::{DiffReport, Group, LayerDiff, Status, TensorChange, TensorDiff};
use crate::audit::explain::{ExplainLayer, ExplainReport};
use crate::audit::{LayerChannels, LsLayer, LsReport, TensorEntry};
use crate::bn::{Flag, Role};
use crate::fmt::{self, opt_num};

/// How far a background job has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Units done (bytes compared).
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

impl Progress {
    /// Fraction done, in `[0, 1]`.
    pub fn ratio(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        }
    }
}

/// A report computed off the UI thread.
#[derive(Debug, Clone)]
pub enum Job<T> {
    /// Not asked for (one checkpoint only).
    Absent,
    /// Still running.
    Running(Progress),
    /// Done.
    Ready(T),
    /// Failed; the message names the file and the problem.
    Failed(String),
}

impl<T> Job<T> {
    /// The report, once ready.
    pub fn ready(&self) -> Option<&T> {
        match self {
            Job::Ready(t) => Some(t),
            _ => None,
        }
    }
}

/// Everything the UI presents.
#[derive(Debug, Clone)]
pub struct Reports {
    /// The `ls` report of A, with every tensor listed.
    pub a: LsReport,
    /// The `ls` report of B, when there are two checkpoints.
    pub b: Option<LsReport>,
    /// The diff of A and B, computed in the background.
    pub diff: Job<DiffReport>,
    /// `explain` of A and B (with the activation file, if any), after the diff.
    pub explain: Job<ExplainReport>,
    /// Per-channel values of layers (or why they could not be read), read when the Detail
    /// screen first shows them.
    pub channels: BTreeMap<String, Result<LayerChannels, String>>,
}

impl Reports {
    /// Reports of one checkpoint.
    pub fn single(a: LsReport) -> Reports {
        Reports {
            a,
            b: None,
            diff: Job::Absent,
            explain: Job::Absent,
            channels: BTreeMap::new(),
        }
    }

    /// Reports of a pair whose diff is still to come.
    pub fn pair(a: LsReport, b: LsReport) -> Reports {
        Reports {
            a,
            b: Some(b),
            diff: Job::Running(Progress::default()),
            explain: Job::Running(Progress::default()),
            channels: BTreeMap::new(),
        }
    }

    /// Whether two checkpoints are shown.
    pub fn is_pair(&self) -> bool {
        self.b.is_some()
    }

    /// The finished diff.
    pub fn diff(&self) -> Option<&DiffReport> {
        self.diff.ready()
    }

    /// A's and B's names as the rows name them: aligned once the diff says how.
    fn aligners(&self) -> (impl Fn(&str) -> String + '_, impl Fn(&str) -> String + '_) {
        let al = self.diff().map(|d| &d.alignment);
        (
            move |n: &str| al.map_or_else(|| n.to_owned(), |al| al.name_a(n)),
            move |n: &str| al.map_or_else(|| n.to_owned(), |al| al.name_b(n)),
        )
    }

    /// A name listed before the diff aligned A's and B's names, as the rows name it now.
    pub fn realigned(&self, name: &str) -> String {
        let Some(al) = self.diff().map(|d| &d.alignment) else {
            return name.to_owned();
        };
        // Before the diff the rows are named as each side names them: B's name, if B has
        // a layer or tensor of that name, else A's.
        let in_b = self.b.as_ref().is_some_and(|b| {
            b.layers.iter().any(|l| l.name == name)
                || b.tensors.iter().flatten().any(|t| t.name == name)
        });
        if in_b {
            al.name_b(name)
        } else {
            al.name_a(name)
        }
    }

    /// A's layer of a row.
    pub fn layer_a(&self, row: &LayerRow) -> Option<&LsLayer> {
        row.a.map(|i| &self.a.layers[i])
    }

    /// B's layer of a row.
    pub fn layer_b(&self, row: &LayerRow) -> Option<&LsLayer> {
        Some(&self.b.as_ref()?.layers[row.b?])
    }

    /// The diff's verdict on a row.
    pub fn layer_diff(&self, row: &LayerRow) -> Option<&LayerDiff> {
        Some(&self.diff()?.layers[row.diff?])
    }

    /// The explanation of a row's layer, when explain covered it.
    pub fn layer_explain(&self, row: &LayerRow) -> Option<&ExplainLayer> {
        Some(&self.explain.ready()?.layers[row.explain?])
    }

    /// The row's layer as ls saw it, B's side first (the checkpoint under audit).
    pub fn layer_ls(&self, row: &LayerRow) -> Option<&LsLayer> {
        self.layer_b(row).or_else(|| self.layer_a(row))
    }

    /// Status of a row, once the diff is known.
    pub fn status(&self, row: &LayerRow) -> Option<Status> {
        self.layer_diff(row).map(|d| d.status)
    }

    /// Health flags of either side.
    pub fn flags(&self, row: &LayerRow) -> Vec<Flag> {
        let set: BTreeSet<Flag> = [self.layer_a(row), self.layer_b(row)]
            .into_iter()
            .flatten()
            .flat_map(|l| l.flags.iter().copied())
            .collect();
        set.into_iter().collect()
    }

    /// A's entry of a tensor row.
    pub fn tensor_a(&self, row: &TensorRow) -> Option<&TensorEntry> {
        Some(&self.a.tensors.as_ref()?[row.a?])
    }

    /// B's entry of a tensor row.
    pub fn tensor_b(&self, row: &TensorRow) -> Option<&TensorEntry> {
        Some(&self.b.as_ref()?.tensors.as_ref()?[row.b?])
    }

    /// The diff of a tensor row.
    pub fn tensor_diff(&self, row: &TensorRow) -> Option<&TensorDiff> {
        Some(&self.diff()?.tensors[row.diff?])
    }

    /// Change of a tensor row, once the diff is known.
    pub fn change(&self, row: &TensorRow) -> Option<TensorChange> {
        self.tensor_diff(row).map(|d| d.change)
    }

    /// The BatchNorm layers, A and B and the diff joined by aligned name, sorted by name.
    pub fn layer_rows(&self) -> Vec<LayerRow> {
        let (name_a, name_b) = self.aligners();
        let mut rows: BTreeMap<String, LayerRow> = BTreeMap::new();
        let mut add = |name: &str, set: &dyn Fn(&mut LayerRow)| {
            let r = rows.entry(name.to_owned()).or_insert_with(|| LayerRow {
                name: name.to_owned(),
                ..LayerRow::default()
            });
            set(r);
        };
        for (i, l) in self.a.layers.iter().enumerate() {
            add(&name_a(&l.name), &|r| r.a = Some(i));
        }
        for (i, l) in self.b.iter().flat_map(|b| b.layers.iter().enumerate()) {
            add(&name_b(&l.name), &|r| r.b = Some(i));
        }
        for (i, d) in self.diff().iter().flat_map(|d| d.layers.iter().enumerate()) {
            add(&d.name, &|r| r.diff = Some(i));
        }
        let explained = self.explain.ready().into_iter();
        for (i, e) in explained.flat_map(|e| e.layers.iter().enumerate()) {
            add(&e.name, &|r| r.explain = Some(i));
        }
        rows.into_values().collect()
    }

    /// Every tensor, A and B and the diff joined by aligned name, sorted by name.
    pub fn tensor_rows(&self) -> Vec<TensorRow> {
        let (name_a, name_b) = self.aligners();
        let mut rows: BTreeMap<String, TensorRow> = BTreeMap::new();
        let mut add = |name: &str, set: &dyn Fn(&mut TensorRow)| {
            let r = rows.entry(name.to_owned()).or_insert_with(|| TensorRow {
                name: name.to_owned(),
                ..TensorRow::default()
            });
            set(r);
        };
        for (i, t) in self.a.tensors.iter().flatten().enumerate() {
            add(&name_a(&t.name), &|r| r.a = Some(i));
        }
        let b_tensors = self.b.as_ref().and_then(|b| b.tensors.as_ref());
        for (i, t) in b_tensors.into_iter().flatten().enumerate() {
            add(&name_b(&t.name), &|r| r.b = Some(i));
        }
        for (i, d) in self
            .diff()
            .iter()
            .flat_map(|d| d.tensors.iter().enumerate())
        {
            add(&d.name, &|r| r.diff = Some(i));
        }
        rows.into_values().collect()
    }

    /// The Overview's list: the diff's group verdicts (most severe first, as the diff orders
    /// them), or for one checkpoint its sub-models.
    pub fn group_rows(&self) -> Vec<GroupRow> {
        if self.is_pair() {
            return self
                .diff()
                .map(|d| (0..d.groups.len()).map(GroupRow::Verdict).collect())
                .unwrap_or_default();
        }
        let mut subs: Vec<GroupRow> = Vec::new();
        for l in &self.a.layers {
            let prefix = fmt::submodel(&l.name);
            match subs.last_mut() {
                Some(GroupRow::Submodel {
                    prefix: p,
                    layers,
                    flagged,
                }) if p == prefix => {
                    *layers += 1;
                    *flagged += usize::from(!l.flags.is_empty());
                }
                _ => subs.push(GroupRow::Submodel {
                    prefix: prefix.to_owned(),
                    layers: 1,
                    flagged: usize::from(!l.flags.is_empty()),
                }),
            }
        }
        subs
    }

    /// The diff group of a verdict row.
    pub fn group(&self, row: &GroupRow) -> Option<&Group> {
        match row {
            GroupRow::Verdict(i) => self.diff().map(|d| &d.groups[*i]),
            GroupRow::Submodel { .. } => None,
        }
    }
}

/// One BatchNorm layer: where it is in A, B and the diff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerRow {
    /// Aligned module path.
    pub name: String,
    /// Index into A's layers.
    pub a: Option<usize>,
    /// Index into B's layers.
    pub b: Option<usize>,
    /// Index into the diff's layers.
    pub diff: Option<usize>,
    /// Index into the explain report's layers.
    pub explain: Option<usize>,
}

/// One tensor: where it is in A, B and the diff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorRow {
    /// Aligned name.
    pub name: String,
    /// Index into A's tensors.
    pub a: Option<usize>,
    /// Index into B's tensors.
    pub b: Option<usize>,
    /// Index into the diff's tensors.
    pub diff: Option<usize>,
}

/// One line of the Overview's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRow {
    /// A group verdict of the diff, by index.
    Verdict(usize),
    /// A sub-model of a single checkpoint.
    Submodel {
        /// Top-level module name.
        prefix: String,
        /// BatchNorm layers under it.
        layers: usize,
        /// Of which have health flags.
        flagged: usize,
    },
}

impl GroupRow {
    /// The module prefix the row stands for.
    pub fn prefix<'a>(&'a self, reports: &'a Reports) -> &'a str {
        match self {
            GroupRow::Verdict(_) => reports.group(self).map_or("", |g| g.prefix.as_str()),
            GroupRow::Submodel { prefix, .. } => prefix,
        }
    }
}

/// A value to sort a column by. Absent numbers sort last in either direction.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    /// Names, compared naturally (`layer2` before `layer10`).
    Text(String),
    /// Numbers.
    Num(Option<f64>),
}

/// Compares two keys in the given direction; absent numbers go last either way.
pub fn compare(a: &SortKey, b: &SortKey, descending: bool) -> Ordering {
    let ord = match (a, b) {
        (SortKey::Num(None), SortKey::Num(None)) => return Ordering::Equal,
        (SortKey::Num(None), _) => return Ordering::Greater,
        (_, SortKey::Num(None)) => return Ordering::Less,
        (SortKey::Num(Some(x)), SortKey::Num(Some(y))) => x.total_cmp(y),
        (SortKey::Text(x), SortKey::Text(y)) => natural(x, y),
        (SortKey::Text(_), SortKey::Num(_)) => Ordering::Less,
        (SortKey::Num(_), SortKey::Text(_)) => Ordering::Greater,
    };
    if descending { ord.reverse() } else { ord }
}

/// Natural order: runs of digits compare as numbers, so module `10` comes after `9`.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    while let (Some(&cx), Some(&cy)) = (x.first(), y.first()) {
        if cx.is_ascii_digit() && cy.is_ascii_digit() {
            let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
            let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
            let (nx, ny) = (trim_zeros(&x[..dx]), trim_zeros(&y[..dy]));
            let ord = nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny));
            if ord != Ordering::Equal {
                return ord;
            }
            x = &x[dx..];
            y = &y[dy..];
        } else {
            if cx != cy {
                return cx.cmp(&cy);
            }
            x = &x[1..];
            y = &y[1..];
        }
    }
    x.len().cmp(&y.len()).then_with(|| a.cmp(b))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros.min(digits.len().saturating_sub(1))..]
}

/// A column of the Layers table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerColumn {
    /// Module path.
    Name,
    /// Diff status.
    Status,
    /// Channel count.
    Channels,
    /// Counter (one checkpoint) or its delta (two).
    Counter,
    /// Range of running_mean (sorted by largest magnitude).
    Mean,
    /// Range of running_var (sorted by smallest variance).
    Var,
    /// Largest |Δ running_mean| over channels (`|Δmean|`).
    DeltaMean,
    /// Largest |Δ running_var| over channels (`|Δvar|`).
    DeltaVar,
    /// Largest change of eval outputs from A's statistics to B's, in output standard
    /// deviations (explain's `impact.max_rms_change`).
    Impact,
    /// Whether weight or bias changed.
    Affine,
    /// Health flags (sorted by count).
    Flags,
}

impl LayerColumn {
    /// The columns of one checkpoint's table.
    pub const SINGLE: [LayerColumn; 6] = [
        LayerColumn::Name,
        LayerColumn::Channels,
        LayerColumn::Counter,
        LayerColumn::Mean,
        LayerColumn::Var,
        LayerColumn::Flags,
    ];

    /// The columns of a pair's table.
    pub const PAIR: [LayerColumn; 8] = [
        LayerColumn::Name,
        LayerColumn::Status,
        LayerColumn::Counter,
        LayerColumn::DeltaMean,
        LayerColumn::DeltaVar,
        LayerColumn::Impact,
        LayerColumn::Affine,
        LayerColumn::Flags,
    ];

    /// The columns for one or two checkpoints.
    pub fn all(pair: bool) -> &'static [LayerColumn] {
        if pair { &Self::PAIR } else { &Self::SINGLE }
    }

    /// Header text.
    pub fn title(self, pair: bool) -> &'static str {
        match self {
            LayerColumn::Name => "layer",
            LayerColumn::Status => "status",
            LayerColumn::Channels => "C",
            LayerColumn::Counter if pair => "Δbatch",
            LayerColumn::Counter => "batches",
            LayerColumn::Mean => "running_mean",
            LayerColumn::Var => "running_var",
            LayerColumn::DeltaMean => "|Δmean|",
            LayerColumn::DeltaVar => "|Δvar|",
            LayerColumn::Impact => "impact",
            LayerColumn::Affine => "affine",
            LayerColumn::Flags => "flags",
        }
    }

    /// Which columns go first when names get cramped (highest first, 0 never).
    pub fn drop(self) -> u8 {
        match self {
            LayerColumn::Name => 0,
            LayerColumn::Status => 0,
            LayerColumn::DeltaMean => 1,
            LayerColumn::DeltaVar => 2,
            LayerColumn::Impact => 3,
            LayerColumn::Flags => 3,
            LayerColumn::Var => 4,
            LayerColumn::Counter => 5,
            LayerColumn::Mean => 6,
            LayerColumn::Affine => 7,
            LayerColumn::Channels => 8,
        }
    }

    /// Whether the column holds numbers (right-aligned, descending by default).
    pub fn numeric(self) -> bool {
        !matches!(
            self,
            LayerColumn::Name | LayerColumn::Status | LayerColumn::Affine | LayerColumn::Flags
        )
    }

    /// The cell text of `row`.
    pub fn cell(self, r: &Reports, row: &LayerRow) -> String {
        let ls = r.layer_ls(row);
        let diff = r.layer_diff(row);
        let range = |role: Role| match ls.and_then(|l| l.stats.get(&role).copied().flatten()) {
            Some(s) => fmt::range(s.min, s.max),
            None => "-".to_owned(),
        };
        let pending = || {
            if matches!(r.diff, Job::Running(_)) {
                "…".to_owned()
            } else {
                "-".to_owned()
            }
        };
        match self {
            LayerColumn::Impact => match (r.layer_explain(row), &r.explain) {
                (Some(e), _) => opt_num(e.impact.max_rms_change),
                (None, Job::Running(_)) => "…".to_owned(),
                _ => "-".to_owned(),
            },
            LayerColumn::Name => row.name.clone(),
            LayerColumn::Status => match diff {
                Some(d) => format!(
                    "{} {}",
                    super::theme::status_symbol(d.status),
                    super::theme::status_label(d.status)
                ),
                None => pending(),
            },
            LayerColumn::Channels => ls.map_or_else(String::new, |l| l.channels.to_string()),
            LayerColumn::Counter if r.is_pair() => match diff {
                Some(d) => d.nbt_delta.map_or_else(
                    || "-".to_owned(),
                    |n| {
                        if n > 0 {
                            format!("+{n}")
                        } else {
                            n.to_string()
                        }
                    },
                ),
                None => pending(),
            },
            LayerColumn::Counter => ls
                .and_then(|l| l.num_batches_tracked)
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            LayerColumn::Mean => range(Role::RunningMean),
            LayerColumn::Var => range(Role::RunningVar),
            LayerColumn::DeltaMean => match diff {
                Some(d) => opt_num(d.max_abs_diff.running_mean),
                None => pending(),
            },
            LayerColumn::DeltaVar => match diff {
                Some(d) => opt_num(d.max_abs_diff.running_var),
                None => pending(),
            },
            LayerColumn::Affine => match diff {
                Some(d) => affine_changed(d),
                None => pending(),
            },
            LayerColumn::Flags => {
                let flags: Vec<&str> = r.flags(row).iter().map(|f| f.as_str()).collect();
                flags.join(",")
            }
        }
    }

    /// The sort key of `row`.
    pub fn key(self, r: &Reports, row: &LayerRow) -> SortKey {
        let ls = r.layer_ls(row);
        let diff = r.layer_diff(row);
        let stat = |role: Role| ls.and_then(|l| l.stats.get(&role).copied().flatten());
        let num = |v: Option<f64>| SortKey::Num(v);
        match self {
            LayerColumn::Name => SortKey::Text(row.name.clone()),
            LayerColumn::Status => {
                num(diff.map(|d| f64::from(super::theme::status_rank(d.status))))
            }
            LayerColumn::Channels => num(ls.map(|l| l.channels as f64)),
            LayerColumn::Counter if r.is_pair() => {
                num(diff.and_then(|d| d.nbt_delta).map(|n| n as f64))
            }
            LayerColumn::Counter => num(ls.and_then(|l| l.num_batches_tracked).map(|n| n as f64)),
            LayerColumn::Mean => {
                num(stat(Role::RunningMean).and_then(|s| Some(s.min?.abs().max(s.max?.abs()))))
            }
            LayerColumn::Var => num(stat(Role::RunningVar).and_then(|s| s.min)),
            LayerColumn::DeltaMean => num(diff.and_then(|d| d.max_abs_diff.running_mean)),
            LayerColumn::DeltaVar => num(diff.and_then(|d| d.max_abs_diff.running_var)),
            LayerColumn::Impact => num(r.layer_explain(row).and_then(|e| e.impact.max_rms_change)),
            LayerColumn::Affine => SortKey::Text(diff.map(affine_changed).unwrap_or_default()),
            LayerColumn::Flags => num(Some(r.flags(row).len() as f64)),
        }
    }
}

/// Which affine tensors changed: `weight`, `bias`, `both`, `no`, or `-` without any.
fn affine_changed(d: &LayerDiff) -> String {
    match (d.changed.weight, d.changed.bias) {
        (None, None) => "-".to_owned(),
        (Some(true), Some(true)) => "both".to_owned(),
        (Some(true), _) => "weight".to_owned(),
        (_, Some(true)) => "bias".to_owned(),
        _ => "no".to_owned(),
    }
}

/// A column of the Tensors table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorColumn {
    /// Full name.
    Name,
    /// Dtype (A→B when it differs).
    Dtype,
    /// Shape.
    Shape,
    /// Bytes of data.
    Bytes,
    /// How it changed.
    Change,
    /// Largest |B−A|.
    MaxDiff,
    /// ‖B−A‖/‖A‖.
    RelL2,
}

impl TensorColumn {
    /// The columns of one checkpoint's table.
    pub const SINGLE: [TensorColumn; 4] = [
        TensorColumn::Name,
        TensorColumn::Dtype,
        TensorColumn::Shape,
        TensorColumn::Bytes,
    ];

    /// The columns of a pair's table.
    pub const PAIR: [TensorColumn; 7] = [
        TensorColumn::Name,
        TensorColumn::Dtype,
        TensorColumn::Shape,
        TensorColumn::Bytes,
        TensorColumn::Change,
        TensorColumn::MaxDiff,
        TensorColumn::RelL2,
    ];

    /// The columns for one or two checkpoints.
    pub fn all(pair: bool) -> &'static [TensorColumn] {
        if pair { &Self::PAIR } else { &Self::SINGLE }
    }

    /// Header text.
    pub fn title(self) -> &'static str {
        match self {
            TensorColumn::Name => "tensor",
            TensorColumn::Dtype => "dtype",
            TensorColumn::Shape => "shape",
            TensorColumn::Bytes => "bytes",
            TensorColumn::Change => "change",
            TensorColumn::MaxDiff => "max|Δ|",
            TensorColumn::RelL2 => "rel L2",
        }
    }

    /// Which columns go first when names get cramped (highest first, 0 never).
    pub fn drop(self) -> u8 {
        match self {
            TensorColumn::Name => 0,
            TensorColumn::Change => 1,
            TensorColumn::MaxDiff => 2,
            TensorColumn::Bytes => 3,
            TensorColumn::Dtype => 4,
            TensorColumn::Shape => 5,
            TensorColumn::RelL2 => 6,
        }
    }

    /// Whether the column holds numbers.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            TensorColumn::Bytes | TensorColumn::MaxDiff | TensorColumn::RelL2
        )
    }

    /// The cell text of `row`.
    pub fn cell(self, r: &Reports, row: &TensorRow) -> String {
        let (a, b) = (r.tensor_a(row), r.tensor_b(row));
        let diff = r.tensor_diff(row);
        let pending = || {
            if matches!(r.diff, Job::Running(_)) {
                "…".to_owned()
            } else {
                "-".to_owned()
            }
        };
        let either = b.or(a);
        match self {
            TensorColumn::Name => row.name.clone(),
            TensorColumn::Dtype => match (a, b) {
                (Some(a), Some(b)) if a.dtype != b.dtype => format!("{}→{}", a.dtype, b.dtype),
                _ => either.map_or_else(String::new, |t| t.dtype.to_string()),
            },
            TensorColumn::Shape => match (a, b) {
                (Some(a), Some(b)) if a.shape != b.shape => {
                    format!("{}→{}", shape(&a.shape), shape(&b.shape))
                }
                _ => either.map_or_else(String::new, |t| shape(&t.shape)),
            },
            TensorColumn::Bytes => either.map_or_else(String::new, |t| fmt::bytes(t.bytes)),
            TensorColumn::Change => match diff {
                Some(d) => super::theme::change_label(d.change).to_owned(),
                None => pending(),
            },
            TensorColumn::MaxDiff => match diff {
                Some(d) => opt_num(d.max_abs_diff),
                None => pending(),
            },
            TensorColumn::RelL2 => match diff {
                Some(d) => opt_num(d.rel_l2),
                None => pending(),
            },
        }
    }

    /// The sort key of `row`.
    pub fn key(self, r: &Reports, row: &TensorRow) -> SortKey {
        let either = r.tensor_b(row).or(r.tensor_a(row));
        let diff = r.tensor_diff(row);
        match self {
            TensorColumn::Name | TensorColumn::Dtype | TensorColumn::Shape => {
                SortKey::Text(self.cell(r, row))
            }
            TensorColumn::Bytes => SortKey::Num(either.map(|t| t.bytes as f64)),
            TensorColumn::Change => {
                SortKey::Num(diff.map(|d| f64::from(super::theme::change_rank(d.change))))
            }
            TensorColumn::MaxDiff => SortKey::Num(diff.and_then(|d| d.max_abs_diff)),
            TensorColumn::RelL2 => SortKey::Num(diff.and_then(|d| d.rel_l2)),
        }
    }
}

/// A shape as `[a, b, c]`.
pub fn shape(dims: &[u64]) -> String {
    let dims: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["b.10", "b.9", "b.1", "a", "b.09x"];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(names, vec!["a", "b.1", "b.9", "b.09x", "b.10"]);
    }

    #[test]
    fn absent_numbers_sort_last_both_ways() {
        let mut keys = [
            SortKey::Num(None),
            SortKey::Num(Some(1.0)),
            SortKey::Num(Some(3.0)),
        ];
        keys.sort_by(|a, b| compare(a, b, true));
        assert_eq!(keys[0], SortKey::Num(Some(3.0)));
        assert_eq!(keys[2], SortKey::Num(None));
        keys.sort_by(|a, b| compare(a, b, false));
        assert_eq!(keys[0], SortKey::Num(Some(1.0)));
        assert_eq!(keys[2], SortKey::Num(None));
    }
}
