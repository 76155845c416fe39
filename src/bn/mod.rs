//! The BatchNorm domain: discovery of layers, statistics, health flags, the drift algebra
//! of the running-statistics update, and the forward pass in every mode.
//!
//! No I/O and no presentation: functions here take tensor metadata and decoded values.

mod discover;
pub mod drift;
mod forward;
mod layer;
mod stats;
pub mod stream;
mod update;

pub use discover::{discover, module_name};
pub use drift::Momentum;
pub use forward::{BatchNorm, BatchStats, ForwardError, Mode, Real, RunningStats};
pub use layer::{BnKeys, BnLayer, Convention, Role};
pub use stats::{Flag, LayerValues, TINY_VAR, TensorStats};
pub use update::UpdateRule;
