//! JSON output: the serialised report, pretty-printed, newline-terminated.

use std::io::{self, Write};

use serde::Serialize;

/// Serialises any report as the JSON contract of DESIGN.md into `out` as it goes: an `ls`
/// report of thousands of layers is megabytes, which need not be built in memory first.
pub fn write<T: Serialize + ?Sized>(mut out: impl Write, report: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, report)?;
    out.write_all(b"\n")
}
