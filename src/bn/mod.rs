//! The BatchNorm domain: discovery of layers, statistics and health flags, the forward pass
//! in every mode and the running-statistics update rule.
//!
//! No I/O and no presentation: functions here take tensor metadata and decoded values.

mod discover;
mod forward;
mod layer;
mod stats;
mod update;

pub use discover::discover;
pub use forward::{BatchNorm, BatchStats, ForwardError, Mode, Real, RunningStats, batch_stats};
pub use layer::{BnKeys, BnLayer, Convention, Role};
pub use stats::{Flag, LayerValues, TINY_VAR, TensorStats};
pub use update::{BadMomentum, Momentum, UpdateRule};
