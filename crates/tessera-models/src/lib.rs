//! Tessera neural networks (candle): causal video VAE, diffusion transformer, text encoders.
//!
//! One file per model; shared differentiable building blocks live in `layers`.

pub mod attention;
pub mod conv3d;
pub mod dit;
pub mod kernels;
pub mod layers;
pub mod text;
pub mod vae;
