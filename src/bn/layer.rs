//! What a BatchNorm layer is: its naming convention, its tensors and their keys.

use serde::Serialize;

use crate::checkpoint::Dtype;

/// The framework naming convention a layer was found under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// `weight, bias, running_mean, running_var, num_batches_tracked`.
    Pytorch,
    /// `gamma, beta, moving_mean, moving_variance`.
    Keras,
    /// `params/<m>/{scale,bias}` with `batch_stats/<m>/{mean,var}`.
    Flax,
    /// `weight, bias, _mean, _variance`.
    Paddle,
}

impl Convention {
    /// Running-statistics momentum in PyTorch's sense (`new = (1-m)·old + m·batch`) that the
    /// framework uses by default: Keras and Flax default to a decay of 0.99, Paddle to 0.9.
    pub fn default_momentum(self) -> f64 {
        match self {
            Convention::Pytorch | Convention::Paddle => 0.1,
            Convention::Keras | Convention::Flax => 0.01,
        }
    }

    /// The framework's default epsilon.
    pub fn default_eps(self) -> f64 {
        match self {
            Convention::Keras => 1e-3,
            Convention::Pytorch | Convention::Flax | Convention::Paddle => 1e-5,
        }
    }

    /// Whether the framework folds the unbiased batch variance into the running variance
    /// (PyTorch, Paddle) rather than the biased one (Keras, Flax).
    pub fn unbiased_running_var(self) -> bool {
        matches!(self, Convention::Pytorch | Convention::Paddle)
    }

    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Pytorch => "pytorch",
            Convention::Keras => "keras",
            Convention::Flax => "flax",
            Convention::Paddle => "paddle",
        }
    }
}

/// The five tensors of a BatchNorm layer, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Affine scale (`weight`, `gamma`, `scale`).
    Weight,
    /// Affine shift (`bias`, `beta`).
    Bias,
    /// Running mean (`running_mean`, `moving_mean`, `mean`, `_mean`).
    RunningMean,
    /// Running variance (`running_var`, `moving_variance`, `var`, `_variance`).
    RunningVar,
    /// PyTorch's counter of train-mode forwards.
    NumBatchesTracked,
}

impl Role {
    /// The four floating-point roles, in display order.
    pub const FLOATS: [Role; 4] = [
        Role::Weight,
        Role::Bias,
        Role::RunningMean,
        Role::RunningVar,
    ];

    /// The JSON name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::RunningMean => "running_mean",
            Role::RunningVar => "running_var",
            Role::NumBatchesTracked => "num_batches_tracked",
        }
    }

    /// Whether the role is an affine parameter (trained by gradients).
    pub fn is_affine(self) -> bool {
        matches!(self, Role::Weight | Role::Bias)
    }

    /// Whether the role is a running statistic (moved by train-mode forwards).
    pub fn is_stat(self) -> bool {
        matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// The checkpoint keys of a layer's tensors; `None` where the layer has no such tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BnKeys {
    /// Affine scale.
    pub weight: Option<String>,
    /// Affine shift.
    pub bias: Option<String>,
    /// Running mean (every BatchNorm layer has one).
    pub running_mean: String,
    /// Running variance (every BatchNorm layer has one).
    pub running_var: String,
    /// Counter of train-mode forwards.
    pub num_batches_tracked: Option<String>,
}

impl BnKeys {
    /// The key of `role`, if the layer has that tensor.
    pub fn get(&self, role: Role) -> Option<&str> {
        match role {
            Role::Weight => self.weight.as_deref(),
            Role::Bias => self.bias.as_deref(),
            Role::RunningMean => Some(&self.running_mean),
            Role::RunningVar => Some(&self.running_var),
            Role::NumBatchesTracked => self.num_batches_tracked.as_deref(),
        }
    }

    /// Every present key with its role.
    pub fn iter(&self) -> impl Iterator<Item = (Role, &str)> {
        [
            Role::Weight,
            Role::Bias,
            Role::RunningMean,
            Role::RunningVar,
            Role::NumBatchesTracked,
        ]
        .into_iter()
        .filter_map(|r| self.get(r).map(|k| (r, k)))
    }
}

/// A BatchNorm layer found in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BnLayer {
    /// Module path, with a collection prefix (Flax `params/`, `batch_stats/`) removed.
    pub name: String,
    /// Naming convention.
    pub convention: Convention,
    /// Number of channels (length of the running statistics).
    pub channels: u64,
    /// Dtype of the running statistics.
    pub dtype: Dtype,
    /// Keys of its tensors.
    pub keys: BnKeys,
}

impl BnLayer {
    /// Whether the layer has affine parameters.
    pub fn is_affine(&self) -> bool {
        self.keys.weight.is_some() || self.keys.bias.is_some()
    }
}
