//! The application state and every change to it, without a terminal: key-sequence tests drive
//! [`App::apply`] with [`Action`]s and read the state back; the runner does the same with
//! real events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ratatui::layout::Rect;

use super::layout::{self, Areas};
use super::model::{
    GroupRow, Job, LayerColumn, LayerRow, Progress, Reports, SortKey, TensorColumn, TensorRow,
    compare, natural,
};
use super::restore::{Dialog, Key, Request, default_path};
use super::search::Fuzzy;
use super::theme::{Theme, status_rank};
use super::view::{self, detail};
use crate::audit::LayerChannels;
use crate::audit::diff::{DiffReport, Status, TensorChange};
use crate::audit::explain::ExplainReport;
use crate::audit::restore::RestoreReport;
use crate::bn::Flag;

/// The screens, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Screen {
    /// The checkpoints and the verdicts.
    Overview,
    /// BatchNorm layers.
    Layers,
    /// One layer in depth.
    Detail,
    /// Every tensor.
    Tensors,
}

impl Screen {
    /// Every screen, in tab order.
    pub const ALL: [Screen; 4] = [
        Screen::Overview,
        Screen::Layers,
        Screen::Detail,
        Screen::Tensors,
    ];

    /// Tab title.
    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Layers => "Layers",
            Screen::Detail => "Detail",
            Screen::Tensors => "Tensors",
        }
    }

    /// The number key that shows it.
    pub fn key(self) -> char {
        match self {
            Screen::Overview => '1',
            Screen::Layers => '2',
            Screen::Detail => '3',
            Screen::Tensors => '4',
        }
    }
}

/// The two panes of a screen that can hold the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The list (or the plots).
    Main,
    /// Details of the selection.
    Side,
}

/// Everything a user can ask for; [`super::events`] maps keys and mouse to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Previous row (or scroll up).
    Up,
    /// Next row (or scroll down).
    Down,
    /// One page up.
    PageUp,
    /// One page down.
    PageDown,
    /// First row.
    Home,
    /// Last row.
    End,
    /// Collapse (tree) or previous layer (Detail).
    Left,
    /// Expand (tree) or next layer (Detail).
    Right,
    /// Open the selection: expand a group, show a layer's detail, a verdict's layers.
    Activate,
    /// Move the focus to the other pane.
    NextPane,
    /// Show a screen.
    Show(Screen),
    /// Start typing a search.
    Search,
    /// A character typed into the search.
    Input(char),
    /// Delete the last character of the search.
    Erase,
    /// Keep the search and stop typing.
    Accept,
    /// Sort by the next column.
    Sort,
    /// Reverse the sort order.
    Reverse,
    /// Next status filter.
    Filter,
    /// Module tree or flat table.
    Tree,
    /// Plot B over A, or B − A.
    Delta,
    /// Show or hide the key list.
    Help,
    /// Write a restored checkpoint (Layers and Detail of a pair).
    Restore,
    /// Close, cancel, clear, go back; quit when there is nothing left to back out of.
    Back,
    /// Quit.
    Quit,
    /// Mouse wheel at a position.
    Wheel {
        /// Towards the top.
        up: bool,
        /// Column.
        column: u16,
        /// Row.
        row: u16,
    },
    /// Left click at a position.
    Click {
        /// Column.
        column: u16,
        /// Row.
        row: u16,
    },
    /// The terminal's new size.
    Resize(u16, u16),
}

/// Selected row and first visible row of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Index of the selected row.
    pub selected: usize,
    /// Index of the first row drawn.
    pub offset: usize,
}

impl Cursor {
    /// Selects `index` (clamped) and scrolls it into a view of `height` rows.
    pub fn select(&mut self, index: usize, len: usize, height: usize) {
        self.selected = index.min(len.saturating_sub(1));
        let height = height.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(len.saturating_sub(height));
    }

    /// Moves the selection by `delta` rows.
    pub fn step(&mut self, delta: isize, len: usize, height: usize) {
        self.select(self.selected.saturating_add_signed(delta), len, height);
    }
}

/// Which layers the Layers screen lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFilter {
    /// Every layer.
    All,
    /// Layers whose status is not `unchanged` (two checkpoints).
    Changed,
    /// Layers with this status.
    Status(Status),
    /// Layers with any health flag.
    Flagged,
    /// Layers with this flag.
    Flag(Flag),
}

impl LayerFilter {
    /// Label in titles and the footer.
    pub fn label(self) -> String {
        match self {
            LayerFilter::All => "all".to_owned(),
            LayerFilter::Changed => "changed".to_owned(),
            LayerFilter::Status(s) => super::theme::status_label(s).to_owned(),
            LayerFilter::Flagged => "flagged".to_owned(),
            LayerFilter::Flag(f) => f.as_str().to_owned(),
        }
    }

    fn passes(self, r: &Reports, row: &LayerRow) -> bool {
        match self {
            LayerFilter::All => true,
            LayerFilter::Changed => r.status(row).is_some_and(|s| s != Status::Unchanged),
            LayerFilter::Status(s) => r.status(row) == Some(s),
            LayerFilter::Flagged => !r.flags(row).is_empty(),
            LayerFilter::Flag(f) => r.flags(row).contains(&f),
        }
    }
}

/// Which tensors the Tensors screen lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorFilter {
    /// Every tensor.
    All,
    /// Tensors that differ in any way (two checkpoints).
    Changed,
    /// Tensors with this change.
    Change(TensorChange),
    /// Tensors of BatchNorm layers.
    BatchNorm,
}

impl TensorFilter {
    /// Label in titles and the footer.
    pub fn label(self) -> String {
        match self {
            TensorFilter::All => "all".to_owned(),
            TensorFilter::Changed => "changed".to_owned(),
            TensorFilter::Change(c) => super::theme::change_label(c)
                .split_once(' ')
                .map_or("", |(_, l)| l)
                .to_owned(),
            TensorFilter::BatchNorm => "BatchNorm".to_owned(),
        }
    }

    fn passes(self, r: &Reports, row: &TensorRow) -> bool {
        match self {
            TensorFilter::All => true,
            TensorFilter::Changed => r.change(row).is_some_and(|c| c != TensorChange::Unchanged),
            TensorFilter::Change(c) => r.change(row) == Some(c),
            TensorFilter::BatchNorm => r
                .tensor_b(row)
                .or(r.tensor_a(row))
                .is_some_and(|t| t.bn_layer.is_some()),
        }
    }
}

/// A sub-tree of the module tree, with counts of what is under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Module path.
    pub path: String,
    /// What is shown: the path's last segments.
    pub label: String,
    /// Nesting depth.
    pub depth: usize,
    /// BatchNorm layers under it (after filtering).
    pub layers: usize,
    /// Statuses of those layers.
    pub statuses: BTreeMap<Status, usize>,
    /// Of which have health flags.
    pub flagged: usize,
    /// Whether its children are shown.
    pub expanded: bool,
}

/// One line of the Layers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A module of the tree.
    Group(GroupEntry),
    /// A BatchNorm layer.
    Layer {
        /// Index into [`App::layer_rows`].
        row: usize,
        /// Nesting depth (0 in the flat table).
        depth: usize,
        /// What is shown: the full name, or in the tree the last segments.
        label: String,
    },
}

impl Entry {
    /// Identity that survives re-sorting, to keep the selection in place.
    fn id<'a>(&'a self, rows: &'a [LayerRow]) -> (bool, &'a str) {
        match self {
            Entry::Group(g) => (true, &g.path),
            Entry::Layer { row, .. } => (false, &rows[*row].name),
        }
    }
}

/// State of the Layers screen.
#[derive(Debug, Clone)]
pub struct LayersView {
    /// Module tree instead of the flat table.
    pub tree: bool,
    /// Collapsed module paths.
    pub collapsed: BTreeSet<String>,
    /// Sort column.
    pub sort: LayerColumn,
    /// Sort direction.
    pub descending: bool,
    /// Status filter.
    pub filter: LayerFilter,
    /// Only layers under this module (from an Overview verdict).
    pub scope: Option<String>,
    /// Fuzzy search over names.
    pub query: String,
    /// The lines shown.
    pub entries: Vec<Entry>,
    /// Selection.
    pub cursor: Cursor,
}

/// State of the Tensors screen.
#[derive(Debug, Clone)]
pub struct TensorsView {
    /// Sort column.
    pub sort: TensorColumn,
    /// Sort direction.
    pub descending: bool,
    /// Change filter.
    pub filter: TensorFilter,
    /// Fuzzy search over names.
    pub query: String,
    /// Indices into [`App::tensor_rows`] of the lines shown.
    pub entries: Vec<usize>,
    /// Selection.
    pub cursor: Cursor,
}

/// State of the Detail screen.
#[derive(Debug, Clone, Default)]
pub struct DetailView {
    /// The layer shown (its aligned name).
    pub layer: Option<String>,
    /// Plot B − A instead of A and B.
    pub delta: bool,
    /// First plot shown when not all fit.
    pub plot_offset: usize,
}

/// The whole state of the UI.
pub struct App {
    /// What is presented.
    pub reports: Reports,
    /// Colours or not.
    pub theme: Theme,
    /// Screen shown.
    pub screen: Screen,
    /// Pane with the focus.
    pub focus: Pane,
    /// Key list shown over the screen.
    pub help: bool,
    /// Scroll of the key list.
    pub help_scroll: usize,
    /// Set when the user asked to quit.
    pub quit: bool,
    /// Terminal size.
    pub size: Rect,
    /// While typing a search: the query before typing started (restored on Esc).
    pub editing: Option<String>,
    /// Scroll of the side pane.
    pub side_scroll: usize,
    /// BatchNorm layers joined across A, B and the diff.
    pub layer_rows: Vec<LayerRow>,
    /// Tensors joined across A, B and the diff.
    pub tensor_rows: Vec<TensorRow>,
    /// Overview's list.
    pub groups: Vec<GroupRow>,
    /// Overview's selection.
    pub overview: Cursor,
    /// Layers screen.
    pub layers: LayersView,
    /// Tensors screen.
    pub tensors: TensorsView,
    /// Detail screen.
    pub detail: DetailView,
    /// The restore dialog, while open.
    pub restore: Option<Dialog>,
    /// Restore work for the runner to start.
    pub restore_request: Option<Request>,
}

impl App {
    /// A UI over `reports` in a terminal of `size`, on the Overview.
    pub fn new(reports: Reports, theme: Theme, size: Rect) -> App {
        let pair = reports.is_pair();
        let mut app = App {
            reports,
            theme,
            screen: Screen::Overview,
            focus: Pane::Main,
            help: false,
            help_scroll: 0,
            quit: false,
            size,
            editing: None,
            side_scroll: 0,
            layer_rows: Vec::new(),
            tensor_rows: Vec::new(),
            groups: Vec::new(),
            overview: Cursor::default(),
            layers: LayersView {
                tree: false,
                collapsed: BTreeSet::new(),
                // With two checkpoints the biggest drift comes first.
                sort: if pair {
                    LayerColumn::DeltaMean
                } else {
                    LayerColumn::Name
                },
                descending: pair,
                filter: LayerFilter::All,
                scope: None,
                query: String::new(),
                entries: Vec::new(),
                cursor: Cursor::default(),
            },
            tensors: TensorsView {
                sort: TensorColumn::Name,
                descending: false,
                filter: TensorFilter::All,
                query: String::new(),
                entries: Vec::new(),
                cursor: Cursor::default(),
            },
            detail: DetailView::default(),
            restore: None,
            restore_request: None,
        };
        app.rebuild();
        app
    }

    /// Whether two checkpoints are shown.
    pub fn pair(&self) -> bool {
        self.reports.is_pair()
    }

    /// Where the panes of the current screen are.
    pub fn areas(&self) -> Areas {
        layout::areas(self.size, self.screen, self.pair(), self.groups.len())
    }

    /// The background comparison advanced.
    pub fn on_progress(&mut self, progress: Progress) {
        if matches!(self.reports.diff, Job::Running(_)) {
            self.reports.diff = Job::Running(progress);
        }
    }

    /// The background comparison finished (or failed with a message).
    pub fn on_diff(&mut self, diff: Result<DiffReport, String>) {
        self.reports.diff = match diff {
            Ok(d) => Job::Ready(d),
            Err(e) => Job::Failed(e),
        };
        // Names may now be aligned differently: channel values are re-read on demand.
        self.reports.channels.clear();
        // Rows are now sorted by drift: unless the user is looking at the layers, start
        // from the top, the biggest drift.
        if !matches!(self.screen, Screen::Layers | Screen::Detail) {
            self.layers.cursor = Cursor::default();
            self.layers.entries.clear();
            self.detail.layer = None;
        }
        self.rebuild();
    }

    /// The explanation finished (or failed with a message).
    pub fn on_explain(&mut self, explain: Result<ExplainReport, String>) {
        self.reports.explain = match explain {
            Ok(e) => Job::Ready(e),
            Err(e) => Job::Failed(e),
        };
        self.rebuild();
    }

    /// Per-channel values of a layer were read (or failed to be).
    pub fn on_channels(&mut self, layer: String, channels: Result<LayerChannels, String>) {
        self.reports.channels.insert(layer, channels);
    }

    /// The layer Detail shows and whose channel values are not read yet.
    pub fn wanted_channels(&self) -> Option<&LayerRow> {
        if self.screen != Screen::Detail {
            return None;
        }
        let row = self.detail_row()?;
        (!self.reports.channels.contains_key(&row.name)).then_some(row)
    }

    /// The row of the layer Detail shows.
    pub fn detail_row(&self) -> Option<&LayerRow> {
        let name = self.detail.layer.as_deref()?;
        self.layer_rows.iter().find(|r| r.name == name)
    }

    /// The entry selected on the Layers screen.
    pub fn selected_entry(&self) -> Option<&Entry> {
        self.layers.entries.get(self.layers.cursor.selected)
    }

    /// The tensor selected on the Tensors screen.
    pub fn selected_tensor(&self) -> Option<&TensorRow> {
        let i = *self.tensors.entries.get(self.tensors.cursor.selected)?;
        self.tensor_rows.get(i)
    }

    /// The Overview row selected.
    pub fn selected_group(&self) -> Option<&GroupRow> {
        self.groups.get(self.overview.selected)
    }

    /// Rebuilds rows from the reports and re-applies sort, filters and search.
    fn rebuild(&mut self) {
        // Remember the selections by name: the entries index the rows being replaced, and
        // the diff may have aligned the names since.
        let r = &self.reports;
        let keep_layer = self
            .selected_layer_id()
            .map(|(group, name)| (group, r.realigned(&name)));
        let keep_tensor = self.selected_tensor().map(|t| r.realigned(&t.name));
        let keep_detail = self.detail.layer.as_deref().map(|name| r.realigned(name));
        self.layers.entries.clear();
        self.tensors.entries.clear();
        self.detail.layer = keep_detail;
        self.layer_rows = self.reports.layer_rows();
        self.tensor_rows = self.reports.tensor_rows();
        self.groups = self.reports.group_rows();
        let height = self.list_height(Screen::Overview);
        self.overview
            .select(self.overview.selected, self.groups.len(), height);
        self.refresh_layers_keeping(keep_layer);
        self.refresh_tensors_keeping(keep_tensor);
        if self.detail_row().is_none() {
            self.detail.layer = None;
        }
        if self.detail.layer.is_none() {
            self.follow_selection();
        }
    }

    /// Recomputes the Layers entries, keeping the selected entry selected.
    fn refresh_layers(&mut self) {
        self.refresh_layers_keeping(self.selected_layer_id());
    }

    /// Identity of the selected Layers entry: (is a module, name).
    fn selected_layer_id(&self) -> Option<(bool, String)> {
        self.selected_entry().map(|e| {
            let (g, name) = e.id(&self.layer_rows);
            (g, name.to_owned())
        })
    }

    /// Recomputes the Layers entries, selecting `keep` if it is still listed.
    fn refresh_layers_keeping(&mut self, keep: Option<(bool, String)>) {
        let mut fuzzy = Fuzzy::new(&self.layers.query);
        let r = &self.reports;
        let v = &self.layers;
        let mut rows: Vec<usize> = (0..self.layer_rows.len())
            .filter(|&i| {
                let row = &self.layer_rows[i];
                v.filter.passes(r, row)
                    && v.scope.as_deref().is_none_or(|s| in_scope(&row.name, s))
                    && fuzzy.matches(&row.name)
            })
            .collect();
        let keys: Vec<SortKey> = self
            .layer_rows
            .iter()
            .map(|row| v.sort.key(r, row))
            .collect();
        rows.sort_by(|&x, &y| {
            compare(&keys[x], &keys[y], v.descending)
                .then_with(|| natural(&self.layer_rows[x].name, &self.layer_rows[y].name))
        });
        let entries = if v.tree {
            tree_entries(&rows, &self.layer_rows, v, r)
        } else {
            rows.iter()
                .map(|&row| Entry::Layer {
                    row,
                    depth: 0,
                    label: self.layer_rows[row].name.clone(),
                })
                .collect()
        };
        self.layers.entries = entries;
        let index = keep
            .and_then(|(g, name)| {
                self.layers
                    .entries
                    .iter()
                    .position(|e| e.id(&self.layer_rows) == (g, name.as_str()))
            })
            .unwrap_or(0);
        let height = self.list_height(Screen::Layers);
        let len = self.layers.entries.len();
        self.layers.cursor.select(index, len, height);
    }

    /// Recomputes the Tensors entries, keeping the selected tensor selected.
    fn refresh_tensors(&mut self) {
        self.refresh_tensors_keeping(self.selected_tensor().map(|t| t.name.clone()));
    }

    /// Recomputes the Tensors entries, selecting the tensor named `keep` if it is listed.
    fn refresh_tensors_keeping(&mut self, keep: Option<String>) {
        let mut fuzzy = Fuzzy::new(&self.tensors.query);
        let r = &self.reports;
        let v = &self.tensors;
        let mut rows: Vec<usize> = (0..self.tensor_rows.len())
            .filter(|&i| {
                let row = &self.tensor_rows[i];
                v.filter.passes(r, row) && fuzzy.matches(&row.name)
            })
            .collect();
        let keys: Vec<SortKey> = self
            .tensor_rows
            .iter()
            .map(|row| v.sort.key(r, row))
            .collect();
        rows.sort_by(|&x, &y| {
            compare(&keys[x], &keys[y], v.descending)
                .then_with(|| natural(&self.tensor_rows[x].name, &self.tensor_rows[y].name))
        });
        let index = keep
            .and_then(|name| rows.iter().position(|&i| self.tensor_rows[i].name == name))
            .unwrap_or(0);
        self.tensors.entries = rows;
        let height = self.list_height(Screen::Tensors);
        let len = self.tensors.entries.len();
        self.tensors.cursor.select(index, len, height);
    }

    /// Rows of the main list visible on `screen` at the current size.
    pub fn list_height(&self, screen: Screen) -> usize {
        let areas = layout::areas(self.size, screen, self.pair(), self.groups.len());
        usize::from(layout::table_rows(areas.main).height)
    }

    /// The Detail screen follows the layer selected on the Layers screen.
    fn follow_selection(&mut self) {
        if let Some(Entry::Layer { row, .. }) = self.selected_entry() {
            let name = self.layer_rows[*row].name.clone();
            if self.detail.layer.as_deref() != Some(&name) {
                self.detail.layer = Some(name);
                self.detail.plot_offset = 0;
            }
        }
    }

    /// Whether keys are text: a search or the restore dialog's path.
    pub fn typing(&self) -> bool {
        self.editing.is_some() || self.restore.as_ref().is_some_and(Dialog::typing)
    }

    /// A background restore into `path` finished.
    pub fn on_restore(&mut self, path: &Path, result: Result<RestoreReport, String>) {
        if let Some(d) = &mut self.restore {
            d.finished(path, result);
        }
    }

    /// Opens the restore dialog where it applies: a pair's Layers or Detail screen.
    fn open_restore(&mut self) {
        let Some(b) = &self.reports.b else { return };
        if !matches!(self.screen, Screen::Layers | Screen::Detail) {
            return;
        }
        self.restore = Some(match self.reports.diff {
            Job::Ready(_) => Dialog::Path(default_path(Path::new(&b.checkpoint.path))),
            _ => Dialog::Done {
                lines: vec!["The comparison is not done yet; try again when it is.".to_owned()],
                failed: true,
            },
        });
    }

    fn apply_restore(&mut self, action: Action) {
        let key = match action {
            Action::Input(c) => Key::Char(c),
            Action::Erase => Key::Erase,
            Action::Accept | Action::Activate => Key::Confirm,
            Action::Back => Key::Cancel,
            Action::Quit => {
                self.quit = true;
                return;
            }
            Action::Resize(w, h) => return self.resize(w, h),
            _ => return,
        };
        let Some(dialog) = &mut self.restore else {
            return;
        };
        let (request, open) = dialog.key(key);
        if !open {
            self.restore = None;
        }
        if request.is_some() {
            self.restore_request = request;
        }
    }

    /// Applies one action.
    pub fn apply(&mut self, action: Action) {
        if self.restore.is_some() {
            self.apply_restore(action);
            return;
        }
        if self.help {
            self.apply_help(action);
            return;
        }
        if self.editing.is_some() {
            self.apply_editing(action);
            return;
        }
        match action {
            Action::Up => self.scroll(-1),
            Action::Down => self.scroll(1),
            Action::PageUp => self.scroll(-self.page()),
            Action::PageDown => self.scroll(self.page()),
            Action::Home => self.scroll(isize::MIN / 2),
            Action::End => self.scroll(isize::MAX / 2),
            Action::Left => self.left(),
            Action::Right => self.right(),
            Action::Activate => self.activate(),
            Action::NextPane => {
                self.focus = match self.focus {
                    Pane::Main => Pane::Side,
                    Pane::Side => Pane::Main,
                }
            }
            Action::Show(screen) => self.show(screen),
            Action::Search => {
                if !matches!(self.screen, Screen::Layers | Screen::Tensors) {
                    self.show(Screen::Layers);
                }
                self.focus = Pane::Main;
                self.editing = Some(self.query().to_owned());
            }
            Action::Input(_) | Action::Erase | Action::Accept => {}
            Action::Sort => self.cycle_sort(),
            Action::Reverse => match self.screen {
                Screen::Layers => {
                    self.layers.descending = !self.layers.descending;
                    self.refresh_layers();
                }
                Screen::Tensors => {
                    self.tensors.descending = !self.tensors.descending;
                    self.refresh_tensors();
                }
                _ => {}
            },
            Action::Filter => self.cycle_filter(),
            Action::Tree => {
                if self.screen == Screen::Layers {
                    self.layers.tree = !self.layers.tree;
                    self.refresh_layers();
                }
            }
            Action::Delta => {
                if self.pair() {
                    self.detail.delta = !self.detail.delta;
                }
            }
            Action::Help => {
                self.help = true;
                self.help_scroll = 0;
            }
            Action::Restore => self.open_restore(),
            Action::Back => self.back(),
            Action::Quit => self.quit = true,
            Action::Wheel { up, column, row } => self.wheel(up, column, row),
            Action::Click { column, row } => self.click(column, row),
            Action::Resize(w, h) => self.resize(w, h),
        }
    }

    fn apply_help(&mut self, action: Action) {
        match action {
            Action::Help | Action::Back | Action::Quit | Action::Click { .. } => self.help = false,
            Action::Up | Action::Wheel { up: true, .. } => {
                self.help_scroll = self.help_scroll.saturating_sub(1)
            }
            Action::Down | Action::Wheel { up: false, .. } => {
                self.help_scroll = (self.help_scroll + 1).min(view::help::max_scroll(self))
            }
            Action::Resize(w, h) => self.resize(w, h),
            _ => {}
        }
    }

    fn apply_editing(&mut self, action: Action) {
        match action {
            Action::Input(c) => {
                self.query_mut().push(c);
                self.refresh_query();
            }
            Action::Erase => {
                self.query_mut().pop();
                self.refresh_query();
            }
            Action::Accept => self.editing = None,
            Action::Back => {
                let before = self.editing.take().unwrap_or_default();
                *self.query_mut() = before;
                self.refresh_query();
            }
            Action::Up | Action::Down | Action::PageUp | Action::PageDown => {
                // Moving while typing keeps the query and moves through the matches.
                self.editing = None;
                self.apply(action);
            }
            Action::Resize(w, h) => self.resize(w, h),
            _ => {}
        }
    }

    /// The search query of the current list screen.
    pub fn query(&self) -> &str {
        match self.screen {
            Screen::Tensors => &self.tensors.query,
            _ => &self.layers.query,
        }
    }

    fn query_mut(&mut self) -> &mut String {
        match self.screen {
            Screen::Tensors => &mut self.tensors.query,
            _ => &mut self.layers.query,
        }
    }

    fn refresh_query(&mut self) {
        match self.screen {
            Screen::Tensors => self.refresh_tensors(),
            _ => {
                self.refresh_layers();
                self.follow_selection();
            }
        }
    }

    fn show(&mut self, screen: Screen) {
        if screen != self.screen {
            self.screen = screen;
            self.focus = Pane::Main;
            self.side_scroll = 0;
        }
    }

    fn page(&self) -> isize {
        let areas = self.areas();
        let rows = match self.focus {
            Pane::Main => layout::table_rows(areas.main).height,
            Pane::Side => layout::inner(areas.side).height,
        };
        rows.max(2) as isize - 1
    }

    /// Moves the selection of the focused list, or scrolls the focused text.
    fn scroll(&mut self, delta: isize) {
        if self.focus == Pane::Side {
            let max = self.side_max_scroll();
            self.side_scroll = self.side_scroll.saturating_add_signed(delta).min(max);
            return;
        }
        let height = self.list_height(self.screen);
        match self.screen {
            Screen::Overview => {
                let before = self.overview.selected;
                self.overview.step(delta, self.groups.len(), height);
                if before != self.overview.selected {
                    self.side_scroll = 0;
                }
            }
            Screen::Layers => {
                let before = self.layers.cursor.selected;
                let len = self.layers.entries.len();
                self.layers.cursor.step(delta, len, height);
                if before != self.layers.cursor.selected {
                    self.side_scroll = 0;
                    self.follow_selection();
                }
            }
            Screen::Tensors => {
                let before = self.tensors.cursor.selected;
                let len = self.tensors.entries.len();
                self.tensors.cursor.step(delta, len, height);
                if before != self.tensors.cursor.selected {
                    self.side_scroll = 0;
                }
            }
            Screen::Detail => {
                let max = detail::max_plot_offset(self);
                self.detail.plot_offset = self
                    .detail
                    .plot_offset
                    .saturating_add_signed(delta)
                    .min(max);
            }
        }
    }

    fn side_max_scroll(&self) -> usize {
        let side = layout::inner(self.areas().side);
        view::side_lines(self, side.width)
            .len()
            .saturating_sub(usize::from(side.height))
    }

    fn left(&mut self) {
        match self.screen {
            Screen::Layers if self.layers.tree => match self.selected_entry().cloned() {
                Some(Entry::Group(g)) if g.expanded => {
                    self.layers.collapsed.insert(g.path);
                    self.refresh_layers();
                }
                Some(entry) => self.select_parent(&entry),
                None => {}
            },
            Screen::Detail => self.step_layer(-1),
            _ => {}
        }
    }

    fn right(&mut self) {
        match self.screen {
            Screen::Layers if self.layers.tree => match self.selected_entry().cloned() {
                Some(Entry::Group(g)) if !g.expanded => {
                    self.layers.collapsed.remove(&g.path);
                    self.refresh_layers();
                }
                Some(Entry::Group(_)) => self.scroll(1),
                _ => {}
            },
            Screen::Detail => self.step_layer(1),
            _ => {}
        }
    }

    /// Selects the group that holds `entry`.
    fn select_parent(&mut self, entry: &Entry) {
        let depth = match entry {
            Entry::Group(g) => g.depth,
            Entry::Layer { depth, .. } => *depth,
        };
        let here = self.layers.cursor.selected;
        let parent = self.layers.entries[..here]
            .iter()
            .rposition(|e| matches!(e, Entry::Group(g) if g.depth < depth));
        if let Some(i) = parent {
            let height = self.list_height(Screen::Layers);
            let len = self.layers.entries.len();
            self.layers.cursor.select(i, len, height);
        }
    }

    /// Shows the previous or next layer of the Layers list in Detail.
    fn step_layer(&mut self, delta: isize) {
        let layers: Vec<usize> = self
            .layers
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Entry::Layer { .. }))
            .map(|(i, _)| i)
            .collect();
        let here = self.layers.cursor.selected;
        let pos = layers.iter().position(|&i| i == here);
        let target = match (pos, delta < 0) {
            (Some(p), true) => p.checked_sub(1),
            (Some(p), false) => Some(p + 1),
            (None, true) => layers.iter().rposition(|&i| i < here),
            (None, false) => layers.iter().position(|&i| i > here),
        };
        if let Some(&i) = target.and_then(|t| layers.get(t)) {
            let height = self.list_height(Screen::Layers);
            let len = self.layers.entries.len();
            self.layers.cursor.select(i, len, height);
            self.side_scroll = 0;
            self.follow_selection();
        }
    }

    fn activate(&mut self) {
        match self.screen {
            Screen::Overview => {
                let Some(prefix) = self
                    .selected_group()
                    .map(|g| g.prefix(&self.reports).to_owned())
                else {
                    return;
                };
                self.layers.scope = Some(prefix);
                self.layers.filter = LayerFilter::All;
                self.layers.query.clear();
                self.layers.cursor = Cursor::default();
                self.refresh_layers();
                self.show(Screen::Layers);
                self.follow_selection();
            }
            Screen::Layers => match self.selected_entry().cloned() {
                Some(Entry::Group(g)) => {
                    if g.expanded {
                        self.layers.collapsed.insert(g.path);
                    } else {
                        self.layers.collapsed.remove(&g.path);
                    }
                    self.refresh_layers();
                }
                Some(Entry::Layer { .. }) => {
                    self.follow_selection();
                    self.show(Screen::Detail);
                }
                None => {}
            },
            Screen::Tensors => {
                let layer = self.selected_tensor().and_then(|t| {
                    let entry = self.reports.tensor_b(t).or(self.reports.tensor_a(t))?;
                    entry.bn_layer.clone()
                });
                if let Some(layer) = layer {
                    self.open_layer(&layer);
                }
            }
            Screen::Detail => {}
        }
    }

    /// Shows the layer whose ls name (in A or B) is `name` in Detail, selecting it in Layers.
    fn open_layer(&mut self, name: &str) {
        let Some(row) = self.layer_rows.iter().position(|r| {
            self.reports.layer_a(r).is_some_and(|l| l.name == name)
                || self.reports.layer_b(r).is_some_and(|l| l.name == name)
        }) else {
            return;
        };
        let find = |entries: &[Entry]| {
            entries
                .iter()
                .position(|e| matches!(e, Entry::Layer { row: r, .. } if *r == row))
        };
        if find(&self.layers.entries).is_none() {
            // Hidden by a filter, search or collapsed group: show everything.
            self.layers.filter = LayerFilter::All;
            self.layers.scope = None;
            self.layers.query.clear();
            self.layers.collapsed.clear();
            self.refresh_layers();
        }
        if let Some(i) = find(&self.layers.entries) {
            let height = self.list_height(Screen::Layers);
            let len = self.layers.entries.len();
            self.layers.cursor.select(i, len, height);
        }
        self.follow_selection();
        self.show(Screen::Detail);
    }

    fn cycle_sort(&mut self) {
        let pair = self.pair();
        match self.screen {
            Screen::Layers => {
                let cols = LayerColumn::all(pair);
                let next = next_after(cols, self.layers.sort);
                self.layers.sort = next;
                self.layers.descending = next.numeric();
                self.refresh_layers();
            }
            Screen::Tensors => {
                let cols = TensorColumn::all(pair);
                let next = next_after(cols, self.tensors.sort);
                self.tensors.sort = next;
                self.tensors.descending = next.numeric() || next == TensorColumn::Change;
                self.refresh_tensors();
            }
            _ => {}
        }
    }

    /// The filters the Layers screen offers for what is loaded.
    pub fn layer_filters(&self) -> Vec<LayerFilter> {
        let mut out = vec![LayerFilter::All];
        let r = &self.reports;
        if let Some(d) = r.diff() {
            out.push(LayerFilter::Changed);
            let mut present: Vec<Status> = d.summary.statuses.keys().copied().collect();
            present.sort_by_key(|&s| std::cmp::Reverse(status_rank(s)));
            out.extend(present.into_iter().map(LayerFilter::Status));
        }
        let flags: BTreeSet<Flag> = self
            .layer_rows
            .iter()
            .flat_map(|row| r.flags(row))
            .collect();
        if !flags.is_empty() {
            out.push(LayerFilter::Flagged);
            out.extend(flags.into_iter().map(LayerFilter::Flag));
        }
        out
    }

    /// The filters the Tensors screen offers for what is loaded.
    pub fn tensor_filters(&self) -> Vec<TensorFilter> {
        let mut out = vec![TensorFilter::All];
        if let Some(d) = self.reports.diff() {
            out.push(TensorFilter::Changed);
            out.extend(
                d.summary
                    .tensor_changes
                    .keys()
                    .map(|&c| TensorFilter::Change(c)),
            );
        }
        out.push(TensorFilter::BatchNorm);
        out
    }

    fn cycle_filter(&mut self) {
        match self.screen {
            Screen::Layers => {
                self.layers.filter = next_after(&self.layer_filters(), self.layers.filter);
                self.refresh_layers();
                self.follow_selection();
            }
            Screen::Tensors => {
                self.tensors.filter = next_after(&self.tensor_filters(), self.tensors.filter);
                self.refresh_tensors();
            }
            _ => {}
        }
    }

    fn back(&mut self) {
        match self.screen {
            Screen::Layers
                if !self.layers.query.is_empty()
                    || self.layers.scope.is_some()
                    || self.layers.filter != LayerFilter::All =>
            {
                self.layers.query.clear();
                self.layers.scope = None;
                self.layers.filter = LayerFilter::All;
                self.refresh_layers();
            }
            Screen::Tensors
                if !self.tensors.query.is_empty() || self.tensors.filter != TensorFilter::All =>
            {
                self.tensors.query.clear();
                self.tensors.filter = TensorFilter::All;
                self.refresh_tensors();
            }
            Screen::Detail => self.show(Screen::Layers),
            // Only q and Ctrl-C quit: a second Esc after clearing a search must not lose
            // the session.
            _ => {}
        }
    }

    fn wheel(&mut self, up: bool, column: u16, row: u16) {
        let areas = self.areas();
        let pane = if layout::contains(areas.side, column, row) {
            Pane::Side
        } else {
            Pane::Main
        };
        let focus = std::mem::replace(&mut self.focus, pane);
        let step = if self.screen == Screen::Detail && pane == Pane::Main {
            1
        } else {
            3
        };
        self.scroll(if up { -step } else { step });
        self.focus = focus;
    }

    fn click(&mut self, column: u16, row: u16) {
        let areas = self.areas();
        if layout::contains(areas.tabs, column, row) {
            if let Some((screen, _, _)) = layout::tabs()
                .into_iter()
                .find(|(_, _, span)| span.contains(&column))
            {
                self.show(screen);
            }
            return;
        }
        if layout::contains(areas.side, column, row) {
            self.focus = Pane::Side;
            return;
        }
        if !layout::contains(areas.main, column, row) {
            return;
        }
        self.focus = Pane::Main;
        let rows = layout::table_rows(areas.main);
        if !layout::contains(rows, column, row) {
            return;
        }
        let line = usize::from(row - rows.y);
        let height = usize::from(rows.height);
        let (cursor, len) = match self.screen {
            Screen::Overview => (&mut self.overview, self.groups.len()),
            Screen::Layers => (&mut self.layers.cursor, self.layers.entries.len()),
            Screen::Tensors => (&mut self.tensors.cursor, self.tensors.entries.len()),
            Screen::Detail => return,
        };
        let index = cursor.offset + line;
        if index >= len {
            return;
        }
        if index == cursor.selected {
            // A click on the selected row opens it, like Enter.
            self.activate();
            return;
        }
        cursor.select(index, len, height);
        self.side_scroll = 0;
        if self.screen == Screen::Layers {
            self.follow_selection();
        }
    }

    fn resize(&mut self, width: u16, height: u16) {
        self.size = Rect::new(0, 0, width, height);
        let h = self.list_height(Screen::Overview);
        self.overview
            .select(self.overview.selected, self.groups.len(), h);
        let h = self.list_height(Screen::Layers);
        let len = self.layers.entries.len();
        self.layers
            .cursor
            .select(self.layers.cursor.selected, len, h);
        let h = self.list_height(Screen::Tensors);
        let len = self.tensors.entries.len();
        self.tensors
            .cursor
            .select(self.tensors.cursor.selected, len, h);
        self.side_scroll = self.side_scroll.min(self.side_max_scroll());
        self.detail.plot_offset = self.detail.plot_offset.min(detail::max_plot_offset(self));
        self.help_scroll = self.help_scroll.min(view::help::max_scroll(self));
    }
}

/// The item after `current` in `items`, wrapping around.
fn next_after<T: Copy + PartialEq>(items: &[T], current: T) -> T {
    let i = items
        .iter()
        .position(|&x| x == current)
        .map_or(0, |i| i + 1);
    items[i % items.len()]
}

/// Whether `name` is inside one of the modules a verdict names (`bn1, layer1`: modules
/// that behaved alike share one verdict).
pub fn in_scope(name: &str, scope: &str) -> bool {
    scope.split(", ").any(|m| in_module(name, m))
}

/// Whether module `name` is `module` or inside it.
pub fn in_module(name: &str, module: &str) -> bool {
    name.strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '/']))
}

/// A node of the module tree while it is built.
#[derive(Default)]
struct Node {
    path: String,
    label: String,
    children: Vec<Node>,
    layer: Option<usize>,
}

impl Node {
    fn child(&mut self, segment: &str, path: &str) -> &mut Node {
        let i = match self.children.iter().position(|c| c.label == segment) {
            Some(i) => i,
            None => {
                self.children.push(Node {
                    path: path.to_owned(),
                    label: segment.to_owned(),
                    ..Node::default()
                });
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }

    /// Merges chains of single-child modules (`backbone.0` holding only `1`) into one line,
    /// below the top level: sub-models always keep their own line and counts.
    fn compress(&mut self, top: bool) {
        for c in &mut self.children {
            c.compress(false);
            while !top && c.layer.is_none() && c.children.len() == 1 {
                let only = c.children.remove(0);
                c.label = format!("{}.{}", c.label, only.label);
                c.path = only.path;
                c.layer = only.layer;
                c.children = only.children;
            }
        }
    }
}

/// The Layers entries of the module tree over `rows` (already filtered and sorted).
fn tree_entries(
    rows: &[usize],
    all: &[LayerRow],
    view: &LayersView,
    reports: &Reports,
) -> Vec<Entry> {
    let mut root = Node::default();
    // Insertion order follows the sort: a module appears where its first (best) layer is.
    for &i in rows {
        let name = &all[i].name;
        let mut node = &mut root;
        let mut end = 0;
        for segment in name.split(['.', '/']) {
            end += segment.len();
            node = node.child(segment, &name[..end]);
            end += 1;
        }
        node.layer = Some(i);
    }
    root.compress(true);
    let mut out = Vec::new();
    for child in &root.children {
        flatten(child, 0, all, view, reports, &mut out);
    }
    out
}

/// Appends `node` and, unless collapsed, what is under it.
fn flatten(
    node: &Node,
    depth: usize,
    all: &[LayerRow],
    view: &LayersView,
    reports: &Reports,
    out: &mut Vec<Entry>,
) {
    if node.children.is_empty() {
        if let Some(row) = node.layer {
            out.push(Entry::Layer {
                row,
                depth,
                label: node.label.clone(),
            });
        }
        return;
    }
    let mut group = GroupEntry {
        path: node.path.clone(),
        label: node.label.clone(),
        depth,
        layers: 0,
        statuses: BTreeMap::new(),
        flagged: 0,
        expanded: !view.collapsed.contains(&node.path),
    };
    count(node, all, reports, &mut group);
    let expanded = group.expanded;
    out.push(Entry::Group(group));
    if !expanded {
        return;
    }
    if let Some(row) = node.layer {
        out.push(Entry::Layer {
            row,
            depth: depth + 1,
            label: node.label.clone(),
        });
    }
    for child in &node.children {
        flatten(child, depth + 1, all, view, reports, out);
    }
}

/// Adds the layers under `node` to the group's counts.
fn count(node: &Node, all: &[LayerRow], reports: &Reports, group: &mut GroupEntry) {
    if let Some(i) = node.layer {
        let row = &all[i];
        group.layers += 1;
        if let Some(s) = reports.status(row) {
            *group.statuses.entry(s).or_insert(0) += 1;
        }
        group.flagged += usize::from(!reports.flags(row).is_empty());
    }
    for c in &node.children {
        count(c, all, reports, group);
    }
}
