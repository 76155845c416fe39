//! bnaudit: find BatchNorm statistics that moved inside frozen sub-models.
//!
//! Layers, each depending only on those before it: [`checkpoint`] (bytes and dtypes),
//! [`bn`] (BatchNorm domain), [`audit`] (use cases returning serialisable reports),
//! [`report`] (renderers) and [`tui`] (the terminal UI), and the command line in [`cli`];
//! [`fmt`] is a leaf of number and name formatting that every layer may use; [`output`], a
//! leaf, writes output files safely for all of them; [`signals`], the leaf below it, handles
//! the terminating signals for the whole process.

pub mod audit;
pub mod bn;
pub mod checkpoint;
pub mod cli;
pub mod fmt;
pub mod output;
pub mod report;
pub mod signals;
pub mod tui;
