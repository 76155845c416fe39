//! JSON output: the serialised report, pretty-printed, newline-terminated.

use serde::Serialize;

/// Serialises any report as the JSON contract of DESIGN.md.
pub fn render<T: Serialize>(report: &T) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("reports serialise infallibly");
    s.push('\n');
    s
}
