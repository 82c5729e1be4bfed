//! Evaluation of generated videos against their prompts, grounded in the shapes world.

mod error;
pub mod features;
pub mod frechet;
pub mod metrics;
pub mod report;
pub mod scene;
pub mod segment;
pub mod track;

pub use error::{EvalError, Result};
pub use report::{eval_clips, eval_clips_with, eval_videos, EvalOptions, Report, VideoSource};
