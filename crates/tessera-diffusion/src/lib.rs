//! Rectified flow: schedules, samplers, noising and training targets. Never models.
//!
//! Conventions shared by every module:
//! - `sigma` (σ) is the noise level in `[0, 1]`: `x_σ = (1 − σ)·x0 + σ·ε`; σ = 1 is pure noise.
//! - The model is given `timestep = σ · 1000` ([`NUM_TRAIN_TIMESTEPS`]), as Wan and diffusers do.
//! - The model predicts the velocity `v = ε − x0`, so `dx/dσ = v`.
//! - Video latents are `(B, C, T, H, W)`; per-frame quantities are `(B, T)`.
//!
//! Reference: diffusers v0.42.1 `FlowMatchEulerDiscreteScheduler`,
//! `FlowMatchHeunDiscreteScheduler` and `UniPCMultistepScheduler` (flow prediction), checked by
//! `fixtures/gen/scheduler_fixtures.py`.

mod driver;
mod error;
mod flow;
mod mask;
mod sampler;
mod schedule;

pub use driver::{cfg, cfg_batched, cfg_input, frame_levels, sample, Eval, KnownFrames};
pub use error::{DiffusionError, Result};
pub use flow::{
    add_noise, drop_caption, sdedit_start, velocity_target, TimestepSampler, CAPTION_DROPOUT,
};
pub use mask::{masked_mse, masks_to_tensor, ConditionMask, MaskProbs, MaskSampler};
pub use sampler::{Euler, Heun, Sampler, SamplerKind, UniPc};
pub use schedule::{shift_sigma, Schedule, NUM_TRAIN_TIMESTEPS};
