//! JSON output: the serialised report, pretty-printed, newline-terminated.

use std::io::{self, BufWriter, Write};

use serde::Serialize;

/// Serialises any report as the JSON contract of DESIGN.md into `out` as it goes: an `ls`
/// report of thousands of layers is megabytes, which need not be built in memory first.
pub fn write<T: Serialize + ?Sized>(out: impl Write, report: &T) -> io::Result<()> {
    // The serialiser writes token by token; a buffer of a concrete type keeps each of those
    // writes an inlined copy even when `out` is a `dyn Write`, which passes it whole chunks.
    let mut buffered = BufWriter::with_capacity(64 * 1024, out);
    serde_json::to_writer_pretty(&mut buffered, report)?;
    buffered.write_all(b"\n")?;
    buffered.flush()
}
