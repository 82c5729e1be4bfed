//! Safety that ships with every video Tessera makes:
//!
//! - [`check_prompt`]: a prompt policy that refuses blocked categories before any compute,
//!   naming the category and the words that triggered it.
//! - [`Watermark`]: an invisible keyed pattern added to every output frame, and
//!   [`Watermark::detect`], which finds it again after lossy re-encoding with no access to the
//!   original.
//!
//! - [`review`]: an operator's command that looks at each output before it is published.
//! - [`SigningKey`] / [`verify`]: an Ed25519 signature over the provenance manifest, which
//!   names the hash of the picture data it describes.
//!
//! The manifest itself (what made a file, bound to its bytes) is written beside the frames by
//! `tessera-media`; `tessera detect` reports all of it.

mod policy;
mod review;
mod signing;
mod watermark;

pub use policy::{check_prompt, Blocked, Category};
pub use review::{review, ReviewError};
pub use signing::{verify, KeyError, SigningKey, Verified};
pub use watermark::{Detection, Watermark, CELL, MAX_CROP, SEARCH_THRESHOLD, THRESHOLD};
