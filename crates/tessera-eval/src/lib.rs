//! Evaluation of generated videos against their prompts, grounded in the shapes world.

mod error;
pub mod frechet;
pub mod metrics;
pub mod scene;
pub mod segment;
pub mod track;

pub use error::{EvalError, Result};
