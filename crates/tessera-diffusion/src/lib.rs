//! Rectified flow: schedules, samplers, noising and training targets. Never models.
//!
//! Conventions shared by every module:
//! - `sigma` (σ) is the noise level in `[0, 1]`: `x_σ = (1 − σ)·x0 + σ·ε`; σ = 1 is pure noise.
//! - The model is given `timestep = σ · 1000` ([`NUM_TRAIN_TIMESTEPS`]), as Wan and diffusers do.
//! - The model predicts the velocity `v = ε − x0`, so `dx/dσ = v`.
//! - Video latents are `(B, C, T, H, W)`; per-frame quantities are `(B, T)`.
//!
//! Sampling, as a pipeline does it (image→video with guidance; `model` stands in for the DiT):
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use tessera_diffusion::{cfg_batched, cfg_input, sample, DiffusionError, KnownFrames, SamplerKind};
//!
//! # fn main() -> Result<(), DiffusionError> {
//! let dev = Device::Cpu;
//! let kind: SamplerKind = "unipc".parse()?;
//! let schedule = kind.schedule(20, 3.0)?;
//! let noise = Tensor::randn(0f32, 1.0, (1, 16, 3, 4, 4), &dev)?;
//! // The encoded image goes in latent frame 0; the other frames are generated.
//! let image = Tensor::zeros((1, 16, 3, 4, 4), DType::F32, &dev)?;
//! let known = KnownFrames::new(image, vec![true, false, false])?;
//! let model = |x: &Tensor, t: &Tensor| x.affine(0.1, 0.0); // (2B, C, T, H, W), (2B, T)
//! let video = sample(kind.build(0).as_mut(), noise, &schedule, Some(&known), |x, e| {
//!     // One forward on [cond; uncond]; known frames carry timestep 0.
//!     let t2 = Tensor::cat(&[&e.frame_timesteps, &e.frame_timesteps], 0)?;
//!     let v = model(&cfg_input(x)?, &t2)?;
//!     cfg_batched(&v, 5.0)
//! })?;
//! assert_eq!(video.dims(), &[1, 16, 3, 4, 4]);
//! # Ok(())
//! # }
//! ```
//!
//! Reference: diffusers v0.42.1 `FlowMatchEulerDiscreteScheduler`,
//! `FlowMatchHeunDiscreteScheduler` and `UniPCMultistepScheduler` (flow prediction), checked by
//! `fixtures/gen/scheduler_fixtures.py`. The ancestral sampler ([`EulerAncestral`]) has no
//! fixture (its noise is ours); its tests check the noise level of every step and exact
//! landing on one-point data instead.

mod driver;
mod error;
mod flow;
mod guidance;
mod mask;
mod noise;
mod sampler;
mod schedule;

pub use driver::{frame_levels, sample, Eval, KnownFrames};
pub use error::{DiffusionError, Result};
pub use flow::{
    add_noise, drop_caption, sdedit_start, velocity_target, TimestepSampler, TrainingExample,
    CAPTION_DROPOUT,
};
pub use guidance::{cfg, cfg_batched, cfg_input, Guidance};
pub use mask::{
    masked_mse, masks_to_tensor, object_weights, weighted_masked_mse, ConditionMask, MaskProbs,
    MaskSampler,
};
pub use noise::randn;
pub use sampler::{
    Euler, EulerAncestral, Heun, Sampler, SamplerKind, UniPc, DEFAULT_ETA, DEFAULT_ETA_UNTIL,
};
pub use schedule::{shift_sigma, Schedule, NUM_TRAIN_TIMESTEPS};
