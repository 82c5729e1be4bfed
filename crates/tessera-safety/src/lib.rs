//! Safety that ships with every video Tessera makes:
//!
//! - [`check_prompt`]: a prompt policy that refuses blocked categories before any compute,
//!   naming the category and the words that triggered it.
//! - [`Watermark`]: an invisible keyed pattern added to every output frame, and
//!   [`Watermark::detect`], which finds it again after lossy re-encoding with no access to the
//!   original.
//!
//! Provenance metadata (what made a file, bound to its bytes) is written beside the frames by
//! `tessera-media`; `tessera detect` reports both.

mod policy;
mod watermark;

pub use policy::{check_prompt, Blocked, Category};
pub use watermark::{Detection, Watermark, CELL, THRESHOLD};
