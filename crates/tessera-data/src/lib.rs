//! Datasets on disk: a folder of videos plus `captions.jsonl`, streamed as fixed-shape clips.
//!
//! The layout is what `tessera world sample` writes and what a user can make by hand:
//!
//! ```text
//! DIR/captions.jsonl   {"video": "videos/a.mp4", "caption": "...", "short_caption": "..."}
//! DIR/videos/a.mp4     any format tessera-media reads (MP4/H.264, GIF, PNG/JPEG, frame folders)
//! ```
//!
//! [`Dataset::open`] reads and checks the whole index up front: a malformed line is reported with
//! its line number, and every referenced video must exist (a cheap `stat`, so a typo fails at
//! once rather than hours into training). Videos are decoded lazily, one at a time, by the
//! [`Clips`] iterator, so memory holds a single video whatever the dataset size.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tessera_media::{MediaError, Video};

/// Name of the index file inside a dataset folder.
pub const CAPTIONS_FILE: &str = "captions.jsonl";
/// Most frames one sample may have.
pub const MAX_FRAMES: u32 = 4097;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: captions file not found; a dataset folder needs {CAPTIONS_FILE} with one JSON object per line, e.g. {{\"video\": \"videos/a.mp4\", \"caption\": \"a red ball bounces\"}} (`tessera world sample --out DIR` writes one)")]
    MissingCaptions { path: PathBuf },

    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: line {line} is not valid: {detail}; each line must be a JSON object with string fields \"video\" and \"caption\"")]
    BadLine {
        path: PathBuf,
        line: usize,
        detail: String,
    },

    #[error("{video}: video named on line {line} of {captions} does not exist; fix the path (it is relative to the dataset folder) or remove the line")]
    MissingVideo {
        video: PathBuf,
        captions: PathBuf,
        line: usize,
    },

    #[error("{path}: no clips listed; add lines like {{\"video\": \"videos/a.mp4\", \"caption\": \"...\"}}")]
    Empty { path: PathBuf },

    #[error("frames must be 4k+1 (1, 5, 9, ..., 33, ..., {MAX_FRAMES}) because the video autoencoder compresses time 4x after the first frame; got {frames}, use {below} or {above}")]
    Frames { frames: u32, below: u32, above: u32 },

    #[error("clip {index} requested but the dataset has {len}; use an index below {len}")]
    Index { index: usize, len: usize },

    #[error("clip size or rate rejected: {source}")]
    Spec {
        #[source]
        source: MediaError,
    },

    #[error("{video}: cannot load clip from line {line}: {source}")]
    Media {
        video: PathBuf,
        line: usize,
        #[source]
        source: MediaError,
    },
}

/// One line of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Absolute or dataset-relative path resolved against the dataset folder.
    pub video: PathBuf,
    pub caption: String,
    /// Falls back to `caption` when the line has none.
    pub short_caption: String,
    /// 1-based line number in `captions.jsonl`, for error messages.
    pub line: usize,
}

#[derive(Deserialize)]
struct Line {
    video: String,
    caption: String,
    #[serde(default)]
    short_caption: Option<String>,
}

/// An opened dataset: the parsed index; videos stay on disk until iterated.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    entries: Vec<Entry>,
}

impl Dataset {
    /// Reads `dir/captions.jsonl`, checks every line and that every referenced video exists.
    /// Blank lines are skipped; unknown fields are ignored.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = dir.as_ref().to_path_buf();
        let path = root.join(CAPTIONS_FILE);
        let text = fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::MissingCaptions { path: path.clone() }
            } else {
                DataError::Io {
                    path: path.clone(),
                    action: "read",
                    source,
                }
            }
        })?;
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(raw).map_err(|e| DataError::BadLine {
                path: path.clone(),
                line,
                detail: e.to_string(),
            })?;
            let video = root.join(&parsed.video);
            if !video.exists() {
                return Err(DataError::MissingVideo {
                    video,
                    captions: path.clone(),
                    line,
                });
            }
            entries.push(Entry {
                video,
                short_caption: parsed
                    .short_caption
                    .unwrap_or_else(|| parsed.caption.clone()),
                caption: parsed.caption,
                line,
            });
        }
        if entries.is_empty() {
            return Err(DataError::Empty { path });
        }
        Ok(Self { root, entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Loads entry `index` as a clip of `spec`'s shape.
    pub fn load(&self, index: usize, spec: &ClipSpec) -> Result<Sample, DataError> {
        let entry = self.entries.get(index).ok_or(DataError::Index {
            index,
            len: self.entries.len(),
        })?;
        let media = |source| DataError::Media {
            video: entry.video.clone(),
            line: entry.line,
            source,
        };
        let video = tessera_media::read_video(&entry.video).map_err(media)?;
        let timed = tessera_media::resample_fps(&video, spec.fps).map_err(media)?;
        let window = select_window(timed, spec, index as u64);
        let frames =
            tessera_media::fit(&window, spec.width, spec.height, spec.fps).map_err(media)?;
        Ok(Sample {
            frames,
            caption: entry.caption.clone(),
            short_caption: entry.short_caption.clone(),
            video: entry.video.clone(),
            index,
        })
    }

    /// Streams every entry, in order, as a clip of `spec`'s shape. The spec is checked first.
    pub fn clips<'a>(&'a self, spec: &ClipSpec) -> Result<Clips<'a>, DataError> {
        spec.validate()?;
        Ok(Clips {
            dataset: self,
            spec: *spec,
            next: 0,
        })
    }
}

/// Which frames of a longer video a sample takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// The first `frames` frames.
    #[default]
    Start,
    /// A window at an offset drawn from `(seed, entry index)`: the same seed gives the same
    /// windows, a new seed (e.g. the epoch) new ones.
    Random { seed: u64 },
}

/// What to do with a video shorter than the requested length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShortClip {
    /// Repeat the last frame: the scene holds still, no jump.
    #[default]
    HoldLast,
    /// Start again from the first frame (for clips that loop seamlessly).
    Loop,
}

/// The shape every sample is brought to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipSpec {
    /// Must be `4k + 1`.
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    /// Videos are resampled to this rate (nearest frame) before the window is taken.
    pub fps: f64,
    pub window: Window,
    pub short: ShortClip,
}

impl ClipSpec {
    pub fn new(frames: u32, width: u32, height: u32, fps: f64) -> Self {
        Self {
            frames,
            width,
            height,
            fps,
            window: Window::Start,
            short: ShortClip::HoldLast,
        }
    }

    pub fn validate(&self) -> Result<(), DataError> {
        if self.frames % 4 != 1 || self.frames > MAX_FRAMES {
            let f = self.frames.min(MAX_FRAMES);
            let below = if f >= 1 { (f - 1) / 4 * 4 + 1 } else { 1 };
            let above = if below >= f { below } else { below + 4 };
            return Err(DataError::Frames {
                frames: self.frames,
                below,
                above: above.min(MAX_FRAMES),
            });
        }
        tessera_media::check_size(self.width as u64, self.height as u64)
            .and_then(|()| tessera_media::check_fps(self.fps))
            .map_err(|source| DataError::Spec { source })
    }
}

/// One clip ready for a model: exactly `spec.frames` frames of `spec.width`×`spec.height`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub frames: Video,
    pub caption: String,
    pub short_caption: String,
    pub video: PathBuf,
    /// Entry index in the dataset.
    pub index: usize,
}

/// Streaming iterator over a dataset's clips; decodes one video per `next()`.
#[derive(Debug)]
pub struct Clips<'a> {
    dataset: &'a Dataset,
    spec: ClipSpec,
    next: usize,
}

impl Iterator for Clips<'_> {
    type Item = Result<Sample, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.dataset.len() {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some(self.dataset.load(i, &self.spec))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.dataset.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Clips<'_> {}

/// SplitMix64: a well-mixed hash of the window seed and entry index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cuts (or extends) `video` to exactly `spec.frames` frames. `video` has at least one frame.
fn select_window(mut video: Video, spec: &ClipSpec, index: u64) -> Video {
    let want = spec.frames as usize;
    let have = video.frames.len();
    if have >= want {
        let start = match spec.window {
            Window::Start => 0,
            Window::Random { seed } => (mix(seed ^ mix(index)) % (have - want + 1) as u64) as usize,
        };
        video.frames.drain(..start);
        video.frames.truncate(want);
    } else {
        let original = video.frames.len();
        for k in original..want {
            let src = match spec.short {
                ShortClip::HoldLast => original - 1,
                ShortClip::Loop => k % original,
            };
            let frame = video.frames[src].clone();
            video.frames.push(frame);
        }
    }
    video
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(n: usize) -> Video {
        Video {
            width: 2,
            height: 2,
            fps: 8.0,
            frames: (0..n).map(|i| vec![i as u8; 12]).collect(),
        }
    }

    fn firsts(v: &Video) -> Vec<u8> {
        v.frames.iter().map(|f| f[0]).collect()
    }

    #[test]
    fn frames_must_be_4k_plus_1() {
        for ok in [1, 5, 33, 961] {
            assert!(ClipSpec::new(ok, 64, 64, 16.0).validate().is_ok(), "{ok}");
        }
        let err = ClipSpec::new(32, 64, 64, 16.0).validate().err();
        assert!(matches!(
            err,
            Some(DataError::Frames {
                frames: 32,
                below: 29,
                above: 33
            })
        ));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("4k+1") && msg.contains("29 or 33"), "{msg}");
        assert!(matches!(
            ClipSpec::new(0, 64, 64, 16.0).validate(),
            Err(DataError::Frames {
                below: 1,
                above: 1,
                ..
            })
        ));
        assert!(matches!(
            ClipSpec::new(5, 0, 64, 16.0).validate(),
            Err(DataError::Spec { .. })
        ));
        assert!(matches!(
            ClipSpec::new(5, 64, 64, -1.0).validate(),
            Err(DataError::Spec { .. })
        ));
    }

    #[test]
    fn windows_pad_and_loop() {
        let spec = ClipSpec::new(5, 2, 2, 8.0);
        assert_eq!(
            firsts(&select_window(counter(9), &spec, 0)),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            firsts(&select_window(counter(3), &spec, 0)),
            [0, 1, 2, 2, 2]
        );
        let looped = ClipSpec {
            short: ShortClip::Loop,
            ..spec
        };
        assert_eq!(
            firsts(&select_window(counter(3), &looped, 0)),
            [0, 1, 2, 0, 1]
        );
        let random = ClipSpec {
            window: Window::Random { seed: 4 },
            ..spec
        };
        let starts: Vec<u8> = (0..40)
            .map(|i| firsts(&select_window(counter(20), &random, i))[0])
            .collect();
        // Deterministic, contiguous windows that stay inside the clip and vary in offset.
        assert_eq!(
            starts,
            (0..40)
                .map(|i| firsts(&select_window(counter(20), &random, i))[0])
                .collect::<Vec<_>>()
        );
        assert!(starts.iter().all(|&s| s <= 15));
        assert!(
            starts
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 5
        );
        let w = select_window(counter(20), &random, 3);
        let f = firsts(&w);
        assert!(f.windows(2).all(|p| p[1] == p[0] + 1));
    }
}
