//! A UI without a terminal: the real session and state, driven by key events, drawn into
//! ratatui's TestBackend.

use bnaudit::audit::{DiffOptions, ExplainOptions, diff, explain};
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use bnaudit::tui::{App, Session, Theme, events, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;

/// The demo pair (relative paths, so snapshots do not depend on the checkout's location).
pub const PRETRAINED: &str = "assets/demo/pretrained.safetensors";
/// The fine-tune with the frozen backbone left in train mode.
pub const FINETUNED: &str = "assets/demo/finetuned.safetensors";
/// A single checkpoint with layers of every kind and health flags.
pub const ZOO: &str = "tests/fixtures/ls/torch_zoo.safetensors";
/// A pair recorded by PyTorch around three captured train-mode forwards.
pub const EXPLAIN_A: &str = "tests/fixtures/explain/a.safetensors";
/// B of that pair.
pub const EXPLAIN_B: &str = "tests/fixtures/explain/b.safetensors";
/// The capture plugin's activation file of those forwards.
pub const EXPLAIN_ACTS: &str = "tests/fixtures/explain/train.safetensors";

/// A UI over real checkpoints.
pub struct Harness {
    session: Session,
    /// The state under test.
    pub app: App,
}

fn open(path: &str) -> Checkpoint {
    Checkpoint::open(path, ReadMode::Mmap).expect("test checkpoint opens")
}

impl Harness {
    /// The demo pair with its diff and explanation done, in a `width`×`height` terminal.
    pub fn pair(width: u16, height: u16) -> Harness {
        Harness::explained(PRETRAINED, FINETUNED, None, width, height)
    }

    /// A pair (and an activation file) with the background work done as the runner's
    /// worker does it: the diff, then explain.
    pub fn explained(
        a: &str,
        b: &str,
        activations: Option<&str>,
        width: u16,
        height: u16,
    ) -> Harness {
        let session = Session::new(open(a), Some(open(b)), activations.map(open));
        let mut h = Harness::new(session, width, height);
        let (a, b) = (
            &h.session.a.checkpoint,
            &h.session.b.as_ref().expect("pair").checkpoint,
        );
        let report = diff(a, b, &DiffOptions::default(), None).map_err(|e| e.to_string());
        let acts = h.session.activations.as_deref();
        let explained = explain(a, b, acts, &ExplainOptions::default()).map_err(|e| e.to_string());
        h.app.on_diff(report);
        h.app.on_explain(explained);
        h.fulfil();
        h
    }

    /// The demo pair while the comparison still runs.
    pub fn pending(width: u16, height: u16) -> Harness {
        Harness::pending_pair(PRETRAINED, FINETUNED, width, height)
    }

    /// A pair while the comparison still runs.
    pub fn pending_pair(a: &str, b: &str, width: u16, height: u16) -> Harness {
        Harness::new(Session::new(open(a), Some(open(b)), None), width, height)
    }

    /// Delivers the diff, as the background worker does when it finishes.
    pub fn finish_diff(&mut self) {
        let (a, b) = (
            &self.session.a.checkpoint,
            &self.session.b.as_ref().expect("pair").checkpoint,
        );
        let report = diff(a, b, &DiffOptions::default(), None).map_err(|e| e.to_string());
        self.app.on_diff(report);
        self.fulfil();
    }

    /// One checkpoint.
    pub fn single(path: &str, width: u16, height: u16) -> Harness {
        Harness::new(Session::new(open(path), None, None), width, height)
    }

    fn new(session: Session, width: u16, height: u16) -> Harness {
        let reports = session.reports().expect("ls of a test checkpoint");
        let app = App::new(
            reports,
            Theme { color: false },
            Rect::new(0, 0, width, height),
        );
        let mut h = Harness { session, app };
        h.fulfil();
        h
    }

    /// Does what the runner does between frames: reads the channel values Detail wants, and
    /// runs the restore dialog's work (waiting for it).
    fn fulfil(&mut self) {
        if let Some(request) = self.app.restore_request.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            bnaudit::tui::jobs::restore(&self.session, request, DiffOptions::default(), tx)
                .expect("thread starts");
            let (path, result) = rx.recv().expect("the restore job answers");
            self.app.on_restore(&path, result);
        }
        if let Some(row) = self.app.wanted_channels() {
            let name = row.name.clone();
            let channels = self.session.channels(row).map_err(|e| e.to_string());
            self.app.on_channels(name, channels);
        }
    }

    /// Sends one terminal event through the key map to the state.
    pub fn event(&mut self, event: Event) {
        if let Some(action) = events::action(&event, self.app.typing()) {
            self.app.apply(action);
        }
        self.fulfil();
    }

    /// Presses a key.
    pub fn key(&mut self, code: KeyCode) {
        self.event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    /// Types each character as a key press.
    pub fn type_str(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn draw(&self) -> Terminal<TestBackend> {
        let size = self.app.size;
        let mut terminal =
            Terminal::new(TestBackend::new(size.width, size.height)).expect("test terminal");
        terminal
            .draw(|frame| view::render(frame, &self.app))
            .expect("draw");
        terminal
    }

    /// Draws a frame and returns it as text, one quoted line per terminal row.
    pub fn screen(&self) -> String {
        self.draw().backend().to_string()
    }

    /// Draws a frame and returns the buffer, for style checks.
    pub fn buffer(&self) -> ratatui::buffer::Buffer {
        self.draw().backend().buffer().clone()
    }

    /// Name of the layer Detail shows.
    pub fn detail_layer(&self) -> Option<&str> {
        self.app.detail.layer.as_deref()
    }
}
