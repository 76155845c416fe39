//! The BatchNorm domain: discovery of layers, statistics and health flags.
//!
//! No I/O and no presentation: functions here take tensor metadata and decoded values.

mod discover;
mod layer;
mod stats;

pub use discover::discover;
pub use layer::{BnKeys, BnLayer, Convention, Role};
pub use stats::{Flag, LayerValues, TINY_VAR, TensorStats};
