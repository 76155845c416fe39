//! Key sequences on the state: navigation, search, sort, filter, screens, help, quit, mouse.

use bnaudit::audit::diff::Status;
use bnaudit::tui::Screen;
use bnaudit::tui::state::{Entry, LayerFilter, Pane};
use ratatui::crossterm::event::{Event, KeyCode, MouseEvent, MouseEventKind};
use ratatui::crossterm::event::{KeyModifiers, MouseButton};

use super::harness::{FINETUNED, Harness, PRETRAINED, ZOO};

/// Names of the layers listed, in order.
fn listed(ui: &Harness) -> Vec<String> {
    ui.app
        .layers
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Layer { row, .. } => Some(ui.app.layer_rows[*row].name.clone()),
            Entry::Group(_) => None,
        })
        .collect()
}

/// The diff's numbers for a layer, from the report itself.
fn max_diffs(ui: &Harness, name: &str) -> (f64, f64) {
    let d = ui.app.reports.diff().expect("diff done");
    let l = d
        .layers
        .iter()
        .find(|l| l.name == name)
        .expect("layer in diff");
    (
        l.max_abs_diff.running_mean.unwrap_or(0.0),
        l.max_abs_diff.running_var.unwrap_or(0.0),
    )
}

#[test]
fn layers_start_with_the_biggest_drift_and_detail_follows() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('2'));
    assert_eq!(ui.app.screen, Screen::Layers);
    let names = listed(&ui);
    assert_eq!(names.len(), 21);
    let dmean: Vec<f64> = names.iter().map(|n| max_diffs(&ui, n).0).collect();
    assert!(
        dmean.windows(2).all(|w| w[0] >= w[1]),
        "sorted by |Δmean| descending"
    );
    assert_eq!(ui.detail_layer(), Some(names[0].as_str()));

    ui.key(KeyCode::Char('j'));
    ui.key(KeyCode::Down);
    assert_eq!(ui.app.layers.cursor.selected, 2);
    assert_eq!(ui.detail_layer(), Some(names[2].as_str()));
    ui.key(KeyCode::Char('k'));
    assert_eq!(ui.app.layers.cursor.selected, 1);
    ui.key(KeyCode::End);
    assert_eq!(ui.app.layers.cursor.selected, 20);
    ui.key(KeyCode::Char('g'));
    assert_eq!(ui.app.layers.cursor.selected, 0);
    ui.key(KeyCode::PageDown);
    let page = ui.app.layers.cursor.selected;
    assert!(page > 1 && page < 20, "a page is more than a row: {page}");
    ui.key(KeyCode::PageUp);
    assert_eq!(ui.app.layers.cursor.selected, 0);

    // Enter opens Detail; ←/→ step through the list; Esc goes back.
    ui.key(KeyCode::Enter);
    assert_eq!(ui.app.screen, Screen::Detail);
    ui.key(KeyCode::Right);
    assert_eq!(ui.detail_layer(), Some(names[1].as_str()));
    ui.key(KeyCode::Char('h'));
    assert_eq!(ui.detail_layer(), Some(names[0].as_str()));
    assert!(ui.screen().contains("frozen drift:"));
    ui.key(KeyCode::Esc);
    assert_eq!(ui.app.screen, Screen::Layers);
    assert!(!ui.app.quit);
}

#[test]
fn search_filters_names_and_esc_restores() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('/'));
    assert_eq!(
        ui.app.screen,
        Screen::Layers,
        "/ from Overview searches layers"
    );
    ui.type_str("layer3");
    let names = listed(&ui);
    assert_eq!(names.len(), 5, "four bn and one downsample: {names:?}");
    assert!(names.iter().all(|n| n.contains("layer3")), "{names:?}");
    // Typing q goes into the query, it does not quit.
    ui.type_str("q");
    assert!(!ui.app.quit);
    assert!(listed(&ui).is_empty());
    assert!(ui.screen().contains("No layer matches"));
    ui.key(KeyCode::Backspace);
    ui.key(KeyCode::Enter);
    assert!(ui.app.editing.is_none());
    assert_eq!(ui.app.layers.query, "layer3");
    assert_eq!(listed(&ui).len(), 5);

    // Esc while typing restores the query from before.
    ui.key(KeyCode::Char('/'));
    ui.type_str("bn2");
    assert_eq!(ui.app.layers.query, "layer3bn2");
    ui.key(KeyCode::Esc);
    assert_eq!(ui.app.layers.query, "layer3");
    // Esc outside typing clears the search; another does nothing (only q quits).
    ui.key(KeyCode::Esc);
    assert_eq!(listed(&ui).len(), 21);
    assert!(!ui.app.quit);
    ui.key(KeyCode::Esc);
    assert!(!ui.app.quit);
    assert_eq!(listed(&ui).len(), 21);
    for screen in ['1', '4'] {
        ui.key(KeyCode::Char(screen));
        ui.key(KeyCode::Esc);
        assert!(!ui.app.quit, "Esc on screen {screen}");
    }
    ui.key(KeyCode::Char('q'));
    assert!(ui.app.quit);
}

#[test]
fn sort_cycles_columns_and_reverses() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::Char('s'));
    let names = listed(&ui);
    let dvar: Vec<f64> = names.iter().map(|n| max_diffs(&ui, n).1).collect();
    assert!(
        dvar.windows(2).all(|w| w[0] >= w[1]),
        "|Δvar| descending: {dvar:?}"
    );
    ui.key(KeyCode::Char('S'));
    let names = listed(&ui);
    let dvar: Vec<f64> = names.iter().map(|n| max_diffs(&ui, n).1).collect();
    assert!(
        dvar.windows(2).all(|w| w[0] <= w[1]),
        "|Δvar| ascending: {dvar:?}"
    );
    // Around to the name column: natural order.
    for _ in 0..3 {
        ui.key(KeyCode::Char('s'));
    }
    let names = listed(&ui);
    assert_eq!(
        names.first().map(String::as_str),
        Some("backbone.layer1.0.bn1")
    );
    assert_eq!(names.last().map(String::as_str), Some("head.bn"));
}

#[test]
fn filter_cycles_statuses() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::Char('f'));
    assert_eq!(ui.app.layers.filter, LayerFilter::Changed);
    assert_eq!(listed(&ui).len(), 21);
    ui.key(KeyCode::Char('f'));
    assert_eq!(
        ui.app.layers.filter,
        LayerFilter::Status(Status::FrozenStatsDrift)
    );
    let names = listed(&ui);
    assert_eq!(names.len(), 20);
    assert!(names.iter().all(|n| n.starts_with("backbone.")));
    ui.key(KeyCode::Char('f'));
    assert_eq!(ui.app.layers.filter, LayerFilter::Status(Status::Trained));
    assert_eq!(listed(&ui), vec!["head.bn".to_owned()]);
    ui.key(KeyCode::Char('f'));
    assert_eq!(ui.app.layers.filter, LayerFilter::All);
}

#[test]
fn overview_verdict_opens_its_layers() {
    let mut ui = Harness::pair(100, 30);
    let screen = ui.screen();
    let backbone = screen.find("✗ backbone").expect("backbone verdict shown");
    let head = screen.find("● head").expect("head verdict shown");
    assert!(backbone < head, "most severe first");
    ui.key(KeyCode::Enter);
    assert_eq!(ui.app.screen, Screen::Layers);
    assert_eq!(ui.app.layers.scope.as_deref(), Some("backbone"));
    assert_eq!(listed(&ui).len(), 20);
    ui.key(KeyCode::Esc);
    assert_eq!(ui.app.layers.scope, None);
    assert_eq!(listed(&ui).len(), 21);
}

#[test]
fn tree_collapses_and_expands() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::Char('s'));
    ui.key(KeyCode::Char('s'));
    ui.key(KeyCode::Char('s'));
    ui.key(KeyCode::Char('s')); // name order
    ui.key(KeyCode::Char('t'));
    let first = ui.app.layers.entries.first().cloned();
    let Some(Entry::Group(g)) = first else {
        panic!("tree starts with a module: {first:?}")
    };
    assert_eq!((g.path.as_str(), g.layers), ("backbone", 20));
    assert_eq!(g.statuses.get(&Status::FrozenStatsDrift), Some(&20));
    ui.key(KeyCode::Home);
    let expanded = ui.app.layers.entries.len();
    ui.key(KeyCode::Char('h'));
    // backbone collapsed, then head and its one layer.
    assert_eq!(ui.app.layers.entries.len(), 3);
    ui.key(KeyCode::Char('l'));
    assert_eq!(ui.app.layers.entries.len(), expanded);
    ui.key(KeyCode::Char(' '));
    assert_eq!(ui.app.layers.entries.len(), 3, "space toggles too");
}

#[test]
fn screens_panes_help_and_quit() {
    let mut ui = Harness::pair(100, 30);
    for (key, screen) in [
        ('4', Screen::Tensors),
        ('3', Screen::Detail),
        ('2', Screen::Layers),
        ('1', Screen::Overview),
    ] {
        ui.key(KeyCode::Char(key));
        assert_eq!(ui.app.screen, screen);
    }
    ui.key(KeyCode::Tab);
    assert_eq!(ui.app.focus, Pane::Side);
    ui.key(KeyCode::Tab);
    assert_eq!(ui.app.focus, Pane::Main);
    ui.key(KeyCode::Char('?'));
    assert!(ui.app.help);
    assert!(ui.screen().contains("Keys"));
    // Keys other than close do nothing under the help.
    ui.key(KeyCode::Char('4'));
    assert_eq!(ui.app.screen, Screen::Overview);
    ui.key(KeyCode::Esc);
    assert!(!ui.app.help);
    assert!(!ui.app.quit);
    ui.key(KeyCode::Char('q'));
    assert!(ui.app.quit);
}

#[test]
fn tensors_search_and_open_their_layer() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('4'));
    ui.key(KeyCode::Char('/'));
    ui.type_str("running_var");
    ui.key(KeyCode::Enter);
    let names: Vec<&str> = ui
        .app
        .tensors
        .entries
        .iter()
        .map(|&i| ui.app.tensor_rows[i].name.as_str())
        .collect();
    assert_eq!(names.len(), 21);
    assert!(names.iter().all(|n| n.ends_with(".running_var")));
    ui.key(KeyCode::Enter);
    assert_eq!(ui.app.screen, Screen::Detail);
    assert_eq!(ui.detail_layer(), Some("backbone.layer1.0.bn1"));
}

#[test]
fn mouse_selects_scrolls_and_switches_tabs() {
    let mut ui = Harness::pair(100, 30);
    ui.key(KeyCode::Char('2'));
    let mouse = |kind, column, row| {
        Event::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    // Rows start under the tab bar, the border and the header: terminal row 3 is row 0.
    ui.event(mouse(MouseEventKind::Down(MouseButton::Left), 10, 6));
    assert_eq!(ui.app.layers.cursor.selected, 3);
    // A click on the selected row opens it.
    ui.event(mouse(MouseEventKind::Down(MouseButton::Left), 10, 6));
    assert_eq!(ui.app.screen, Screen::Detail);
    ui.key(KeyCode::Char('2'));
    ui.event(mouse(MouseEventKind::ScrollDown, 10, 6));
    assert_eq!(ui.app.layers.cursor.selected, 6);
    ui.event(mouse(MouseEventKind::ScrollUp, 10, 6));
    assert_eq!(ui.app.layers.cursor.selected, 3);
    // Tab bar: " 1 Overview " starts at column 0, " 4 Tensors " last.
    ui.event(mouse(MouseEventKind::Down(MouseButton::Left), 40, 0));
    assert_eq!(ui.app.screen, Screen::Tensors);
}

#[test]
fn resize_keeps_the_selection_visible() {
    let mut ui = Harness::pair(120, 40);
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::End);
    ui.event(Event::Resize(80, 24));
    let c = ui.app.layers.cursor;
    let rows = ui.app.list_height(Screen::Layers);
    assert!(c.selected >= c.offset && c.selected < c.offset + rows);
    assert!(ui.screen().contains("head.bn") || ui.screen().contains(&listed(&ui)[20]));
}

#[test]
fn one_checkpoint_filters_by_health_flag() {
    let mut ui = Harness::single(ZOO, 100, 30);
    ui.key(KeyCode::Char('2'));
    assert_eq!(listed(&ui).len(), 16);
    ui.key(KeyCode::Char('f'));
    assert_eq!(ui.app.layers.filter, LayerFilter::Flagged);
    let flagged = listed(&ui);
    assert_eq!(flagged.len(), 5);
    let report = &ui.app.reports.a;
    for name in &flagged {
        let layer = report
            .layers
            .iter()
            .find(|l| &l.name == name)
            .expect("listed layer");
        assert!(!layer.flags.is_empty());
    }
}

/// The README's key table says what the help overlay says.
#[test]
fn readme_lists_every_key_of_the_help() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let section = readme
        .split("### Keys")
        .nth(1)
        .expect("README has a Keys section");
    for (_, what) in bnaudit::tui::view::help::KEYS {
        assert!(
            section.contains(what),
            "README misses the key doing: {what}"
        );
    }
}

/// A checkpoint without BatchNorm layers: every screen draws and every key is harmless.
#[test]
fn no_batchnorm_layer_is_fine() {
    let mut ui = Harness::single("tests/fixtures/ls/dtypes.safetensors", 80, 24);
    assert!(
        ui.screen()
            .contains("No BatchNorm layer in this checkpoint.")
    );
    for key in ['2', 'j', 't', 's', 'f', '3', 'l', '4', 'G', '/', 'x'] {
        ui.key(KeyCode::Char(key));
        ui.screen();
    }
    // Esc cancels the search typed last; every tensor is listed.
    ui.key(KeyCode::Esc);
    ui.key(KeyCode::Enter);
    assert_eq!(ui.app.tensors.entries.len(), 15);
    assert!(!ui.app.quit);
}

/// A comparison that fails says so where the verdicts would be, and the UI goes on.
#[test]
fn failed_comparison_is_shown() {
    let mut ui = Harness::pending(100, 30);
    ui.app
        .on_diff(Err("b.safetensors: truncated tensor data".to_owned()));
    let screen = ui.screen();
    assert!(screen.contains("The comparison failed: b.safetensors: truncated tensor data"));
    assert!(screen.contains("✗ comparison failed"));
    ui.key(KeyCode::Char('2'));
    assert_eq!(
        listed(&ui).len(),
        21,
        "layers still listed from the headers"
    );
}

/// Names aligned by the diff (`module.` stripped from B) merge the rows listed before it;
/// the selection survives by name and nothing indexes the old rows.
#[test]
fn diff_arriving_realigns_rows_under_the_selection() {
    let dir = "tests/fixtures/diff/ddp_prefix";
    let (a, b) = (
        format!("{dir}/a.safetensors"),
        format!("{dir}/b.safetensors"),
    );
    let mut ui = Harness::pending_pair(&a, &b, 100, 30);
    ui.key(KeyCode::Char('2'));
    assert_eq!(
        listed(&ui).len(),
        12,
        "A's and B's names apart before alignment"
    );
    ui.key(KeyCode::Char('/'));
    ui.type_str("backbone.0.1");
    ui.key(KeyCode::Enter);
    ui.key(KeyCode::Esc);
    // The last row selected, on the Layers screen, when the diff arrives.
    ui.key(KeyCode::End);
    let last = listed(&ui)[11].clone();
    ui.finish_diff();
    let names = listed(&ui);
    let selected = ui.app.layers.cursor.selected;
    assert_eq!(
        names[selected],
        last.trim_start_matches("module."),
        "the same layer stays selected"
    );
    assert_eq!(names.len(), 6, "one row per aligned layer: {names:?}");
    assert!(names.iter().all(|n| !n.starts_with("module.")));
    assert_eq!(ui.app.tensor_rows.len(), 39);
    ui.screen();
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::Enter);
    assert!(ui.screen().contains("running_mean"));
}

#[test]
fn overview_names_the_torch_save_format_and_key() {
    let ui = Harness::explained(
        "tests/fixtures/torch/model.safetensors",
        "tests/fixtures/torch/lightning.ckpt",
        None,
        140,
        30,
    );
    let screen = ui.screen();
    assert!(screen.contains("torch.save, key state_dict"), "{screen}");
    let single = Harness::single("tests/fixtures/torch/plain.pt", 140, 30);
    assert!(
        single.screen().contains("torch.save · 21 tensors"),
        "{}",
        single.screen()
    );
}

/// A checkpoint without BatchNorm says so on Layers, not "No layer matches".
#[test]
fn a_checkpoint_without_batchnorm_says_so() {
    let mut ui = Harness::single("tests/fixtures/ls/dtypes.safetensors", 100, 24);
    ui.key(KeyCode::Char('2'));
    let screen = ui.screen();
    assert!(
        screen.contains("This checkpoint has no BatchNorm layer"),
        "{screen}"
    );
    assert!(!screen.contains("No layer matches"), "{screen}");
}

/// `w` on Layers: the path prompt, the plan (nothing written yet), Enter writes; the file
/// then holds A's statistics where B's drifted. An input as the path is refused, and the
/// key does nothing on the Overview.
#[test]
fn restore_key_plans_then_writes() {
    let mut ui = Harness::pair(120, 40);
    ui.key(KeyCode::Char('w'));
    assert!(ui.app.restore.is_none(), "no dialog on the Overview");
    ui.key(KeyCode::Char('2'));
    ui.key(KeyCode::Char('w'));
    assert!(
        ui.screen()
            .contains("assets/demo/finetuned.restored.safetensors_")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fixed.safetensors");
    // Replace the offered path with ours.
    for _ in 0..200 {
        ui.key(KeyCode::Backspace);
    }
    ui.type_str(&out.display().to_string());
    ui.key(KeyCode::Enter);
    let plan = ui.screen();
    assert!(plan.contains("Restore plan"), "{plan}");
    assert!(
        plan.contains("backbone: 60 tensors restored in 20 layers"),
        "{plan}"
    );
    assert!(!out.exists(), "the plan writes nothing");
    ui.key(KeyCode::Enter);
    assert!(ui.screen().contains("Restored"), "{}", ui.screen());
    let check = assert_cmd::Command::cargo_bin("bnaudit")
        .expect("binary")
        .args([
            "check",
            PRETRAINED,
            &out.display().to_string(),
            "--frozen",
            "backbone",
        ])
        .output()
        .expect("runs");
    assert_eq!(check.status.code(), Some(0));
    ui.key(KeyCode::Esc);
    assert!(ui.app.restore.is_none());

    // An input is refused, and nothing else happens.
    ui.key(KeyCode::Char('w'));
    for _ in 0..200 {
        ui.key(KeyCode::Backspace);
    }
    ui.type_str(FINETUNED);
    ui.key(KeyCode::Enter);
    let refused = ui.screen();
    assert!(refused.contains("Restore failed"), "{refused}");
    assert!(refused.contains("never replaces an input"), "{refused}");
    ui.key(KeyCode::Esc);
    assert!(!ui.app.quit);
}
