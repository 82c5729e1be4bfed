//! Generation in numbered phases (as diffusers' `pipeline_wan.py`): 1. inputs, 2. prompt,
//! 3. text encoding, 4. latent noise and known frames, 5. denoising with guidance, 6. streamed
//! decode, 7. frame hook, 8. writer.
//!
//! Every mode is one mechanism: a window of latent frames, some known (clean, t = 0, from an
//! encoded "conditioning clip"), the rest sampled. `c` = [`CONTEXT_LATENTS`]:
//!
//! | mode            | conditioning clip (frames)                  | output                          |
//! |-----------------|---------------------------------------------|---------------------------------|
//! | text            | none                                        | decoded window                  |
//! | image           | the image (1)                               | decoded window                  |
//! | extend forward  | input tail (f(c−1)+1)                       | input ++ new decoded frames     |
//! | extend backward | placeholder ++ input head (fc)              | new decoded frames ++ input     |
//! | connect         | A tail ++ placeholder ++ B head             | A ++ transition ++ B            |
//! | loop            | base tail ++ placeholder ++ base head       | base ++ transition (→ base[0])  |
//! | edit            | none; starts from the input noised (SDEdit) | decoded window                  |
//!
//! The conditioning clip is encoded as one clip, so known latents carry the causal context they
//! had in training; placeholders (a blend of the neighbouring given frames) only feed that
//! context and are never kept. Given frames are written as given, not as their VAE round trip.
//!
//! `f` is the VAE's temporal factor (Wan: 4; one latent frame holds `f` frames after the first).
//!
//! Long videos run in windows: each later window is a forward extension of the frames written
//! so far, conditioned on their last `f(c−1)+1` frames. Those frames are held back from the
//! writer until the next window has decoded its own version of them, and written as a crossfade
//! from one to the other: a VAE round trip is not exact, so a hard cut there would show as a
//! jump. Decoding streams one latent frame at a time into the writer, so memory does not grow
//! with the length.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::Rng;
use serde::Serialize;
use tessera_diffusion::{cfg_input, sample, sdedit_start, KnownFrames};
use tessera_media::{Video, VideoWriter};
use tessera_models::vae::{tensor_to_video, video_to_tensor, DecodeStream, Tiling};
use tessera_safety::Watermark;

use crate::error::{PipelineError, Result};
use crate::model::Model;
use crate::noise;
use crate::prompt::{extend_prompt, extend_prompt_via, keep_prompt, ExtendedPrompt};
use crate::request::{GenerateRequest, Mode, RequestError};

/// Known latent frames a window is conditioned on: `f(c−1)+1` frames before new content, or
/// `fc` after it. Two latents (5 frames before, 8 after at Wan's `f` = 4) carry position and
/// velocity.
pub const CONTEXT_LATENTS: usize = 2;

/// Noise stream of window `i`'s initial latents; SDEdit uses the same stream as window 0.
const WINDOW_STREAM: u64 = 0x100;

/// Stream of the fresh noise a stochastic sampler draws in window `i`.
const SAMPLER_STREAM: u64 = 0x200;

/// What the pipeline reports while it runs. Return `ControlFlow::Break` from the callback to
/// cancel: nothing is written.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A model evaluation finished: `evaluation` of `evaluations` in window `window` of `windows`.
    Step {
        window: usize,
        windows: usize,
        evaluation: usize,
        evaluations: usize,
    },
    /// `written` of `total` output frames are in the writer.
    Frames { written: usize, total: usize },
}

/// Sees every output frame just before it is written, in order; may change pixels (the place
/// for the invisible watermark) but not the size. The default does nothing.
pub trait FrameHook: Send {
    /// `rgb` is `height × width × 3` bytes of frame `index`.
    fn frame(&mut self, index: usize, width: u32, height: u32, rgb: &mut [u8]) -> Result<()>;
}

/// The hook that leaves frames untouched.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHook;

impl FrameHook for NoHook {
    fn frame(&mut self, _: usize, _: u32, _: u32, _: &mut [u8]) -> Result<()> {
        Ok(())
    }
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub prompt_s: f64,
    pub text_s: f64,
    /// Denoising (all windows).
    pub sample_s: f64,
    /// VAE encode of inputs, decode, hook and writing.
    pub decode_s: f64,
    pub total_s: f64,
}

/// What was made: the machine-readable summary (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub model: String,
    pub mode: &'static str,
    pub seed: u64,
    pub prompt: String,
    /// The prompt the text encoder saw, who wrote it, and unknown words.
    pub prompt_used: ExtendedPrompt,
    pub negative: String,
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub steps: usize,
    pub sampler: &'static str,
    pub cfg: f64,
    /// Noise levels where guidance applied.
    pub cfg_interval: (f64, f64),
    /// Guidance rule, `cfg` or `apg`.
    pub guidance: &'static str,
    pub windows: usize,
    /// Adjustments made to inputs (resizing, trimming) and other remarks.
    pub notes: Vec<String>,
    pub timings: Timings,
}

/// Generates what `req` asks for with `model`, writing `req.output`.
///
/// Deterministic: the same model, request and inputs give the same frames. `progress` is called
/// after each model evaluation and each written frame; `hook` sees every frame before writing.
pub fn generate(
    model: &Model,
    req: &GenerateRequest,
    hook: &mut dyn FrameHook,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Summary> {
    let start = Instant::now();
    if req.window_frames % 4 != 1 || req.window_frames < 9 {
        return Err(RequestError::Window(req.window_frames).into());
    }
    let mut timings = Timings::default();
    let mut notes = Vec::new();

    // 1. Inputs: read and fitted to the request before any model work.
    let tf = model.vae.config().temporal_factor();
    let inputs = Inputs::read(req, tf, &mut notes)?;

    // 2. Prompt extension.
    let t = Instant::now();
    let frames_given = !matches!(req.mode, Mode::Text | Mode::Loop);
    let prompt_used = if !req.extend_prompt {
        keep_prompt(&req.prompt)
    } else if let Some(url) = &req.prompt_endpoint {
        extend_prompt_via(&req.prompt, req.seed, url, frames_given)
    } else {
        extend_prompt(&req.prompt, req.seed, frames_given)
    };
    if let Some(reason) = &prompt_used.fallback_reason {
        notes.push(format!(
            "prompt endpoint failed ({reason}); used the built-in expander"
        ));
    }
    // An endpoint may have written words the user did not.
    tessera_safety::check_prompt(&prompt_used.text).map_err(RequestError::Policy)?;
    timings.prompt_s = t.elapsed().as_secs_f64();

    // 3. Text encoding: [cond; uncond] in one batch when guidance is on.
    let t = Instant::now();
    let guided = req.cfg != 1.0;
    let texts: Vec<&str> = if guided {
        vec![&prompt_used.text, &req.negative]
    } else {
        vec![&prompt_used.text]
    };
    let emb = model.text.encode(&texts)?;
    timings.text_s = t.elapsed().as_secs_f64();

    let mut run = Run {
        model,
        req,
        text: emb.states,
        text_mask: emb.mask,
        guided,
        progress,
        timings,
        windows: 0,
        planned_windows: 1,
        window_index: 0,
        tf,
    };
    let total = inputs.output_frames(req);
    // Under review, the file is written beside the output and published only if it passes.
    let staged = req.review.as_ref().map(|_| staging_path(&req.output));
    let mut sink = Sink::create(req, staged.as_deref().unwrap_or(&req.output), total, hook)?;

    // 4–8 per mode.
    match (&req.mode, inputs) {
        (Mode::Text, _) => run.long_video(&mut sink, None, req.frames)?,
        (Mode::Image { .. }, Inputs::Image(img)) => {
            run.long_video(&mut sink, Some(img), req.frames)?
        }
        (Mode::Loop, _) => run.looped(&mut sink)?,
        (
            Mode::Extend {
                backward: false, ..
            },
            Inputs::One(v),
        ) => {
            run.planned_windows = windows_for_continuation(req.frames, req.window_frames, run.tf);
            let tail = last_frames(&v.frames, run.head_context());
            sink.push_given(&v.frames, &mut run)?;
            run.continue_forward(&mut sink, tail, Vec::new(), req.frames)?;
        }
        (Mode::Extend { backward: true, .. }, Inputs::One(v)) => run.backward(&mut sink, &v)?,
        (Mode::Connect { .. }, Inputs::Two(a, b)) => {
            run.connect(&mut sink, &a.frames, &b.frames, req.frames)?
        }
        (Mode::Edit { strength, .. }, Inputs::One(v)) => run.edit(&mut sink, &v, *strength)?,
        _ => {
            return Err(PipelineError::Input {
                path: req.output.clone(),
                detail: "mode and inputs disagree (internal)".into(),
            })
        }
    }
    let mut manifest = manifest(model, req, &prompt_used);
    if let Some(hash) = sink.writer.content_sha256() {
        manifest["content_sha256"] = hash.into();
    }
    if let Some(key) = &req.signing_key {
        key.sign(&mut manifest);
    }
    sink.writer
        .set_provenance(manifest.to_string().into_bytes());
    let frames = sink.finish()?;
    if let (Some(command), Some(staged)) = (&req.review, &staged) {
        publish_after_review(command, staged, req)?;
    }
    let mut timings = run.timings;
    timings.total_s = start.elapsed().as_secs_f64();
    Ok(Summary {
        output: req.output.clone(),
        model: model.name.clone(),
        mode: req.mode.name(),
        seed: req.seed,
        prompt: req.prompt.clone(),
        prompt_used,
        negative: req.negative.clone(),
        frames,
        width: req.width,
        height: req.height,
        fps: req.fps,
        steps: req.steps,
        sampler: req.sampler.name(),
        cfg: req.cfg,
        cfg_interval: req.cfg_interval,
        guidance: req.guidance.name(),
        windows: run.windows,
        notes,
        timings,
    })
}

/// The provenance manifest stored in MP4 and PNG outputs, C2PA-style: an action saying the video was
/// created by a trained model (IPTC's `trainedAlgorithmicMedia`), what made it, and whether
/// it carries the watermark; `generate` adds the hash of the picture data it describes and,
/// with a key, a signature over all of it. No timestamp, so the same request writes the same
/// bytes.
fn manifest(
    model: &Model,
    req: &GenerateRequest,
    prompt_used: &ExtendedPrompt,
) -> serde_json::Value {
    let agent = concat!("tessera ", env!("CARGO_PKG_VERSION"));
    serde_json::json!({
        "claim_generator": agent,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "softwareAgent": agent,
                "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
            }]}},
            {"label": "tessera.generation", "data": {
                "model": model.name,
                "mode": req.mode.name(),
                "prompt": req.prompt,
                "prompt_used": prompt_used.text,
                "negative": req.negative,
                "seed": req.seed,
                "steps": req.steps,
                "sampler": req.sampler.name(),
                "eta": req.eta,
                "eta_until": req.eta_until,
                "image_first": req.image_first,
                "shift": req.shift,
                "cfg": req.cfg,
                "cfg_interval": req.cfg_interval,
                "guidance": req.guidance.name(),
                "width": req.width,
                "height": req.height,
                "fps": req.fps,
            }},
            {"label": "tessera.watermark", "data": {"embedded": req.watermark, "cell": tessera_safety::CELL}},
        ],
    })
}

/// `.tessera-review-NAME` beside `output`: same folder (so publishing is a rename) and same
/// extension (so the reviewer sees what kind of file it is).
fn staging_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".tessera-review-{name}"))
}

/// Runs the review on the staged file; renames it to the output if it passes, deletes it if
/// not.
fn publish_after_review(command: &str, staged: &Path, req: &GenerateRequest) -> Result<()> {
    let verdict = tessera_safety::review(command, staged, &req.prompt);
    if let Err(e) = verdict {
        let _ = std::fs::remove_file(staged).or_else(|_| std::fs::remove_dir_all(staged));
        return Err(e.into());
    }
    std::fs::rename(staged, &req.output).map_err(|e| PipelineError::Input {
        path: req.output.clone(),
        detail: format!("publishing the reviewed output: {e}"),
    })
}

// ───────────────────────────── inputs ─────────────────────────────

/// Input media, already at the request's size and frame rate.
enum Inputs {
    None,
    Image(Vec<u8>),
    One(Video),
    Two(Video, Video),
}

/// Reads `path` and brings it to `w × h` at `fps` (cover-scale + centre crop), noting changes.
fn read_fitted(path: &Path, req: &GenerateRequest, notes: &mut Vec<String>) -> Result<Video> {
    let v = tessera_media::read_video(path)?;
    if v.frames.is_empty() {
        return Err(PipelineError::Input {
            path: path.to_path_buf(),
            detail: "no frames".into(),
        });
    }
    if (v.width, v.height) != (req.width, req.height) {
        let note = format!(
            "{} is {}x{}; resized and centre-cropped to {}x{}",
            path.display(),
            v.width,
            v.height,
            req.width,
            req.height
        );
        tracing::warn!("{note}");
        notes.push(note);
    }
    if v.frames.len() > 1 && (v.fps - req.fps).abs() > 1e-6 {
        notes.push(format!(
            "{} runs at {} fps; resampled to {} fps",
            path.display(),
            v.fps,
            req.fps
        ));
    }
    let fps = if v.frames.len() > 1 { req.fps } else { v.fps };
    let mut out = tessera_media::fit(&v, req.width, req.height, fps)?;
    out.fps = req.fps;
    Ok(out)
}

impl Inputs {
    /// `tf`: the VAE's temporal factor (an edited clip is trimmed to `tf·k + 1` frames).
    fn read(req: &GenerateRequest, tf: usize, notes: &mut Vec<String>) -> Result<Self> {
        Ok(match &req.mode {
            Mode::Text | Mode::Loop => Inputs::None,
            Mode::Image { image } => {
                let v =
                    tessera_media::read_video(image).map_err(|e| PipelineError::NotAnImage {
                        path: image.clone(),
                        detail: e.to_string(),
                    })?;
                if v.frames.len() != 1 {
                    notes.push(format!(
                        "{} has {} frames; its first is the image",
                        image.display(),
                        v.frames.len()
                    ));
                }
                let mut v = read_fitted(image, req, notes)?;
                Inputs::Image(v.frames.swap_remove(0))
            }
            Mode::Extend { input, .. } => Inputs::One(read_fitted(input, req, notes)?),
            Mode::Connect { a, b } => {
                Inputs::Two(read_fitted(a, req, notes)?, read_fitted(b, req, notes)?)
            }
            Mode::Edit { input, .. } => {
                let mut v = read_fitted(input, req, notes)?;
                let keep = (v.frames.len() - 1) / tf * tf + 1;
                if keep != v.frames.len() {
                    notes.push(format!(
                        "{} has {} frames; edited the first {keep} (the VAE needs {tf}k+1)",
                        input.display(),
                        v.frames.len()
                    ));
                    v.frames.truncate(keep);
                }
                Inputs::One(v)
            }
        })
    }

    fn output_frames(&self, req: &GenerateRequest) -> usize {
        match self {
            Inputs::One(v) if matches!(req.mode, Mode::Edit { .. }) => v.frames.len(),
            Inputs::One(v) => v.frames.len() + req.frames,
            Inputs::Two(a, b) => a.frames.len() + req.frames + b.frames.len(),
            Inputs::None | Inputs::Image(_) => req.frames,
        }
    }
}

/// RGB8 frames of the request's size.
type Frames = Vec<Vec<u8>>;

/// Known frames for a window of `known.len()` latent frames: `z`'s frames first, zero padded.
fn known_latents(z: Tensor, known: Vec<bool>) -> Result<KnownFrames> {
    let (b, c, t, h, w) = z.dims5()?;
    let z = if t < known.len() {
        let pad = Tensor::zeros((b, c, known.len() - t, h, w), z.dtype(), z.device())?;
        Tensor::cat(&[&z, &pad], 2)?
    } else {
        z
    };
    Ok(KnownFrames::new(z, known)?)
}

fn last_frames(frames: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    frames[frames.len().saturating_sub(n)..].to_vec()
}

/// Windows needed to add `new` frames by forward extension with `window` frames per window,
/// `tf` frames per latent.
fn windows_for_continuation(new: usize, window: usize, tf: usize) -> usize {
    let per = (window - 1) / tf + 1 - CONTEXT_LATENTS;
    (new / tf).div_ceil(per)
}

/// Exactly `n` frames from `given`: missing leading frames repeat its first frame (for
/// conditioning segments of inputs shorter than the context).
fn pad_front(given: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    let given = &given[given.len().saturating_sub(n)..];
    let mut out = vec![given[0].clone(); n - given.len()];
    out.extend_from_slice(given);
    out
}

/// Exactly `n` frames from the start of `given`, repeating its last frame if it is shorter.
fn pad_back(given: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = given.iter().take(n).cloned().collect();
    let last = out.last().cloned().unwrap_or_default();
    out.resize(n, last);
    out
}

/// `n` frames fading linearly from `a` to `b` (placeholders between two given segments).
fn blend(a: &[u8], b: &[u8], n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let w = (i + 1) as f32 / (n + 1) as f32;
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as f32 * (1.0 - w) + y as f32 * w).round() as u8)
                .collect()
        })
        .collect()
}

// ───────────────────────────── output ─────────────────────────────

/// The writer with the hook in front of it.
struct Sink<'h> {
    writer: VideoWriter,
    /// Applied to generated frames only: given frames are written as given.
    watermark: Option<Watermark>,
    hook: &'h mut dyn FrameHook,
    width: u32,
    height: u32,
    written: usize,
    total: usize,
}

impl<'h> Sink<'h> {
    fn create(
        req: &GenerateRequest,
        path: &Path,
        total: usize,
        hook: &'h mut dyn FrameHook,
    ) -> Result<Self> {
        Ok(Self {
            writer: VideoWriter::create(path, req.width, req.height, req.fps)?,
            watermark: req.watermark.then(Watermark::default),
            hook,
            width: req.width,
            height: req.height,
            written: 0,
            total,
        })
    }

    /// Writes a generated frame.
    fn push(&mut self, mut rgb: Vec<u8>, run: &mut Run) -> Result<()> {
        if let Some(w) = &self.watermark {
            w.embed(self.width, self.height, &mut rgb);
        }
        self.write(rgb, run)
    }

    fn write(&mut self, mut rgb: Vec<u8>, run: &mut Run) -> Result<()> {
        self.hook
            .frame(self.written, self.width, self.height, &mut rgb)?;
        self.writer.push_frame(&rgb)?;
        self.written += 1;
        run.report(&Progress::Frames {
            written: self.written,
            total: self.total,
        })
    }

    fn push_all(&mut self, frames: &[Vec<u8>], run: &mut Run) -> Result<()> {
        for f in frames {
            self.push(f.clone(), run)?;
        }
        Ok(())
    }

    /// Writes frames the user gave (an input video), untouched.
    fn push_given(&mut self, frames: &[Vec<u8>], run: &mut Run) -> Result<()> {
        let t = Instant::now();
        for f in frames {
            self.write(f.clone(), run)?;
        }
        run.timings.decode_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    fn finish(self) -> Result<usize> {
        let n = self.written;
        self.writer.finish()?;
        Ok(n)
    }
}

// ───────────────────────────── sampling ─────────────────────────────

/// State shared by the phases of one generation.
struct Run<'a> {
    model: &'a Model,
    req: &'a GenerateRequest,
    /// `(1 or 2, L, D)`: `[cond; uncond]` when guided.
    text: Tensor,
    text_mask: Tensor,
    guided: bool,
    progress: &'a mut dyn FnMut(&Progress) -> ControlFlow<()>,
    timings: Timings,
    /// Windows sampled so far (the window index of the next one).
    windows: usize,
    planned_windows: usize,
    window_index: usize,
    /// Frames per latent frame after the first (the VAE's temporal factor).
    tf: usize,
}

/// How a window's frames reach the output.
struct Emit {
    /// Decoded frames dropped before the first written one (they re-create given frames).
    skip: usize,
    /// Decoded frames written after `skip`.
    take: usize,
    /// Keep this many of the last written frames (the next window's context).
    keep_tail: usize,
    /// Keep this many of the first written frames (a loop's joint needs the base's start).
    keep_head: usize,
    /// The previous window's held-back frames, re-created by the last of the `skip` dropped
    /// frames: each is written as a crossfade from the held frame to this window's.
    blend: Frames,
    /// Hold back (return instead of writing) the last `hold` taken frames for the next window.
    hold: usize,
}

impl Emit {
    /// Writes `take` frames after `skip` dropped ones, nothing kept.
    fn plain(skip: usize, take: usize) -> Self {
        Self {
            skip,
            take,
            keep_tail: 0,
            keep_head: 0,
            blend: Vec::new(),
            hold: 0,
        }
    }
}

/// `(1 − α)·a + α·b` per RGB8 value.
fn crossfade(a: &[u8], b: &[u8], alpha: f32) -> Vec<u8> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((1.0 - alpha) * x as f32 + alpha * y as f32).round() as u8)
        .collect()
}

impl Run<'_> {
    fn report(&mut self, p: &Progress) -> Result<()> {
        match (self.progress)(p) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(PipelineError::Cancelled),
        }
    }

    /// Frames of a clip-start conditioning segment, `f(c−1)+1`.
    fn head_context(&self) -> usize {
        self.tf * (CONTEXT_LATENTS - 1) + 1
    }

    /// Frames of a conditioning segment placed at the end of a window, `fc`.
    fn tail_context(&self) -> usize {
        self.tf * CONTEXT_LATENTS
    }

    fn latent_hw(&self) -> (usize, usize) {
        let s = self.model.vae.config().spatial_factor();
        (self.req.height as usize / s, self.req.width as usize / s)
    }

    /// Normalised latents `(1, C, T', h, w)` of a `fk+1`-frame clip, encoded as one clip.
    fn encode(&mut self, frames: &[Vec<u8>]) -> Result<Tensor> {
        let t = Instant::now();
        let v = Video {
            width: self.req.width,
            height: self.req.height,
            fps: self.req.fps,
            frames: frames.to_vec(),
        };
        let x = video_to_tensor(&v, &self.model.device)?;
        let vae = &self.model.vae;
        let z = vae.normalize_latents(&vae.encode_chunked(&x)?.mean)?;
        self.timings.decode_s += t.elapsed().as_secs_f64();
        Ok(z)
    }

    /// Known latents for a window of `latents` frames: `clip` (fk+1 frames) encoded, zero
    /// padded after its latents, flagged by `known`.
    fn known(&mut self, clip: &[Vec<u8>], known: Vec<bool>) -> Result<KnownFrames> {
        let z = self.encode(clip)?;
        known_latents(z, known)
    }

    /// Text→image for the first latent frame, then that frame known in a window of `latents`
    /// ([`crate::Sampling::image_first`]).
    fn image_first(&mut self, latents: usize) -> Result<KnownFrames> {
        let z = self.sample(1, None, None)?;
        let mut flags = vec![false; latents];
        flags[0] = true;
        known_latents(z, flags)
    }

    /// Phases 4–5: samples `latents` latent frames from seeded noise (or, with `sdedit`, from
    /// the clean latents noised to `strength`), holding `known` frames fixed.
    fn sample(
        &mut self,
        latents: usize,
        known: Option<&KnownFrames>,
        sdedit: Option<(&Tensor, f64)>,
    ) -> Result<Tensor> {
        let t0 = Instant::now();
        let (h, w) = self.latent_hw();
        let c = self.model.dit.config().in_channels;
        let window = self.windows;
        self.windows += 1;
        let mut rng = noise::rng(self.req.seed, WINDOW_STREAM + window as u64);
        let eps = noise::randn(&mut rng, (1, c, latents, h, w), &self.model.device)?;
        let full = self.req.sampler.schedule(self.req.steps, self.req.shift)?;
        let (schedule, x) = match sdedit {
            Some((x0, strength)) => {
                let s = full.sdedit(strength)?;
                let x = sdedit_start(x0, &eps, &s)?;
                (s, x)
            }
            None => (full, eps),
        };
        let sampler_seed = noise::rng(self.req.seed, SAMPLER_STREAM + window as u64).random();
        let mut sampler =
            self.req
                .sampler
                .build_with_eta(sampler_seed, self.req.eta, self.req.eta_until)?;
        let (model, guided, cfg_scale) = (self.model, self.guided, self.req.cfg);
        let rule = self.req.guidance;
        let (lo, hi) = self.req.cfg_interval;
        let (text, mask) = (self.text.clone(), self.text_mask.clone());
        // The conditional half alone, for steps outside the guidance interval.
        let (cond_text, cond_mask) = (text.narrow(0, 0, 1)?, mask.narrow(0, 0, 1)?);
        let windows = self.planned_windows.max(window + 1);
        let index = self.window_index;
        self.window_index += 1;
        let out = sample(sampler.as_mut(), x, &schedule, known, |x, e| {
            let v = if guided && (lo..=hi).contains(&e.sigma) {
                // [cond; uncond] as one batch of 2: one pass over the weights per step.
                let xx = cfg_input(x)?;
                let tt = cfg_input(&e.frame_timesteps)?;
                let v = model.dit.forward(&xx, &tt, &text, Some(&mask))?;
                rule.guide_batched(x, &v, e.sigma, cfg_scale)?
            } else {
                model
                    .dit
                    .forward(x, &e.frame_timesteps, &cond_text, Some(&cond_mask))?
            };
            self.report(&Progress::Step {
                window: index,
                windows,
                evaluation: e.evaluation + 1,
                evaluations: e.num_evaluations,
            })?;
            Ok::<Tensor, PipelineError>(v)
        })?;
        self.timings.sample_s += t0.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Phases 6–8: decodes normalised latents one latent frame at a time, writing the frames
    /// `emit` selects; returns the kept (head, tail) frames and the held-back ones.
    fn decode(&mut self, z: &Tensor, sink: &mut Sink, emit: Emit) -> Result<[Frames; 3]> {
        let t0 = Instant::now();
        let vae = &self.model.vae;
        let z = vae.denormalize_latents(z)?;
        let mut stream = DecodeStream::new(vae, Some(Tiling::wan_default()));
        let (mut head, mut tail, mut held) = (Vec::new(), VecDeque::new(), Vec::new());
        let blend_from = emit.skip.saturating_sub(emit.blend.len());
        let mut index = 0usize;
        let mut written = 0usize;
        for i in 0..z.dim(2)? {
            let frames = stream.push(&z.narrow(2, i, 1)?)?;
            let video = tensor_to_video(&frames.to_dtype(DType::F32)?, self.req.fps)?;
            for f in video.frames {
                let at = index;
                index += 1;
                if (blend_from..emit.skip).contains(&at) {
                    let j = at - blend_from;
                    let alpha = (j + 1) as f32 / (emit.blend.len() + 1) as f32;
                    sink.push(crossfade(&emit.blend[j], &f, alpha), self)?;
                }
                if at < emit.skip || written >= emit.take {
                    continue;
                }
                if head.len() < emit.keep_head {
                    head.push(f.clone());
                }
                if emit.keep_tail > 0 {
                    if tail.len() == emit.keep_tail {
                        tail.pop_front();
                    }
                    tail.push_back(f.clone());
                }
                written += 1;
                if written > emit.take - emit.hold.min(emit.take) {
                    held.push(f);
                } else {
                    sink.push(f, self)?;
                }
            }
        }
        self.timings.decode_s += t0.elapsed().as_secs_f64();
        Ok([head, tail.into(), held])
    }

    /// Text or image → video of `frames` frames, in windows when longer than one.
    fn long_video(&mut self, sink: &mut Sink, image: Option<Vec<u8>>, frames: usize) -> Result<()> {
        self.long_video_keep(sink, image, frames, 0).map(|_| ())
    }

    /// [`Self::long_video`], also returning its first `keep_head` and last
    /// [`Self::tail_context`] frames.
    fn long_video_keep(
        &mut self,
        sink: &mut Sink,
        image: Option<Vec<u8>>,
        frames: usize,
        keep_head: usize,
    ) -> Result<(Frames, Frames)> {
        let window = self.req.window_frames;
        let first = frames.min(window);
        let rest = frames - first;
        self.planned_windows = 1 + windows_for_continuation(rest, window, self.tf);
        let latents = (first - 1) / self.tf + 1;
        let known = match image {
            Some(img) => {
                let mut flags = vec![false; latents];
                flags[0] = true;
                Some(self.known(&[img], flags)?)
            }
            None if self.req.image_first && latents > 1 => {
                self.planned_windows += 1;
                Some(self.image_first(latents)?)
            }
            None => None,
        };
        let z = self.sample(latents, known.as_ref(), None)?;
        let [head, tail, held] = self.decode(
            &z,
            sink,
            Emit {
                keep_tail: self.tail_context(),
                keep_head,
                hold: if rest > 0 { self.head_context() } else { 0 },
                ..Emit::plain(0, first)
            },
        )?;
        let tail = self.continue_forward(sink, tail, held, rest)?;
        Ok((head, tail))
    }

    /// Adds `new` frames (a multiple of the temporal factor) after `tail` (the last frames so far; `held`, the
    /// last of them, not written yet) by forward extension windows; returns the new last
    /// [`Self::tail_context`] frames.
    fn continue_forward(
        &mut self,
        sink: &mut Sink,
        mut tail: Vec<Vec<u8>>,
        mut held: Vec<Vec<u8>>,
        mut new: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let (tf, head, tail_len) = (self.tf, self.head_context(), self.tail_context());
        let window_latents = (self.req.window_frames - 1) / tf + 1;
        while new > 0 {
            let added = (window_latents - CONTEXT_LATENTS).min(new / tf);
            let latents = CONTEXT_LATENTS + added;
            let clip = pad_front(&tail, head);
            let flags = (0..latents).map(|i| i < CONTEXT_LATENTS).collect();
            let known = self.known(&clip, flags)?;
            let z = self.sample(latents, Some(&known), None)?;
            let more = new > tf * added;
            let [_, t, h] = self.decode(
                &z,
                sink,
                Emit {
                    keep_tail: tail_len,
                    blend: std::mem::take(&mut held),
                    hold: if more { head } else { 0 },
                    ..Emit::plain(head, tf * added)
                },
            )?;
            held = h;
            // Short windows leave fewer fresh frames than the context: keep the older ones.
            tail.extend(t);
            tail = last_frames(&tail, tail_len);
            new -= tf * added;
        }
        sink.push_all(&held, self)?; // none unless `new` was 0: a held frame is never lost
        Ok(tail)
    }

    /// One window joining `before` (its last frames lead in) to `after` (its first frames
    /// follow) through `new` generated frames, which are written.
    fn join(
        &mut self,
        sink: &mut Sink,
        before: &[Vec<u8>],
        after: &[Vec<u8>],
        new: usize,
    ) -> Result<()> {
        let lead = pad_front(before, self.head_context());
        let follow = pad_back(after, self.tail_context());
        let mut clip = lead.clone();
        clip.extend(blend(&lead[lead.len() - 1], &follow[0], new));
        clip.extend(follow);
        let latents = (clip.len() - 1) / self.tf + 1;
        let flags = (0..latents)
            .map(|i| i < CONTEXT_LATENTS || i >= latents - CONTEXT_LATENTS)
            .collect();
        let known = self.known(&clip, flags)?;
        let z = self.sample(latents, Some(&known), None)?;
        self.decode(&z, sink, Emit::plain(self.head_context(), new))?;
        Ok(())
    }

    fn connect(&mut self, sink: &mut Sink, a: &[Vec<u8>], b: &[Vec<u8>], new: usize) -> Result<()> {
        sink.push_given(a, self)?;
        self.join(sink, a, b, new)?;
        sink.push_given(b, self)
    }

    /// A base clip, then a transition from its end into its start: played on repeat, the last
    /// frame flows into the first.
    fn looped(&mut self, sink: &mut Sink) -> Result<()> {
        let frames = self.req.frames;
        // A quarter of the clip joins end to start (whole latents, at least one).
        let joint = ((frames - 1) / 16).max(1) * 4;
        let base = frames - joint;
        let (head, tail) = self.long_video_keep(sink, None, base, self.tail_context())?;
        self.planned_windows = self.windows + 1;
        self.join(sink, &tail, &head, joint)
    }

    /// New frames before the input's start; one window whatever the length.
    fn backward(&mut self, sink: &mut Sink, input: &Video) -> Result<()> {
        let new = self.req.frames;
        let follow = pad_back(&input.frames, self.tail_context());
        // The clip must be fk+1 frames: one placeholder frame leads, `new` frames are sampled
        // after it, and the first decoded frame re-creates the placeholder (dropped).
        let mut clip = vec![follow[0].clone(); 1 + new];
        clip.extend(follow);
        let latents = (clip.len() - 1) / self.tf + 1;
        let flags = (0..latents)
            .map(|i| i >= latents - CONTEXT_LATENTS)
            .collect();
        let known = self.known(&clip, flags)?;
        let z = self.sample(latents, Some(&known), None)?;
        self.decode(&z, sink, Emit::plain(1, new))?;
        sink.push_given(&input.frames, self)
    }

    /// SDEdit. Strength 0 writes the input frames exactly: no noise means nothing to sample,
    /// and a VAE round trip would only add reconstruction error.
    fn edit(&mut self, sink: &mut Sink, input: &Video, strength: f64) -> Result<()> {
        if strength == 0.0 {
            return sink.push_given(&input.frames, self);
        }
        let x0 = self.encode(&input.frames)?;
        let latents = x0.dim(2)?;
        let z = self.sample(latents, None, Some((&x0, strength)))?;
        self.decode(&z, sink, Emit::plain(0, input.frames.len()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_windows_cover_the_new_frames() {
        // 33-frame windows add 7 latents (28 frames) each after 2 context latents.
        assert_eq!(windows_for_continuation(928, 33, 4), 34);
        assert_eq!(windows_for_continuation(28, 33, 4), 1);
        assert_eq!(windows_for_continuation(32, 33, 4), 2);
        assert_eq!(windows_for_continuation(0, 33, 4), 0);
        // At 2× time a 33-frame window is 17 latents: 15 new ones, 30 frames.
        assert_eq!(windows_for_continuation(30, 33, 2), 1);
        assert_eq!(windows_for_continuation(32, 33, 2), 2);
        assert_eq!(windows_for_continuation(928, 33, 2), 31);
    }

    #[test]
    fn padding_and_blend_shapes() {
        let f = |v: u8| vec![v; 3];
        assert_eq!(pad_front(&[f(1), f(2)], 4), vec![f(1), f(1), f(1), f(2)]);
        assert_eq!(pad_front(&[f(1), f(2), f(3)], 2), vec![f(2), f(3)]);
        assert_eq!(pad_back(&[f(1), f(2)], 3), vec![f(1), f(2), f(2)]);
        let b = blend(&[0, 0, 0], &[90, 90, 90], 2);
        assert_eq!(b, vec![f(30), f(60)]);
    }
}
