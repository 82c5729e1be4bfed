//! Shapes world: seeded synthetic clips, captions and ground-truth tracks.
//!
//! A clip is a pure function of `(split, seed, index, size, frames, fps)`: a ChaCha stream keyed
//! by the first three draws a [`SceneDescription`] and a starting layout, continuous-time physics
//! ([`physics`]) moves it, an anti-aliased renderer draws it and measures what is visible, and
//! [`caption`] turns it into text. [`generate_clip`] returns one clip in memory (the trainer's
//! path); [`sample_dataset`] writes `videos/*.mp4`, `captions.jsonl` and `tracks.jsonl`.
//!
//! Splits are disjoint by construction (the split is part of the stream key), and the
//! colour × shape pairs in [`HELD_OUT`] appear only in `test` — every `test` clip has one:
//! green star, purple triangle, yellow ring, orange square, pink diamond. Every colour and every
//! shape still appears in `train`, only these pairings do not (compositional generalisation).
//!
//! Output files (one line per clip, in index order):
//! - `captions.jsonl`: [`CaptionRecord`] — `video`, `caption`, `short_caption`, `id`, `seed`,
//!   `index`, `split`, `width`, `height`, `frames`, `fps`.
//! - `tracks.jsonl`: [`TrackRecord`] — per object identity, per frame and object a
//!   [`TrackPoint`] (centre, bbox, visible fraction, angle; screen pixels), the events with frame
//!   indices, and the full [`SceneDescription`].

pub mod caption;
pub mod geometry;
pub mod physics;
pub mod render;
mod sample;
pub mod scene;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use caption::{
    dense_caption, parse_prompt, scene_caption_without_background, short_caption, Event,
    SceneDescription,
};
pub use sample::{
    generate_clip, render_clips, sample_dataset, sample_scene, CaptionRecord, Clip, ObjectInfo,
    Selection, Summary, TrackPoint, TrackRecord,
};
pub use scene::{is_held_out, HELD_OUT, MAX_OBJECTS};

/// Smallest frame side: below this the shapes are a few pixels and captions stop being true.
pub const MIN_SIDE: u32 = 16;
/// Largest frame side.
pub const MAX_SIDE: u32 = 4096;
/// Most frames in one clip (a minute at 16 fps is 961).
pub const MAX_FRAMES: u32 = 10_000;
/// Highest frame rate.
pub const MAX_FPS: f64 = 240.0;
/// Most bytes of raw frames one clip may hold in memory.
pub const MAX_CLIP_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot parse size {input:?}: expected WIDTHxHEIGHT in whole pixels, e.g. 64x64")]
    SizeSyntax { input: String },

    #[error("frame size {width}x{height} is out of range: each side must be {MIN_SIDE}..={MAX_SIDE} pixels")]
    Size { width: u64, height: u64 },

    #[error("MP4 (H.264, yuv420p) needs an even width and height, got {width}x{height}; use {even_width}x{even_height}")]
    OddSize {
        width: u32,
        height: u32,
        even_width: u32,
        even_height: u32,
    },

    #[error("frames must be in 1..={MAX_FRAMES}, got {frames}")]
    Frames { frames: u64 },

    #[error("fps must be a number in (0, {MAX_FPS}], got {fps}")]
    Fps { fps: f64 },

    #[error("a {width}x{height} clip of {frames} frames needs {bytes} bytes of frames, over the {MAX_CLIP_BYTES}-byte limit; use fewer frames or a smaller size")]
    TooLarge {
        width: u32,
        height: u32,
        frames: u32,
        bytes: u64,
    },

    #[error(
        "a scene holds 1..={MAX_OBJECTS} objects, so no clip has {objects}; pick one in that range"
    )]
    Objects { objects: usize },

    #[error("unknown split {input:?}: use train, val or test")]
    Split { input: String },

    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("clip {id}: MP4 encoding failed: {source}")]
    Encode {
        id: String,
        #[source]
        source: tessera_media::MediaError,
    },

    #[error("clip {id}: {source}")]
    Video {
        id: String,
        #[source]
        source: tessera_media::MediaError,
    },

    #[error("serialising {what} to JSON failed: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Dataset split. Each split draws from its own seed stream, so no clip repeats across splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Distinct tag mixed into every clip's stream key.
    fn tag(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
            Split::Test => 3,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = WorldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" | "testing" => Ok(Split::Test),
            _ => Err(WorldError::Split {
                input: s.to_string(),
            }),
        }
    }
}

/// Parses `"64x64"` (also `X` or `×`) into `(width, height)` and checks the range.
pub fn parse_size(s: &str) -> Result<(u32, u32), WorldError> {
    let syntax = || WorldError::SizeSyntax {
        input: s.to_string(),
    };
    let (w, h) = s.trim().split_once(['x', 'X', '×']).ok_or_else(syntax)?;
    let w: u64 = w.trim().parse().map_err(|_| syntax())?;
    let h: u64 = h.trim().parse().map_err(|_| syntax())?;
    check_size(w, h)?;
    Ok((w as u32, h as u32))
}

fn check_size(width: u64, height: u64) -> Result<(), WorldError> {
    let ok = |d: u64| (MIN_SIDE as u64..=MAX_SIDE as u64).contains(&d);
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(WorldError::Size { width, height })
    }
}

/// What to generate. `count` is only used by [`sample_dataset`] and [`render_clips`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    pub count: usize,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// Frames per second; physics runs in seconds, so fps changes sampling, not the motion.
    pub fps: f64,
    pub seed: u64,
    pub split: Split,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            count: 1,
            width: 64,
            height: 64,
            frames: 33,
            fps: 16.0,
            seed: 0,
            split: Split::Train,
        }
    }
}

impl SampleOptions {
    /// Checks size, frame count, fps and memory per clip.
    pub fn validate(&self) -> Result<(), WorldError> {
        check_size(self.width as u64, self.height as u64)?;
        if !(1..=MAX_FRAMES).contains(&self.frames) {
            return Err(WorldError::Frames {
                frames: self.frames as u64,
            });
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= MAX_FPS) {
            return Err(WorldError::Fps { fps: self.fps });
        }
        let bytes = self.width as u64 * self.height as u64 * 3 * self.frames as u64;
        if bytes > MAX_CLIP_BYTES {
            return Err(WorldError::TooLarge {
                width: self.width,
                height: self.height,
                frames: self.frames,
                bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_reject() {
        assert_eq!(parse_size("64x64").ok(), Some((64, 64)));
        assert_eq!(parse_size(" 320X176 ").ok(), Some((320, 176)));
        assert_eq!(parse_size("96×48").ok(), Some((96, 48)));
        for bad in ["64", "64x", "x64", "axb", "-1x64", "64x64x3", ""] {
            assert!(
                matches!(parse_size(bad), Err(WorldError::SizeSyntax { .. })),
                "{bad}"
            );
        }
        for bad in ["0x0", "100000x100000", "8x64", "64x5000"] {
            assert!(
                matches!(parse_size(bad), Err(WorldError::Size { .. })),
                "{bad}"
            );
        }
        let msg = parse_size("0x0")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("16..=4096"), "{msg}");
    }

    #[test]
    fn splits_parse() {
        assert_eq!("train".parse::<Split>().ok(), Some(Split::Train));
        assert_eq!("Validation".parse::<Split>().ok(), Some(Split::Val));
        assert_eq!("test".parse::<Split>().ok(), Some(Split::Test));
        assert!(matches!(
            "dev".parse::<Split>(),
            Err(WorldError::Split { .. })
        ));
    }

    #[test]
    fn options_validate() {
        let ok = SampleOptions::default();
        assert!(ok.validate().is_ok());
        let bad = |o: SampleOptions| o.validate().err();
        assert!(matches!(
            bad(SampleOptions { frames: 0, ..ok }),
            Some(WorldError::Frames { frames: 0 })
        ));
        assert!(matches!(
            bad(SampleOptions { fps: 0.0, ..ok }),
            Some(WorldError::Fps { .. })
        ));
        assert!(matches!(
            bad(SampleOptions {
                fps: f64::NAN,
                ..ok
            }),
            Some(WorldError::Fps { .. })
        ));
        assert!(matches!(
            bad(SampleOptions { width: 0, ..ok }),
            Some(WorldError::Size { .. })
        ));
        assert!(matches!(
            bad(SampleOptions {
                width: 4096,
                height: 4096,
                frames: 10_000,
                ..ok
            }),
            Some(WorldError::TooLarge { .. })
        ));
    }
}
