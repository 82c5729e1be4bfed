//! Training for Tessera.
//!
//! Shared infrastructure any trainer (VAE now, DiT later) reuses:
//! - [`schedule`]: linear warmup + cosine decay;
//! - [`optim`]: AdamW whose moments can be saved and restored (candle's keeps them private, so
//!   a resumed run could not continue the same curve);
//! - [`ema`]: exponential moving average of the weights;
//! - [`checkpoint`]: atomic checkpoint directories (temp dir + rename, then a `latest` pointer);
//! - [`log`]: JSONL metrics log that a resumed run truncates to its checkpoint;
//! - [`rng`]: per-step RNG derived from `(seed, step)`, so resuming needs no RNG snapshot and
//!   draws exactly what the uninterrupted run would have drawn;
//! - [`data`]: clip sources (dataset folder, or anything implementing [`data::ClipSource`]).
//!
//! [`vae`] is the VAE trainer built on them.

pub mod checkpoint;
pub mod data;
pub mod dit;
pub mod ema;
pub mod latents;
pub mod log;
pub mod optim;
pub mod rng;
pub mod schedule;
pub mod text_align;
pub mod vae;

use std::path::{Path, PathBuf};

/// Training failures, each naming what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training option: {0}")]
    Options(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no checkpoint to resume in {0}; run without --resume to start fresh")]
    NoCheckpoint(PathBuf),
    #[error("{0} already holds another run's checkpoints; pass --resume to continue that run, or give a new --out folder")]
    RunExists(PathBuf),
    #[error("checkpoint {path} does not match this run: {what}")]
    CheckpointMismatch { path: PathBuf, what: String },
    #[error("loss became {value} at step {step}; stopped. The last good checkpoint is kept: resume from it with a lower --lr")]
    NonFinite { step: usize, value: f64 },
    #[error("data: {0}")]
    Data(String),
    #[error(transparent)]
    Media(#[from] tessera_media::MediaError),
    #[error(transparent)]
    Vae(#[from] tessera_models::vae::VaeError),
    #[error(transparent)]
    Dit(#[from] tessera_models::dit::DitError),
    #[error(transparent)]
    Text(#[from] tessera_models::text::TextError),
    #[error(transparent)]
    Diffusion(#[from] tessera_diffusion::DiffusionError),
    #[error(transparent)]
    World(#[from] tessera_world::WorldError),
    #[error(transparent)]
    Device(#[from] tessera_models::device::DeviceError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// What a progress callback tells the loop: go on, or checkpoint now and return (Ctrl-C, time
/// budget, tests that simulate a kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A JSON file (a config, a tokenizer) as `T`; errors name the file.
pub(crate) fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}

/// `candle_core::safetensors::save`, but readable like any other file the user writes:
/// safetensors writes through a private (0600) temp file, which left exported models unreadable
/// to other users.
pub(crate) fn save_safetensors(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &std::path::Path,
) -> Result<()> {
    candle_core::safetensors::save(tensors, path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(path))?;
    }
    Ok(())
}

/// Writes `tensors` as fp16 safetensors at `path` through a temp file and a rename (exports).
pub(crate) fn write_f16_atomic(
    path: &std::path::Path,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) -> Result<()> {
    let half = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(candle_core::DType::F16)?)))
        .collect::<candle_core::Result<_>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    save_safetensors(&half, &tmp)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
