//! Names from a checkpoint reach the screen escaped as the text reports show them: no
//! control character, bidirectional override or zero-width character is drawn, on any
//! screen of a pair or of one checkpoint.

use std::path::Path;

use ratatui::buffer::Buffer;
use ratatui::crossterm::event::KeyCode;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::harness::Harness;
use super::writer::SafetensorsWriter;

/// A sub-model whose name reads backwards from U+202E on, with an invisible space.
const SUBMODEL: &str = "evil\u{202e}lanif\u{200b}";
/// A layer in it with a zero-width joiner, and one that would clear the screen.
const LAYERS: [&str; 2] = ["b\u{200d}n1", "bn\u{1b}[2J"];

/// Each layer's statistics drifted in B; metadata with a byte-order mark and an isolate.
fn write_pair(dir: &Path) -> [String; 2] {
    ["a.safetensors", "b.safetensors"]
        .into_iter()
        .enumerate()
        .map(|(side, name)| {
            let mut w = SafetensorsWriter::default();
            for layer in LAYERS {
                let layer = format!("{SUBMODEL}.{layer}");
                w.bn_layer(&layer, side as f32 * 0.5, 10 + side as i64);
            }
            w.metadata(serde_json::json!({"no\u{feff}te": "x\u{2066}y"}));
            let path = dir.join(name);
            w.write(&path);
            path.to_str().expect("UTF-8").to_owned()
        })
        .collect::<Vec<_>>()
        .try_into()
        .expect("two paths")
}

/// Characters that must never be drawn: controls, format characters, line and paragraph
/// separators.
fn invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

fn assert_drawn_escaped(what: &str, buffer: &Buffer, screen: &str) {
    let raw: Vec<char> = buffer
        .content()
        .iter()
        .flat_map(|cell| cell.symbol().chars())
        .filter(|&c| invisible(c))
        .collect();
    assert!(raw.is_empty(), "{what}: {raw:?} drawn raw:\n{screen}");
}

/// Overview, Layers (list and tree), Detail and Tensors, each checked; `shows` must appear
/// on at least one of them.
fn every_screen(ui: &mut Harness, what: &str, shows: &[&str]) {
    let mut seen = String::new();
    let mut check = |ui: &Harness, screen: &str| {
        let text = ui.screen();
        assert_drawn_escaped(&format!("{what} {screen}"), &ui.buffer(), &text);
        seen.push_str(&text);
    };
    check(ui, "overview");
    ui.key(KeyCode::Char('2'));
    check(ui, "layers");
    ui.key(KeyCode::Char('t'));
    check(ui, "layers tree");
    ui.key(KeyCode::Char('t'));
    ui.key(KeyCode::Enter);
    check(ui, "detail");
    ui.key(KeyCode::Char('4'));
    check(ui, "tensors");
    for text in shows {
        assert!(seen.contains(text), "{what}: {text:?} is shown:\n{seen}");
    }
}

#[test]
fn names_are_drawn_escaped_on_every_screen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [a, b] = write_pair(dir.path());
    let mut pair = Harness::explained(&a, &b, None, 160, 40);
    every_screen(
        &mut pair,
        "pair",
        &[r"evil\u{202e}lanif\u{200b}", r"b\u{200d}n1", r"bn\e[2J"],
    );
    let mut single = Harness::single(&a, 160, 40);
    every_screen(
        &mut single,
        "single",
        &[r"evil\u{202e}lanif\u{200b}", r"no\u{feff}te: x\u{2066}y"],
    );
}
