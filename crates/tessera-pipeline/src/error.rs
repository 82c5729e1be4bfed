//! The crate's error type: each variant names what failed and how to fix it.

use std::path::PathBuf;

use crate::request::RequestError;

/// Everything generation can fail on, from a bad flag to a mismatched checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("model folder {path} not found; pass --model DIR or set TESSERA_MODEL to a folder holding vae/, dit/ and text/")]
    ModelDir { path: PathBuf },
    #[error("model folder is missing {path} ({what}); re-export the model or point --model at a complete folder")]
    ModelFile { path: PathBuf, what: &'static str },
    #[error("parsing {path}: {detail}; the file must be the JSON the trainer exported")]
    ModelJson { path: PathBuf, detail: String },
    #[error("model sampling defaults {path}: {detail}; fix or delete the file (fields: sampler, steps, cfg, cfg_interval, shift, guidance, eta, eta_until, image_first)")]
    Sampling { path: PathBuf, detail: String },
    #[error(
        "text encoder {path}: {detail}; the weights do not belong to this config, re-export text/"
    )]
    TextWeights { path: PathBuf, detail: String },
    #[error("model parts disagree: {what} ({expected} vs {got}); vae/, dit/ and text/ must come from one training run")]
    PartsMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the VAE compresses time {0}×, but frame counts are 4k+1: its temperal_downsample may hold at most two `true` (1×, 2× or 4×)")]
    TemporalFactor(usize),
    #[error("{path} is not an image ({detail}); --image takes a PNG, JPEG or single-frame GIF")]
    NotAnImage { path: PathBuf, detail: String },
    #[error("input {path}: {detail}")]
    Input { path: PathBuf, detail: String },
    #[error("generation cancelled; no output was written")]
    Cancelled,
    #[error(transparent)]
    Review(#[from] tessera_safety::ReviewError),
    #[error("VAE: {0}")]
    Vae(#[from] tessera_models::vae::VaeError),
    #[error("DiT: {0}")]
    Dit(#[from] tessera_models::dit::DitError),
    #[error("text encoder: {0}")]
    Text(#[from] tessera_models::text::TextError),
    #[error("sampling: {0}")]
    Diffusion(#[from] tessera_diffusion::DiffusionError),
    #[error("media: {0}")]
    Media(#[from] tessera_media::MediaError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with [`PipelineError`].
pub type Result<T> = std::result::Result<T, PipelineError>;
