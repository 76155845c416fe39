//! Every screen at 80×24 and 120×40, on the demo pair and on one checkpoint.

use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;

use super::harness::{EXPLAIN_A, EXPLAIN_ACTS, EXPLAIN_B, Harness, ZOO};
use bnaudit::tui::model::Progress;

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

#[test]
fn pair_screens() {
    for (w, h) in SIZES {
        let mut ui = Harness::pair(w, h);
        insta::assert_snapshot!(format!("pair_overview_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('2'));
        insta::assert_snapshot!(format!("pair_layers_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('t'));
        insta::assert_snapshot!(format!("pair_layers_tree_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('t'));
        ui.key(KeyCode::Char('/'));
        ui.type_str("l2bn");
        insta::assert_snapshot!(format!("pair_layers_search_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Esc);
        ui.key(KeyCode::Enter);
        insta::assert_snapshot!(format!("pair_detail_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('d'));
        insta::assert_snapshot!(format!("pair_detail_delta_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('4'));
        insta::assert_snapshot!(format!("pair_tensors_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('?'));
        insta::assert_snapshot!(format!("pair_help_{w}x{h}"), ui.screen());
    }
}

#[test]
fn detail_with_captured_activations() {
    for (w, h) in SIZES {
        let mut ui = Harness::explained(EXPLAIN_A, EXPLAIN_B, Some(EXPLAIN_ACTS), w, h);
        ui.key(KeyCode::Char('2'));
        ui.key(KeyCode::Enter);
        insta::assert_snapshot!(format!("activations_detail_{w}x{h}"), ui.screen());
        // The facts pane scrolls to the modes table.
        ui.key(KeyCode::Tab);
        ui.key(KeyCode::PageDown);
        insta::assert_snapshot!(format!("activations_detail_scrolled_{w}x{h}"), ui.screen());
    }
}

#[test]
fn pair_while_comparing() {
    let mut ui = Harness::pending(80, 24);
    ui.app.on_progress(Progress {
        done: 2_000_000,
        total: 5_000_000,
    });
    insta::assert_snapshot!("pending_overview_80x24", ui.screen());
    ui.key(KeyCode::Char('2'));
    insta::assert_snapshot!("pending_layers_80x24", ui.screen());
}

#[test]
fn single_screens() {
    for (w, h) in SIZES {
        let mut ui = Harness::single(ZOO, w, h);
        insta::assert_snapshot!(format!("single_overview_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('2'));
        insta::assert_snapshot!(format!("single_layers_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('t'));
        insta::assert_snapshot!(format!("single_layers_tree_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('t'));
        // A layer with health flags: filter to flagged, open the first.
        ui.key(KeyCode::Char('f'));
        ui.key(KeyCode::Enter);
        insta::assert_snapshot!(format!("single_detail_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('4'));
        insta::assert_snapshot!(format!("single_tensors_{w}x{h}"), ui.screen());
        ui.key(KeyCode::Char('?'));
        insta::assert_snapshot!(format!("single_help_{w}x{h}"), ui.screen());
    }
}

#[test]
fn too_small_a_terminal_says_so() {
    let ui = Harness::pair(30, 8);
    assert!(ui.screen().contains("Terminal too small"));
}

/// Colour marks severity; without colour nothing is coloured and the symbols remain.
#[test]
fn colour_follows_severity_and_monochrome_keeps_symbols() {
    let mut ui = Harness::pair(120, 40);
    ui.key(KeyCode::Char('2'));
    let fg_of_row_with = |buffer: &ratatui::buffer::Buffer, needle: &str| {
        let width = usize::from(buffer.area.width);
        let rows: Vec<String> = buffer
            .content
            .chunks(width)
            .map(|r| r.iter().map(|c| c.symbol()).collect())
            .collect();
        let y = rows
            .iter()
            .position(|r| r.contains(needle))
            .expect("row shown");
        let x = rows[y]
            .find(needle)
            .map(|b| rows[y][..b].chars().count())
            .unwrap_or(0);
        buffer.content[y * width + x].fg
    };
    let mono = ui.buffer();
    assert!(mono.content.iter().all(|c| c.fg == Color::Reset));
    let text = ui.screen();
    assert!(text.contains("✗ frozen drift") && text.contains("● trained"));

    ui.app.theme.color = true;
    let colour = ui.buffer();
    assert_eq!(fg_of_row_with(&colour, "✗ frozen drift"), Color::Red);
    assert_eq!(fg_of_row_with(&colour, "● trained"), Color::Cyan);
}
