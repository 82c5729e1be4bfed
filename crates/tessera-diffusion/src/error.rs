//! The crate's error type: each variant names what failed and how to fix it.

/// Errors from schedules, samplers, noising and conditioning masks.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    #[error("number of sampling steps must be at least 1, got 0; pass --steps 1 or more")]
    ZeroSteps,
    #[error(
        "timestep shift must be finite and > 0, got {shift}; Wan uses 3.0 (small) to 5.0 (720p)"
    )]
    InvalidShift { shift: f64 },
    #[error("invalid sigma schedule: {reason}; sigmas must fall strictly from ≤ 1 to a final 0")]
    InvalidSigmas { reason: String },
    #[error("SDEdit strength must be in [0, 1], got {strength}")]
    InvalidStrength { strength: f64 },
    #[error("unknown sampler {name:?}; valid samplers: euler, euler-a, heun, unipc")]
    UnknownSampler { name: String },
    #[error("ancestral sampling's η must be in [0, 1] (0 = plain Euler, 1 = all noise fresh), got {eta}")]
    InvalidEta { eta: f64 },
    #[error("ancestral sampling's last noise level with fresh noise must be in [0, 1] (0 = to the end), got {until}")]
    InvalidEtaUntil { until: f64 },
    #[error("classifier-free guidance scale must be finite and ≥ 0, got {scale}")]
    InvalidCfgScale { scale: f64 },
    #[error("unknown guidance {name:?}; valid: cfg (classifier-free), apg (adaptive projected)")]
    UnknownGuidance { name: String },
    #[error("{what}: expected shape {expected}, got {got:?}")]
    ShapeMismatch {
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    #[error("invalid conditioning mask: {reason}")]
    InvalidMask { reason: String },
    #[error(
        "invalid probabilities: {reason}; give finite, non-negative weights with a positive sum"
    )]
    InvalidProbabilities { reason: String },
    #[error("object loss weight {strength} must be finite and >= 0 (0 = plain MSE, e.g. 4)")]
    InvalidObjectWeight { strength: f64 },
    #[error("invalid timestep sampler: {reason}")]
    InvalidTimestepSampler { reason: String },
    #[error("sampler used out of order: {reason}; call reset() before a new trajectory")]
    SamplerState { reason: String },
    #[error("every frame is known (conditioning), so there is nothing to compute a loss on; leave at least one frame unknown")]
    NoLossFrames,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`DiffusionError`].
pub type Result<T> = std::result::Result<T, DiffusionError>;

/// `x`'s `(B, C, T, H, W)`, or an error naming `what` had another shape.
pub(crate) fn video_dims(
    x: &candle_core::Tensor,
    what: &'static str,
) -> Result<(usize, usize, usize, usize, usize)> {
    x.dims5().map_err(|_| DiffusionError::ShapeMismatch {
        what,
        expected: "(B, C, T, H, W)".to_string(),
        got: x.dims().to_vec(),
    })
}
