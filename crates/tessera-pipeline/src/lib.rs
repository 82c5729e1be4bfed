//! Prompt to video. Models, samplers and media stay in their own crates; this crate only wires
//! them together in numbered phases.

mod request;

pub use request::{
    check_frames, check_size, check_strength, frames_for_seconds, GenerateRequest, OutputKind,
    RequestError, RequestSpec,
};
