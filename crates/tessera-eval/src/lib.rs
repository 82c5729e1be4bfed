//! Evaluation of generated videos against their prompts, grounded in the shapes world.

mod error;
pub mod segment;

pub use error::{EvalError, Result};
