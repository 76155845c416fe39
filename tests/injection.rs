//! Names from a checkpoint cannot reach the terminal or a CI log as control characters or
//! invisible formatting characters: every text and Markdown report (and the error line)
//! shows them escaped.

mod writer;

use std::path::Path;

use assert_cmd::Command;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use writer::SafetensorsWriter;

/// Retitles the terminal (OSC 0), rings the bell and clears the screen when printed raw.
const ANSI: &str = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J";
/// Starts a GitHub Actions workflow command on a line of its own when printed raw.
const NEWLINE: &str = "x\n::error title=owned::gotcha";
/// Reads as `evilfinal` with a zero-width space and a right-to-left override when printed
/// raw; two such names that differ only there look the same.
const BIDI: &str = "evil\u{202e}lanif\u{200b}";

/// One BatchNorm layer per hostile module name; B's statistics drifted in both.
fn write_pair(dir: &Path) -> (String, String) {
    let paths = [dir.join("a.safetensors"), dir.join("b.safetensors")];
    for (side, path) in paths.iter().enumerate() {
        let mut w = SafetensorsWriter::default();
        for module in [ANSI, NEWLINE, BIDI] {
            let layer = format!("{module}.bn");
            w.bn_layer(&layer, side as f32 * 0.5, 10 + side as i64);
        }
        w.write(path);
    }
    let [a, b] = paths.map(|p| p.to_str().expect("UTF-8").to_owned());
    (a, b)
}

fn run(args: &[&str]) -> (String, String) {
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(args)
        .args(["--color", "never"])
        .output()
        .expect("run");
    (
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

/// No control character but the line breaks, no format character (Cf), no line a workflow
/// command, and the names still there, escaped.
fn assert_safe(what: &str, out: &str) {
    let raw: Vec<char> = out
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n') || c.general_category() == GeneralCategory::Format
        })
        .collect();
    assert!(
        raw.is_empty(),
        "{what}: raw control characters {raw:?} in\n{out}"
    );
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("::")),
        "{what}: a line starts a workflow command:\n{out}"
    );
    assert!(out.contains(r"evil\e]0;pwned\x07\e[2J"), "{what}:\n{out}");
    assert!(
        out.contains(r"x\n::error title=owned::gotcha"),
        "{what}:\n{out}"
    );
    assert!(out.contains(r"evil\u{202e}lanif\u{200b}"), "{what}:\n{out}");
}

#[test]
fn text_and_markdown_reports_escape_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = write_pair(dir.path());
    let cases: [(&str, Vec<&str>); 5] = [
        ("ls", vec!["ls", &a]),
        ("ls --all", vec!["ls", "--all", &a]),
        ("diff", vec!["diff", &a, &b]),
        ("check", vec!["check", &a, &b, "--frozen", "**"]),
        (
            "check markdown",
            vec!["check", &a, &b, "--frozen", "**", "--format", "markdown"],
        ),
    ];
    for (what, args) in cases {
        let (stdout, _) = run(&args);
        assert_safe(what, &stdout);
    }
}

#[test]
fn explain_text_escapes_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = write_pair(dir.path());
    let (stdout, _) = run(&["explain", &a, &b]);
    assert_safe("explain", &stdout);
}

#[test]
fn the_error_line_escapes_control_characters() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file name the error quotes as given: not a checkpoint, named to clear the screen.
    let path = dir.path().join(format!("{ANSI}\n::error::x.safetensors"));
    std::fs::write(&path, b"not a checkpoint").expect("write");
    let (_, stderr) = run(&["ls", path.to_str().expect("UTF-8")]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let raw: Vec<char> = stderr
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {stderr}");
    assert!(
        stderr.contains(r"evil\e]0;pwned\x07\e[2J\n::error::x"),
        "{stderr}"
    );
}
