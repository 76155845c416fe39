//! The BatchNorm domain: discovery of layers, statistics, health flags and the drift
//! algebra of the running-statistics update.
//!
//! No I/O and no presentation: functions here take tensor metadata and decoded values.

mod discover;
pub mod drift;
mod layer;
mod stats;

pub use discover::{discover, module_name};
pub use drift::Momentum;
pub use layer::{BnKeys, BnLayer, Convention, Role};
pub use stats::{Flag, LayerValues, TINY_VAR, TensorStats};
