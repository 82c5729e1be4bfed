//! Prompt to video. Models, samplers and media stay in their own crates; this crate wires them
//! together in numbered phases ([`generate`]) that the CLI and the HTTP server both call.
//!
//! - [`GenerateRequest`]: validated flags (every check runs before any compute).
//! - [`Model`]: VAE + DiT + text encoder from one folder ([`Model::default_dir`] finds the
//!   shipped `tessera-shapes-tiny` with no flag and no download).
//! - [`extend_prompt`]: short prompts → the dense captions the model trained on.
//! - [`generate`]: every mode (text, image, loop, extend, connect, edit) and long videos in
//!   windows, decoded and written frame by frame.

mod error;
mod model;
mod noise;
mod pipeline;
mod prompt;
mod request;

pub use error::{PipelineError, Result};
pub use model::{Model, DEFAULT_MODEL, MODEL_ENV};
pub use pipeline::{generate, FrameHook, NoHook, Progress, Summary, Timings, CONTEXT_LATENTS};
pub use prompt::{extend_prompt, extend_prompt_via, keep_prompt, ExtendedPrompt, PromptSource};
pub use request::{
    check_frames, check_image, check_input, check_new_frames, check_output, check_size,
    check_strength, frames_for_seconds, parse_cfg_interval, GenerateRequest, Mode, RequestError,
    RequestSpec, Sampling, DEFAULT_CFG, DEFAULT_CFG_INTERVAL, DEFAULT_SHIFT, DEFAULT_STEPS,
    DEFAULT_TRANSITION_FRAMES, DEFAULT_WINDOW_FRAMES, MIN_LOOP_FRAMES, SAMPLING_FILE,
};
pub use tessera_media::OutputKind;
