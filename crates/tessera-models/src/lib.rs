//! Tessera neural networks (candle): causal video VAE, diffusion transformer, text encoders.
//!
//! One file per model; shared differentiable building blocks live in `layers`.

pub mod attention;
pub mod conv3d;
pub mod device;
pub mod dit;
pub mod kernels;
pub mod layers;
pub mod text;
pub mod vae;

use std::path::{Path, PathBuf};

/// Weight file names a model-part folder may hold, in order of preference: ours, then
/// diffusers' (so a downloaded diffusers folder loads unchanged).
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "diffusion_pytorch_model.safetensors"];

/// The weight file of a model-part folder, if it has one.
pub fn find_weights(dir: &Path) -> Option<PathBuf> {
    WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}
