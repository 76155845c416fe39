//! Use cases: each takes opened checkpoints and returns a serialisable report.
//!
//! Reports hold every number a renderer shows; `report` and `tui` only present them.

pub mod activations;
pub mod align;
pub mod channels;
pub mod check;
pub mod compare;
pub mod config;
pub mod diff;
pub mod explain;
pub mod ls;
pub mod restore;
pub mod scope;

pub use channels::{ChannelSeries, LayerChannels, layer_channels};
pub use diff::{DiffOptions, DiffReport, diff};
pub use explain::{ExplainOptions, ExplainReport, explain};
pub use ls::{CheckpointSummary, LsLayer, LsOptions, LsReport, TensorEntry, ls};

/// Version of the JSON reports' schema (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;
