//! JSON output: the serialised report, pretty-printed, newline-terminated.

use std::cell::RefCell;
use std::io::{self, BufWriter, Write};

use serde::{Serialize, Serializer};

use crate::audit::explain::{Explained, Explainer};

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

/// Writes the `explain` report as [`write`] does, each layer explained when the serialiser
/// reaches it and dropped once written: the report of layers of millions of channels holds a
/// window of layers, never all of them. The same JSON as the collected report's.
pub fn explain(
    out: impl Write,
    explainer: &Explainer<'_>,
    layers: Explained<'_, '_>,
) -> io::Result<()> {
    let layers = RefCell::new(layers);
    write(out, &explainer.report(Layers(&layers), Skipped(&layers)))
}

/// The layers, pulled from the iterator as they are serialised.
struct Layers<'r, 'e, 'c>(&'r RefCell<Explained<'e, 'c>>);

impl Serialize for Layers<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(std::iter::from_fn(|| self.0.borrow_mut().next()))
    }
}

/// The skipped layers: serialised after [`Layers`], when all are known.
struct Skipped<'r, 'e, 'c>(&'r RefCell<Explained<'e, 'c>>);

impl Serialize for Skipped<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.borrow().skipped().serialize(s)
    }
}
