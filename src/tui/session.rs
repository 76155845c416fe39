//! The opened checkpoints behind a UI: their `ls` reports (ready before the first frame),
//! and per-channel values read on demand for the Detail screen.

use std::sync::Arc;

use super::model::{LayerRow, Reports};
use crate::audit::{self, LayerChannels, LsOptions};
use crate::bn::{self, BnLayer};
use crate::checkpoint::{Checkpoint, CheckpointError};

/// One opened checkpoint and its BatchNorm layers, in the order `ls` lists them.
pub struct Side {
    /// The checkpoint, shared with the background comparison.
    pub checkpoint: Arc<Checkpoint>,
    layers: Vec<BnLayer>,
}

impl Side {
    fn new(checkpoint: Checkpoint) -> Side {
        let layers = bn::discover(checkpoint.tensors());
        Side {
            checkpoint: Arc::new(checkpoint),
            layers,
        }
    }
}

/// The checkpoints a UI shows.
pub struct Session {
    /// Checkpoint A (the only one when viewing one).
    pub a: Side,
    /// Checkpoint B.
    pub b: Option<Side>,
    /// Activation file of the capture plugin, for `explain`.
    pub activations: Option<Arc<Checkpoint>>,
}

impl Session {
    /// Wraps opened checkpoints (and an opened activation file).
    pub fn new(a: Checkpoint, b: Option<Checkpoint>, activations: Option<Checkpoint>) -> Session {
        Session {
            a: Side::new(a),
            b: b.map(Side::new),
            activations: activations.map(Arc::new),
        }
    }

    /// The `ls` reports of each side, every tensor listed; the diff is left to come.
    pub fn reports(&self) -> Result<Reports, CheckpointError> {
        let all = LsOptions { all: true };
        let a = audit::ls(&self.a.checkpoint, all)?;
        Ok(match &self.b {
            Some(b) => Reports::pair(a, audit::ls(&b.checkpoint, all)?),
            None => Reports::single(a),
        })
    }

    /// Per-channel values of the layer of `row` on each side that has it.
    pub fn channels(&self, row: &LayerRow) -> Result<LayerChannels, CheckpointError> {
        fn side(s: &Side, i: Option<usize>) -> Option<(&Checkpoint, &BnLayer)> {
            i.and_then(|i| s.layers.get(i))
                .map(|l| (s.checkpoint.as_ref(), l))
        }
        audit::layer_channels(
            side(&self.a, row.a),
            self.b.as_ref().and_then(|b| side(b, row.b)),
        )
    }
}
