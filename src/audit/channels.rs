//! Per-channel values of one BatchNorm layer in one or two checkpoints, for plots: what the
//! TUI's Detail screen draws, read through the same decoding as every other report.

use serde::Serialize;

use super::ls::layer_values;
use crate::bn::{BnLayer, Role};
use crate::checkpoint::{Checkpoint, CheckpointError};

/// One tensor of a layer, channel by channel, on each side.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChannelSeries {
    /// Values in A; `None` when A lacks the tensor (or the layer) or it does not decode.
    pub a: Option<Vec<f64>>,
    /// Values in B.
    pub b: Option<Vec<f64>>,
    /// `b - a` channel by channel, when both exist with the same length.
    pub delta: Option<Vec<f64>>,
}

impl ChannelSeries {
    fn of(a: Option<Vec<f64>>, b: Option<Vec<f64>>) -> ChannelSeries {
        let delta = match (&a, &b) {
            (Some(a), Some(b)) if a.len() == b.len() => {
                Some(a.iter().zip(b).map(|(a, b)| b - a).collect())
            }
            _ => None,
        };
        ChannelSeries { a, b, delta }
    }
}

/// The four float tensors of a layer, channel by channel.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct LayerChannels {
    /// Affine scale.
    pub weight: ChannelSeries,
    /// Affine shift.
    pub bias: ChannelSeries,
    /// Running mean.
    pub running_mean: ChannelSeries,
    /// Running variance.
    pub running_var: ChannelSeries,
}

impl LayerChannels {
    /// The series of a float role (`None` for the counter).
    pub fn get(&self, role: Role) -> Option<&ChannelSeries> {
        match role {
            Role::Weight => Some(&self.weight),
            Role::Bias => Some(&self.bias),
            Role::RunningMean => Some(&self.running_mean),
            Role::RunningVar => Some(&self.running_var),
            Role::NumBatchesTracked => None,
        }
    }
}

/// Reads the layer's values on each side that has it (a checkpoint and the layer as found
/// there, names may differ by a wrapper prefix).
pub fn layer_channels(
    a: Option<(&Checkpoint, &BnLayer)>,
    b: Option<(&Checkpoint, &BnLayer)>,
) -> Result<LayerChannels, CheckpointError> {
    let a = a.map(|(c, l)| layer_values(c, l)).transpose()?;
    let b = b.map(|(c, l)| layer_values(c, l)).transpose()?;
    let series = |role: Role| {
        let get = |v: &Option<crate::bn::LayerValues>| {
            v.as_ref().and_then(|v| v.get(role)).map(<[f64]>::to_vec)
        };
        ChannelSeries::of(get(&a), get(&b))
    };
    Ok(LayerChannels {
        weight: series(Role::Weight),
        bias: series(Role::Bias),
        running_mean: series(Role::RunningMean),
        running_var: series(Role::RunningVar),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_only_when_both_sides_match() {
        let s = ChannelSeries::of(Some(vec![1.0, 2.0]), Some(vec![1.5, 1.0]));
        assert_eq!(s.delta, Some(vec![0.5, -1.0]));
        assert_eq!(ChannelSeries::of(Some(vec![1.0]), None).delta, None);
        assert_eq!(
            ChannelSeries::of(Some(vec![1.0]), Some(vec![1.0, 2.0])).delta,
            None
        );
    }
}
