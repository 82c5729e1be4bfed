//! Where training clips come from. A [`ClipSource`] hands out RGB8 clips of a requested length;
//! trainers turn them into tensors. Sources draw only from the RNG they are given, so a step's
//! batch is a pure function of the step's RNG (exact resume).

use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tessera_media::Video;

use crate::{io_err, Result, TrainError};

pub trait ClipSource {
    /// A clip of exactly `frames` frames, `size`×`size` pixels.
    fn sample(&mut self, rng: &mut ChaCha8Rng, frames: usize) -> Result<Video>;
    /// [`sample`](Self::sample) with where the clip's objects are, where the source knows:
    /// per frame, one byte a pixel, 1 on or next to an object's box and 0 elsewhere.
    fn sample_with_objects(
        &mut self,
        rng: &mut ChaCha8Rng,
        frames: usize,
    ) -> Result<(Video, Option<Vec<Vec<u8>>>)> {
        Ok((self.sample(rng, frames)?, None))
    }
    /// Frame side in pixels.
    fn size(&self) -> usize;
}

/// A folder of videos (MP4/GIF/…; `captions.jsonl` and other files are ignored), all loaded
/// into memory and fitted to `size`×`size` (centre crop + resize). Clips are random windows.
pub struct FolderSource {
    videos: Vec<Video>,
    size: usize,
}

const VIDEO_EXTS: [&str; 4] = ["mp4", "gif", "mov", "mkv"];

impl FolderSource {
    pub fn open(dir: &Path, size: usize, min_frames: usize) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| VIDEO_EXTS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        paths.sort();
        let mut videos = Vec::new();
        for p in &paths {
            let v = tessera_media::read_video(p)?;
            if v.frames.len() < min_frames {
                continue;
            }
            let side = v.width.min(v.height);
            let v = tessera_media::center_crop(&v, side, side)?;
            let v = if side as usize != size {
                tessera_media::resize(&v, size as u32, size as u32)?
            } else {
                v
            };
            videos.push(v);
        }
        if videos.is_empty() {
            return Err(TrainError::Data(format!(
                "{}: no videos with at least {min_frames} frames (looked for {:?})",
                dir.display(),
                VIDEO_EXTS
            )));
        }
        Ok(Self { videos, size })
    }

    pub fn len(&self) -> usize {
        self.videos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.videos.is_empty()
    }

    /// The first `frames` frames of video `i` (deterministic, for evaluation).
    pub fn head(&self, i: usize, frames: usize) -> Option<Video> {
        let v = self.videos.get(i)?;
        if v.frames.len() < frames {
            return None;
        }
        let mut out = Video::new(v.width, v.height, v.fps);
        out.frames = v.frames[..frames].to_vec();
        Some(out)
    }
}

impl ClipSource for FolderSource {
    fn sample(&mut self, rng: &mut ChaCha8Rng, frames: usize) -> Result<Video> {
        let candidates: Vec<&Video> = self
            .videos
            .iter()
            .filter(|v| v.frames.len() >= frames)
            .collect();
        if candidates.is_empty() {
            return Err(TrainError::Data(format!(
                "no video has {frames} frames; use shorter clip lengths"
            )));
        }
        let v = candidates[rng.random_range(0..candidates.len())];
        let start = rng.random_range(0..=v.frames.len() - frames);
        let mut out = Video::new(v.width, v.height, v.fps);
        out.frames = v.frames[start..start + frames].to_vec();
        Ok(out)
    }

    fn size(&self) -> usize {
        self.size
    }
}

/// The shapes world, generated on the fly: every sample is a fresh clip (index drawn from the
/// RNG), so the data never repeats.
pub struct WorldSource {
    opts: tessera_world::SampleOptions,
}

impl WorldSource {
    pub fn new(size: usize, seed: u64, split: tessera_world::Split) -> Self {
        Self {
            opts: tessera_world::SampleOptions {
                width: size as u32,
                height: size as u32,
                seed,
                split,
                ..Default::default()
            },
        }
    }

    /// Clip `index` with `frames` frames (deterministic, for evaluation sets).
    pub fn clip(&self, index: u64, frames: usize) -> Result<Video> {
        self.world_clip(index, frames).map(|c| c.video)
    }

    /// [`clip`](Self::clip) with everything the world knows about it (tracks, captions).
    pub fn world_clip(&self, index: u64, frames: usize) -> Result<tessera_world::Clip> {
        let opts = tessera_world::SampleOptions {
            frames: frames as u32,
            ..self.opts
        };
        tessera_world::generate_clip(&opts, index)
            .map_err(|e| TrainError::Data(format!("shapes world: {e}")))
    }
}

/// Index space far beyond any run: fresh clips, reproducible from the step RNG.
fn fresh_index(rng: &mut ChaCha8Rng) -> u64 {
    rng.random_range(0..1u64 << 40)
}

/// Per frame, 1 inside any object's box grown by a pixel (its anti-aliased rim), else 0. A box,
/// not the object's own pixels: its corners are where a circle and a square differ.
pub fn object_boxes(clip: &tessera_world::Clip) -> Vec<Vec<u8>> {
    let (w, h) = (clip.video.width as i64, clip.video.height as i64);
    clip.tracks
        .iter()
        .map(|objects| {
            let mut mask = vec![0u8; (w * h) as usize];
            for p in objects.iter().filter(|p| p.visible > 0.0) {
                let [x0, y0, x1, y1] = p.bbox;
                let (x0, y0) = (
                    (x0.floor() as i64 - 1).max(0),
                    (y0.floor() as i64 - 1).max(0),
                );
                let (x1, y1) = ((x1.ceil() as i64 + 1).min(w), (y1.ceil() as i64 + 1).min(h));
                for y in y0..y1 {
                    for x in x0..x1 {
                        mask[(y * w + x) as usize] = 1;
                    }
                }
            }
            mask
        })
        .collect()
}

impl ClipSource for WorldSource {
    fn sample(&mut self, rng: &mut ChaCha8Rng, frames: usize) -> Result<Video> {
        self.clip(fresh_index(rng), frames)
    }

    fn sample_with_objects(
        &mut self,
        rng: &mut ChaCha8Rng,
        frames: usize,
    ) -> Result<(Video, Option<Vec<Vec<u8>>>)> {
        let clip = self.world_clip(fresh_index(rng), frames)?;
        let boxes = object_boxes(&clip);
        Ok((clip.video, Some(boxes)))
    }

    fn size(&self) -> usize {
        self.opts.width as usize
    }
}

/// A `[x0, y0, width, height]` window of a `w`×`h` frame.
pub type Window = [usize; 4];

/// Random `crop`×`crop` window of a clip (same window for every frame), and the window, so a
/// per-pixel mask of the clip can be cut to match ([`crop_planes`]).
pub fn random_crop(v: &Video, crop: usize, rng: &mut ChaCha8Rng) -> (Video, Window) {
    let (w, h) = (v.width as usize, v.height as usize);
    if crop >= w && crop >= h {
        return (v.clone(), [0, 0, w, h]);
    }
    let (cw, ch) = (crop.min(w), crop.min(h));
    let x0 = rng.random_range(0..=w - cw);
    let y0 = rng.random_range(0..=h - ch);
    let window = [x0, y0, cw, ch];
    let mut out = Video::new(cw as u32, ch as u32, v.fps);
    out.frames = crop_planes(&v.frames, w, 3, window);
    (out, window)
}

/// `window` of frames `w` pixels wide with `channels` bytes a pixel.
pub fn crop_planes(frames: &[Vec<u8>], w: usize, channels: usize, window: Window) -> Vec<Vec<u8>> {
    let [x0, y0, cw, ch] = window;
    frames
        .iter()
        .map(|f| {
            let mut nf = Vec::with_capacity(cw * ch * channels);
            for y in y0..y0 + ch {
                nf.extend_from_slice(&f[(y * w + x0) * channels..(y * w + x0 + cw) * channels]);
            }
            nf
        })
        .collect()
}
