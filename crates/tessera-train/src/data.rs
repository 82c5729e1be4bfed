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
        let opts = tessera_world::SampleOptions {
            frames: frames as u32,
            ..self.opts
        };
        tessera_world::generate_clip(&opts, index)
            .map(|c| c.video)
            .map_err(|e| TrainError::Data(format!("shapes world: {e}")))
    }
}

impl ClipSource for WorldSource {
    fn sample(&mut self, rng: &mut ChaCha8Rng, frames: usize) -> Result<Video> {
        // Index space far beyond any run: fresh clips, reproducible from the step RNG.
        let index = rng.random_range(0..1u64 << 40);
        self.clip(index, frames)
    }

    fn size(&self) -> usize {
        self.opts.width as usize
    }
}

/// Random `crop`×`crop` window of a clip (same window for every frame).
pub fn random_crop(v: &Video, crop: usize, rng: &mut ChaCha8Rng) -> Video {
    let (w, h) = (v.width as usize, v.height as usize);
    if crop >= w && crop >= h {
        return v.clone();
    }
    let (cw, ch) = (crop.min(w), crop.min(h));
    let x0 = rng.random_range(0..=w - cw);
    let y0 = rng.random_range(0..=h - ch);
    let mut out = Video::new(cw as u32, ch as u32, v.fps);
    for f in &v.frames {
        let mut nf = Vec::with_capacity(cw * ch * 3);
        for y in y0..y0 + ch {
            nf.extend_from_slice(&f[(y * w + x0) * 3..(y * w + x0 + cw) * 3]);
        }
        out.frames.push(nf);
    }
    out
}
