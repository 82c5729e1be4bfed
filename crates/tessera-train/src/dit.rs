//! DiT training: rectified flow on cached VAE latents, conditioned on the small text encoder
//! (frozen at its seeded init by default, [`DitTrainOptions::freeze_text`]; or trained jointly).
//!
//! One step (per micro-batch of a gradient-accumulation group): pick a shape bucket (weighted by
//! its size), draw items from it, replace 10 % of the captions with the empty text, draw a noise
//! level and a conditioning mask per item ([`TrainingExample::draw`]: known latent frames clean
//! at t = 0 and out of the loss), encode the captions, predict the velocity and take the masked
//! MSE. AdamW (over the DiT, and the text encoder when it trains) with warmup + cosine, gradient
//! clipping, EMA of both models, JSONL log, atomic checkpoints, periodic sample clips.
//!
//! Exact resume: every random draw of step `s` comes from `(seed, s, stream)` generators and the
//! checkpoint holds weights, EMA, optimizer moments and step, so stopping at `k` and resuming
//! gives bit-for-bit the run that never stopped (tested).
//!
//! Reference for the recipe: DiT (`train.py`, Peebles & Xie 2023) and Wan2.1's flow matching.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tessera_diffusion::{
    cfg_batched, cfg_input, object_weights, sample, weighted_masked_mse, KnownFrames, MaskProbs,
    MaskSampler, SamplerKind, TimestepSampler, TrainingExample,
};
use tessera_models::device::DeviceSpec;
use tessera_models::dit::{Config as DitConfig, Dit};
use tessera_models::text::{SmallEncoderConfig, SmallTextEncoder, WordTokenizer};
use tessera_models::vae::{init_varmap, tensor_to_video, AutoencoderKLWan, Config as VaeConfig};
use tessera_world::{generate_clip, SampleOptions, Split};

use crate::ema::Ema;
use crate::latents::{fnv1a, load_or_encode, BucketSpec, DataSpec, LatentSet, FNV_OFFSET};
use crate::log::JsonlLog;
use crate::optim::{AdamW, AdamWParams};
use crate::rng::{randn, step_rng};
use crate::schedule::WarmupCosine;
use crate::write_f16_atomic;
use crate::{checkpoint, io_err, read_json_file, Result, TrainError};

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// Noise-level distribution (serialisable mirror of [`TimestepSampler`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TimestepDist {
    LogitNormal { mean: f64, std: f64, shift: f64 },
    ShiftedUniform { shift: f64 },
}

impl TimestepDist {
    /// `--timesteps`: `uniform[:SHIFT]` or `logit-normal[:MEAN,STD[,SHIFT]]`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (kind, args) = s.split_once(':').unwrap_or((s, ""));
        let nums = args
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|a| a.trim().parse::<f64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| format!("`{s}`: `{args}` is not a list of numbers"))?;
        let dist = match (kind, nums.as_slice()) {
            ("uniform", []) => TimestepDist::ShiftedUniform { shift: 1.0 },
            ("uniform", [shift]) => TimestepDist::ShiftedUniform { shift: *shift },
            ("logit-normal", []) => TimestepDist::LogitNormal {
                mean: 0.0,
                std: 1.0,
                shift: 1.0,
            },
            ("logit-normal", [mean, std]) => TimestepDist::LogitNormal {
                mean: *mean,
                std: *std,
                shift: 1.0,
            },
            ("logit-normal", [mean, std, shift]) => TimestepDist::LogitNormal {
                mean: *mean,
                std: *std,
                shift: *shift,
            },
            _ => {
                return Err(format!(
                    "`{s}`: use uniform[:SHIFT] or logit-normal[:MEAN,STD[,SHIFT]], e.g. uniform:3"
                ))
            }
        };
        dist.sampler()
            .validate()
            .map_err(|e| format!("`{s}`: {e}"))?;
        Ok(dist)
    }

    fn sampler(self) -> TimestepSampler {
        match self {
            TimestepDist::LogitNormal { mean, std, shift } => {
                TimestepSampler::LogitNormal { mean, std, shift }
            }
            TimestepDist::ShiftedUniform { shift } => TimestepSampler::ShiftedUniform { shift },
        }
    }
}

/// Everything a DiT run depends on; stored in each checkpoint and checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitTrainOptions {
    /// Folder with videos + `captions.jsonl`; `None` = shapes world generated in memory.
    pub data: Option<PathBuf>,
    /// Trained VAE folder (`config.json` + `model.safetensors` or
    /// `diffusion_pytorch_model.safetensors`); `None` = a randomly initialised tiny VAE seeded by
    /// `seed` (tests and plumbing only: its latents mean nothing).
    pub vae_dir: Option<PathBuf>,
    /// DiT preset (`tiny`, `micro`, `wan2.1-1.3b`) or a path to a diffusers `config.json`.
    pub config: String,
    /// Run directory: `log.jsonl`, `checkpoints/`, `samples/`, `latents/`.
    pub out: PathBuf,
    /// Latent cache folder; `None` = `out/latents`. Point several runs at one folder to share it.
    pub latent_cache: Option<PathBuf>,
    /// Frame side in pixels (multiple of 16: 8× VAE, then 2×2 patches).
    pub size: u32,
    /// Frame rate clips are generated/resampled at.
    pub fps: f64,
    /// Durations to train on together; `frames: 1` is text→image.
    pub buckets: Vec<BucketSpec>,
    /// World seed (clips of the train split).
    pub world_seed: u64,
    /// Total optimizer steps (the cosine schedule's length).
    pub steps: usize,
    /// Items per micro-batch (all from one shape bucket).
    pub batch: usize,
    /// Micro-batches summed into one optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup: usize,
    /// Final LR as a fraction of `lr`.
    pub lr_floor: f64,
    pub adamw: AdamWParams,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    pub ema_decay: f64,
    pub timesteps: TimestepDist,
    /// Noise levels of the items given a frame (image→video, extend, …); `None` = `timesteps`.
    /// Higher levels there make the caption, not the noisy frames, tell the motion (session 29).
    #[serde(default)]
    pub conditioned_timesteps: Option<TimestepDist>,
    /// Chance a caption is replaced by the empty text (for classifier-free guidance).
    pub caption_dropout: f64,
    /// Chance the alternative (short) caption is used instead of the dense one.
    pub alt_caption_prob: f64,
    /// Text encoder depth (its width is the DiT's `text_dim`).
    pub text_layers: usize,
    /// Tokens kept per caption.
    pub text_max_len: usize,
    /// Keep the text encoder at its seeded random init: its states then always tell captions
    /// apart, where a jointly trained encoder can collapse to a caption-independent output.
    #[serde(default)]
    pub freeze_text: bool,
    /// The text encoder's learning rate as a fraction of `lr` when it trains (`freeze_text`
    /// off): an encoder the DiT already reads should move slower than the DiT.
    #[serde(default = "one")]
    pub text_lr_scale: f64,
    /// Learning-rate multipliers by parameter-name prefix (`dit.pos_embedder.` = 30): a part
    /// grafted on at zero, whose Adam steps are ~lr and whose gradient's sign is noisy, needs a
    /// faster rate to be taken up within a run (TRAINING.md, session 12).
    #[serde(default)]
    pub lr_scales: Vec<(String, f64)>,
    /// Strength of [`object_weights`] in the loss (0 = plain MSE): positions that stand out of
    /// their latent frame weigh more, so the caption's small objects are not outweighed by the
    /// backdrop (TRAINING.md, session 14).
    #[serde(default)]
    pub object_weight: f64,
    /// Train on every world clip's left-right mirror too, captions swapped to match: pairs that
    /// differ only in the words naming a side, so the model must read them (TRAINING.md,
    /// session 16). World data only.
    #[serde(default)]
    pub mirror: bool,
    /// Only world scenes with this many objects (1–4; `None` = all): with one, every word of a
    /// caption is about the one object there is (TRAINING.md, session 31). World data only.
    #[serde(default)]
    pub objects: Option<usize>,
    /// Only world scenes whose every object moves with a heading (lines and bounces): every
    /// caption says which way (TRAINING.md, session 33). World data only.
    #[serde(default)]
    pub heading: bool,
    /// Steps of [`crate::text_align`] before the DiT trains (0 = none): the encoder learns to
    /// say what each caption's latent looks like, so the DiT has something to listen to.
    #[serde(default)]
    pub text_align_steps: usize,
    /// Side of the cell grid the alignment summarises each latent frame on
    /// ([`crate::text_align::latent_summary`]); 2 (quadrants) before this option existed.
    #[serde(default = "two")]
    pub text_align_grid: usize,
    /// Start from an exported model folder: its `dit/` weights and, when it has `text/`, its
    /// text encoder and vocabulary (fresh optimizer and EMA). The DiT learned to read that
    /// encoder; a freshly aligned one is a different encoder it would have to learn again.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// With `init_from`: build and align a new text encoder from the run's seed instead of
    /// taking the folder's (what every continuation did before this option existed).
    #[serde(default)]
    pub realign_text: bool,
    /// How often each conditioning task is drawn (older checkpoints: the default mix).
    #[serde(default)]
    pub masks: MaskProbs,
    pub checkpoint_every: usize,
    /// Write sample clips from held-out captions every this many steps (0 = never).
    pub sample_every: usize,
    /// Held-out (val split) prompts sampled each time.
    pub sample_prompts: usize,
    pub sample_steps: usize,
    pub sample_cfg: f64,
    pub resume: bool,
    pub seed: u64,
    /// Where the DiT and text encoder train and the VAE encodes the latents (cached on the CPU)
    /// and decodes samples; may change on resume.
    #[serde(default)]
    pub device: DeviceSpec,
}

fn two() -> usize {
    2
}

/// Parses one `--lr-scale PREFIX=X` (a parameter-name prefix such as `dit.pos_embedder.` and
/// its learning-rate multiplier) for [`DitTrainOptions::lr_scales`].
pub fn parse_lr_scale(s: &str) -> std::result::Result<(String, f64), String> {
    let (prefix, x) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected PREFIX=SCALE, e.g. dit.pos_embedder.=30"))?;
    let x: f64 = x
        .parse()
        .map_err(|_| format!("`{s}`: the scale `{x}` is not a number"))?;
    if prefix.is_empty() || !(x.is_finite() && x >= 0.0) {
        return Err(format!(
            "`{s}`: needs a non-empty prefix and a finite scale ≥ 0"
        ));
    }
    Ok((prefix.to_string(), x))
}

fn one() -> f64 {
    1.0
}

impl DitTrainOptions {
    /// The default model's recipe: tiny DiT on 64×64 shapes world, 33-frame clips at 16 fps and
    /// 1-frame images.
    pub fn tiny(out: PathBuf) -> Self {
        Self {
            data: None,
            vae_dir: None,
            config: "tiny".into(),
            out,
            latent_cache: None,
            size: 64,
            fps: 16.0,
            // Images are cheap (16 tokens vs 144) and teach appearance; clips teach motion.
            buckets: vec![
                BucketSpec {
                    frames: 33,
                    count: 1024,
                },
                BucketSpec {
                    frames: 1,
                    count: 1024,
                },
            ],
            world_seed: 0,
            steps: 4000,
            // 8 clips × 144 tokens: a step stays around a second on two cores.
            batch: 8,
            grad_accum: 1,
            // Small transformer, small batch: 3e-4 is the usual stable peak for AdamW.
            lr: 3e-4,
            warmup: 200,
            lr_floor: 0.1,
            adamw: AdamWParams::default(),
            max_grad_norm: 1.0,
            // Horizon of ~1000 steps: a few thousand-step run still averages meaningfully.
            ema_decay: 0.999,
            // Uniform shifted by 3: 14 % of the draws above σ = 0.95, where sampling starts and
            // only the caption says what to draw; the logit-normal (even shifted by 3) put 3 %
            // there and 0.02 % above 0.99, so the DiT never learned that regime.
            timesteps: TimestepDist::ShiftedUniform { shift: 3.0 },
            conditioned_timesteps: None,
            caption_dropout: tessera_diffusion::CAPTION_DROPOUT,
            alt_caption_prob: 0.3,
            text_layers: 2,
            // Dense captions run ~60 words; 96 leaves room without paying for 128.
            text_max_len: 96,
            // Trained jointly, the encoder's output stopped depending on the caption within a
            // few hundred steps (TRAINING.md, session 3); frozen at its init it cannot.
            freeze_text: true,
            text_lr_scale: 1.0,
            lr_scales: Vec::new(),
            object_weight: 0.0,
            mirror: false,
            objects: None,
            heading: false,
            // A few minutes on 2 cores; held-out R² of the latent summary 0.94 (TRAINING.md).
            text_align_steps: 600,
            text_align_grid: 2,
            init_from: None,
            realign_text: false,
            masks: MaskProbs::default(),
            checkpoint_every: 250,
            sample_every: 500,
            sample_prompts: 2,
            sample_steps: 24,
            sample_cfg: 4.0,
            resume: false,
            seed: 0,
            device: DeviceSpec::Cpu,
        }
    }

    /// Checks the options and returns the DiT config they name.
    pub fn validate(&self) -> Result<DitConfig> {
        let bad = |m: String| Err(TrainError::Options(m));
        let cfg = dit_config_by_name(&self.config)?;
        if self.steps == 0 || self.batch == 0 || self.grad_accum == 0 || self.checkpoint_every == 0
        {
            return bad("steps, batch, grad_accum and checkpoint_every must be ≥ 1".into());
        }
        if self.size == 0 || !self.size.is_multiple_of(16) {
            let below = (self.size / 16 * 16).max(16);
            return bad(format!(
                "size {} must be a multiple of 16 (VAE 8× then 2×2 patches); use {below} or {}",
                self.size,
                below + 16
            ));
        }
        if self.buckets.is_empty()
            || self
                .buckets
                .iter()
                .any(|b| b.frames == 0 || (b.frames - 1) % 4 != 0 || b.count == 0)
        {
            return bad(format!(
                "buckets {:?}: each needs frames = 4k+1 (1, 5, 9, …, 33) and count ≥ 1",
                self.buckets
            ));
        }
        if self.lr.is_nan()
            || self.lr <= 0.0
            || self.lr.is_infinite()
            || !(0.0..=1.0).contains(&self.lr_floor)
            || !(0.0..=1.0).contains(&self.text_lr_scale)
        {
            return bad(format!(
                "lr {} must be positive, lr_floor {} and text_lr_scale {} in [0, 1]",
                self.lr, self.lr_floor, self.text_lr_scale
            ));
        }
        if let Some((prefix, s)) = self
            .lr_scales
            .iter()
            .find(|(_, s)| !(s.is_finite() && *s >= 0.0))
        {
            return bad(format!(
                "learning-rate scale {s} for `{prefix}` must be finite and ≥ 0"
            ));
        }
        if !(self.object_weight.is_finite() && self.object_weight >= 0.0) {
            return bad(format!(
                "object_weight {} must be finite and ≥ 0 (0 = plain MSE)",
                self.object_weight
            ));
        }
        if self.mirror && self.data.is_some() {
            return bad(
                "--mirror needs shapes-world data: a folder's captions cannot be mirrored \
                 (drop --data or --mirror)"
                    .to_string(),
            );
        }
        let scenes = [
            self.objects.map(|n| format!("--objects {n}")),
            self.heading.then(|| "--heading".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        if !scenes.is_empty() && self.data.is_some() {
            return bad(format!(
                "{scenes} picks shapes-world scenes: a folder is trained as it is (drop --data, \
                 or make the folder with `tessera world sample {scenes}`)"
            ));
        }
        if let Some(n) = self.objects {
            if !(1..=tessera_world::MAX_OBJECTS).contains(&n) {
                return Err(tessera_world::WorldError::Objects { objects: n }.into());
            }
        }
        for (name, p) in [
            ("caption_dropout", self.caption_dropout),
            ("alt_caption_prob", self.alt_caption_prob),
            ("ema_decay", self.ema_decay),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1]"));
            }
        }
        if self.text_layers == 0 || self.text_max_len == 0 {
            return bad("text_layers and text_max_len must be ≥ 1".into());
        }
        if self.sample_every > 0 && (self.sample_steps == 0 || self.sample_cfg < 0.0) {
            return bad(format!(
                "sample_steps {} must be ≥ 1 and sample_cfg {} ≥ 0",
                self.sample_steps, self.sample_cfg
            ));
        }
        self.timesteps.sampler().validate()?;
        if let Some(c) = self.conditioned_timesteps {
            c.sampler().validate()?;
        }
        Ok(cfg)
    }
}

/// Whether `--config` names a `config.json` file rather than a preset.
fn names_a_file(config: &str) -> bool {
    config.ends_with(".json")
}

/// `tiny` (the default model), `micro` (tests: a few seconds of training overfits), `wan2.1-1.3b`,
/// or a path to a diffusers `config.json`.
pub fn dit_config_by_name(name: &str) -> Result<DitConfig> {
    match name {
        "tiny" => Ok(DitConfig::tiny()),
        "micro" => Ok(DitConfig {
            num_attention_heads: 2,
            attention_head_dim: 32,
            text_dim: 64,
            freq_dim: 64,
            ffn_dim: 256,
            num_layers: 2,
            ..DitConfig::tiny()
        }),
        "wan2.1-1.3b" | "wan2_1_1_3b" => Ok(DitConfig::wan2_1_1_3b()),
        path if names_a_file(path) && !Path::new(path).is_file() => Err(TrainError::Options(
            format!("DiT config file {path} not found; use tiny, micro, wan2.1-1.3b or the path of an existing config.json"),
        )),
        path if names_a_file(path) => {
            let cfg: DitConfig = read_json_file(Path::new(path))?;
            cfg.validate()?;
            Ok(cfg)
        }
        other => Err(TrainError::Options(format!(
            "unknown DiT config `{other}`; use tiny, micro, wan2.1-1.3b or a config.json path"
        ))),
    }
}

/// The text encoder that goes with `dit`: width `dit.text_dim`, 4× MLP, `layers` deep.
pub fn text_config_for(
    dit: &DitConfig,
    vocab: usize,
    layers: usize,
    max_len: usize,
) -> SmallEncoderConfig {
    let dim = dit.text_dim;
    SmallEncoderConfig {
        dim,
        num_layers: layers,
        num_heads: if dim.is_multiple_of(64) { dim / 64 } else { 1 },
        ffn_dim: 4 * dim,
        max_len,
        ..SmallEncoderConfig::tiny(vocab)
    }
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

/// One optimizer step's numbers (also a `log.jsonl` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitStepReport {
    /// Steps done (1-based).
    pub step: usize,
    pub steps: usize,
    /// Masked velocity MSE, averaged over the accumulation group.
    pub loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    /// Latent frames `T'` of the bucket(s) drawn.
    pub latent_frames: usize,
    pub it_per_s: f64,
    /// Seconds left at the current speed.
    pub eta_s: f64,
}

/// What the trainer reports while it runs.
#[derive(Debug, Clone)]
pub enum DitEvent {
    /// Latents encoded so far (first run on a dataset only).
    Encoding {
        done: usize,
        total: usize,
    },
    /// The training set is ready. Normalised latents should have `std` near 1: far from it
    /// (e.g. 2–3) the VAE folder lacks measured latent statistics and the loss starts high.
    Latents {
        path: PathBuf,
        items: usize,
        /// `((T', h, w), items)` per bucket.
        buckets: Vec<((usize, usize, usize), usize)>,
        mean: f64,
        std: f64,
    },
    /// Captions (and alternative wordings) past the text encoder's context: training reads only
    /// their first `kept_words` words.
    LongCaptions {
        long: usize,
        of: usize,
        kept_words: usize,
    },
    Step(DitStepReport),
    /// Sample clips written; `pixel_error` is the mean |Δ| (0–255) against the held-out clip
    /// whose caption prompted it (a different clip of the same description: a loose signal).
    Samples {
        step: usize,
        paths: Vec<PathBuf>,
        pixel_error: f64,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    /// One step of text alignment (before the DiT's first step).
    Aligning {
        step: usize,
        steps: usize,
        loss: f64,
    },
    /// The text encoder was aligned to the latents (fresh runs with `text_align_steps > 0`).
    TextAligned(crate::text_align::AlignReport),
}

/// Result of [`train_dit`].
#[derive(Debug, Clone)]
pub struct DitTrainSummary {
    /// Step the run stopped at (== `steps` unless the callback asked to stop).
    pub step: usize,
    pub last: Option<DitStepReport>,
    pub checkpoint: PathBuf,
    /// The latent cache file used.
    pub latents: PathBuf,
    pub wall_s: f64,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub(crate) fn named_vars(varmap: &VarMap, prefix: &str) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Data("varmap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// A `VarMap` backend whose fresh parameters come from the run seed (per name, so order does not
/// matter) honouring each layer's init hint: candle's own initialisers draw from an unseedable
/// thread RNG, and a run must be reproducible from its seed.
struct SeededInit {
    varmap: VarMap,
    seed: u64,
}

impl candle_nn::var_builder::SimpleBackend for SeededInit {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        use candle_nn::init::NormalOrUniform;
        use candle_nn::Init;
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        if let Some(v) = data.get(name) {
            return Ok(v.as_tensor().clone());
        }
        let mut rng = step_rng(self.seed, fnv1a(name.as_bytes(), FNV_OFFSET), 0xD17);
        let n = s.elem_count();
        let uniform = |rng: &mut rand_chacha::ChaCha8Rng, lo: f64, up: f64| {
            let v: Vec<f32> = (0..n)
                .map(|_| rng.random_range(lo as f32..up as f32))
                .collect();
            Tensor::from_vec(v, s.clone(), dev)
        };
        let t = match init {
            Init::Const(c) => Tensor::full(c as f32, s.clone(), dev)?,
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up)?,
            Init::Randn { mean, stdev } => randn(&mut rng, s.clone(), dev)?.affine(stdev, mean)?,
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(&s) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(&mut rng, -bound, bound)?
                    }
                    NormalOrUniform::Normal => randn(&mut rng, s.clone(), dev)?.affine(std, 0.0)?,
                }
            }
        }
        .to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        data.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("`{name}` requested without a shape from a fresh var map")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .is_ok_and(|d| d.contains_key(name))
    }
}

pub(crate) fn seeded_builder(varmap: &VarMap, seed: u64, dev: &Device) -> VarBuilder<'static> {
    let backend: Box<dyn candle_nn::var_builder::SimpleBackend> = Box::new(SeededInit {
        varmap: varmap.clone(),
        seed,
    });
    VarBuilder::from_backend(backend, DType::F32, dev.clone())
}

/// The VAE in `vae_dir` (or a random tiny one) on `dev` and an id of its weights (content hash)
/// for the latent cache key.
pub fn load_vae(
    vae_dir: Option<&Path>,
    seed: u64,
    dev: &Device,
) -> Result<(AutoencoderKLWan, u64)> {
    let dev = dev.clone();
    match vae_dir {
        None => {
            // Latent statistics measured on a few small world clips, so even a random VAE's
            // latents are unit-scale, as a trained VAE's normalised latents are.
            let mut cfg = VaeConfig::tiny();
            let vm = init_varmap(&cfg, seed, &dev)?;
            let raw = AutoencoderKLWan::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
            let so = SampleOptions {
                count: 4,
                width: 32,
                height: 32,
                frames: 9,
                fps: 16.0,
                seed,
                split: Split::Val,
            };
            let zs = (0..4)
                .map(|i| {
                    let clip = generate_clip(&so, i)?;
                    let x = tessera_models::vae::video_to_tensor(&clip.video, &dev)?;
                    Ok(raw.encode(&x)?.mean.squeeze(0)?.flatten_from(1)?) // (z, N)
                })
                .collect::<Result<Vec<_>>>()?;
            let z = Tensor::cat(&zs, 1)?;
            let mean = z.mean_keepdim(1)?;
            let std = z.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?.sqrt()?;
            cfg.latents_mean = mean.flatten_all()?.to_vec1()?;
            cfg.latents_std = std
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(|s| s.max(1e-6))
                .collect();
            let vae = AutoencoderKLWan::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
            Ok((vae, fnv1a(&seed.to_le_bytes(), FNV_OFFSET ^ 0x5EED)))
        }
        Some(dir) => {
            if !dir.join("config.json").is_file() {
                return Err(TrainError::Options(format!(
                    "{}: no VAE here (no config.json); pass --vae the folder a VAE was \
                     exported to, e.g. models/tessera-shapes-tiny/vae",
                    dir.display()
                )));
            }
            let cfg = VaeConfig::from_diffusers_json(&dir.join("config.json"))?;
            let weights = tessera_models::find_weights(dir).ok_or_else(|| {
                TrainError::Data(format!(
                    "{}: no model.safetensors or diffusion_pytorch_model.safetensors; pass \
                         the folder a VAE was exported to",
                    dir.display()
                ))
            })?;
            let bytes = std::fs::read(&weights).map_err(io_err(&weights))?;
            let id = fnv1a(&bytes, FNV_OFFSET);
            let vae = AutoencoderKLWan::load(&cfg, &[weights], DType::F32, &dev)?;
            Ok((vae, id))
        }
    }
}

/// DiT + text encoder built on fresh var maps.
struct Models {
    dit: Dit,
    text: SmallTextEncoder,
    named: Vec<(String, Var)>,
}

fn build_models(
    dcfg: &DitConfig,
    tcfg: &SmallEncoderConfig,
    tok: &WordTokenizer,
    seed: u64,
    dev: &Device,
) -> Result<Models> {
    let dvm = VarMap::new();
    let dit = Dit::new(dcfg, seeded_builder(&dvm, seed, dev))?;
    let tvm = VarMap::new();
    let text = SmallTextEncoder::new(tcfg, tok.clone(), seeded_builder(&tvm, seed ^ 0x7E47, dev))?;
    let mut named = named_vars(&dvm, "dit.")?;
    named.extend(named_vars(&tvm, "text.")?);
    Ok(Models { dit, text, named })
}

/// Models from named tensors (`dit.*`, `text.*`, as checkpoints and the EMA hold them).
pub fn models_from_tensors(
    dcfg: &DitConfig,
    tcfg: &SmallEncoderConfig,
    tok: &WordTokenizer,
    tensors: &HashMap<String, Tensor>,
    dev: &Device,
) -> Result<(Dit, SmallTextEncoder)> {
    let part = |prefix: &str| -> HashMap<String, Tensor> {
        tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    };
    let dit = Dit::new(
        dcfg,
        VarBuilder::from_tensors(part("dit."), DType::F32, dev),
    )?;
    let text = SmallTextEncoder::new(
        tcfg,
        tok.clone(),
        VarBuilder::from_tensors(part("text."), DType::F32, dev),
    )?;
    Ok((dit, text))
}

/// Adds the parameter gradients of `grads` into `acc` (only parameters, so the accumulated
/// store does not keep every activation gradient of each micro-batch alive).
fn accumulate(acc: &mut GradStore, grads: &GradStore, named: &[(String, Var)]) -> Result<()> {
    for (_, v) in named {
        if let Some(g) = grads.get(v) {
            let sum = match acc.get(v) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            acc.insert(v, sum);
        }
    }
    Ok(())
}

/// Caption actually trained on for item `i` of a batch (dropout → empty text).
pub(crate) fn pick_caption<'a>(
    set: &'a LatentSet,
    i: usize,
    opts: &DitTrainOptions,
    rng: &mut impl Rng,
) -> &'a str {
    let item = &set.items[i];
    if tessera_diffusion::drop_caption(rng, opts.caption_dropout) {
        return "";
    }
    match &item.alt_caption {
        Some(alt) if rng.random::<f64>() < opts.alt_caption_prob => alt,
        _ => &item.caption,
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

/// How sample clips are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSettings {
    pub sampler: SamplerKind,
    pub steps: usize,
    /// Classifier-free guidance scale (1 = conditional only).
    pub cfg: f64,
    /// Timestep shift of the schedule.
    pub shift: f64,
    pub seed: u64,
}

/// Samples normalised latents `(B, C, T', h, w)` for `prompts` with guidance, keeping the frames
/// of `known` (if any) fixed, on the DiT's device. Deterministic in `settings.seed`.
pub fn sample_latents(
    dit: &Dit,
    text: &SmallTextEncoder,
    prompts: &[&str],
    grid: (usize, usize, usize),
    settings: SampleSettings,
    known: Option<&KnownFrames>,
) -> Result<Tensor> {
    let dev = dit.device().clone();
    let b = prompts.len();
    let (t, h, w) = grid;
    let c = dit.config().in_channels;
    let mut all: Vec<&str> = prompts.to_vec();
    all.extend(std::iter::repeat_n("", b));
    let (ids, mask) = text.tokenizer().batch(&all, &dev)?;
    let states = text.forward_ids(&ids, &mask)?;
    let schedule = settings.sampler.schedule(settings.steps, settings.shift)?;
    let noise = randn(
        &mut step_rng(settings.seed, 0, 0x5A3),
        (b, c, t, h, w),
        &dev,
    )?;
    let mut sampler = settings.sampler.build(settings.seed);
    let out = sample::<TrainError, _>(sampler.as_mut(), noise, &schedule, known, |x, e| {
        let t2 = Tensor::cat(&[&e.frame_timesteps, &e.frame_timesteps], 0)?;
        let v = dit.forward(&cfg_input(x)?, &t2, &states, Some(&mask))?;
        Ok(cfg_batched(&v, settings.cfg)?)
    })?;
    Ok(out)
}

/// Held-out prompts with their clips: the shapes world's val split.
fn sample_prompts(
    opts: &DitTrainOptions,
    frames: usize,
) -> Result<Vec<(String, tessera_media::Video)>> {
    let so = SampleOptions {
        count: opts.sample_prompts,
        width: opts.size,
        height: opts.size,
        frames: frames as u32,
        fps: opts.fps,
        seed: opts.world_seed,
        split: Split::Val,
    };
    (0..opts.sample_prompts as u64)
        .map(|i| {
            let clip = generate_clip(&so, i)?;
            Ok((clip.caption, clip.video))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Training loop
// ---------------------------------------------------------------------------------------------

/// Trains (or resumes, `opts.resume`) a DiT and its text encoder. `progress` sees every event
/// and may return `Break` to stop early: a checkpoint is written at that step first, so a
/// resumed run continues the same curve.
pub fn train_dit(
    opts: &DitTrainOptions,
    mut progress: impl FnMut(&DitEvent) -> ControlFlow<()>,
) -> Result<DitTrainSummary> {
    let started = Instant::now();
    let mut dcfg = opts.validate()?;
    let dev = opts.device.open()?;
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let ck_dir = opts.out.join("checkpoints");
    let resume_ck = checkpoint::run_start(&ck_dir, opts.resume)?;

    // 1. Latents (cached) and the tokenizer built from their captions.
    let (vae, vae_id) = load_vae(opts.vae_dir.as_deref(), opts.seed, &dev)?;
    let spec = match &opts.data {
        None => DataSpec::World {
            seed: opts.world_seed,
            split: Split::Train,
            size: opts.size,
            fps: opts.fps,
            buckets: opts.buckets.clone(),
            mirror: false,
            objects: opts.objects,
            heading: opts.heading,
        },
        Some(dir) => DataSpec::Folder {
            dir: dir.clone(),
            size: opts.size,
            fps: opts.fps,
            buckets: opts.buckets.clone(),
        },
    };
    let cache = opts
        .latent_cache
        .clone()
        .unwrap_or_else(|| opts.out.join("latents"));
    let mut stop_requested = false;
    let mut specs = vec![spec];
    if let (true, DataSpec::World { .. }) = (opts.mirror, &specs[0]) {
        let mut mirrored = specs[0].clone();
        if let DataSpec::World { mirror, .. } = &mut mirrored {
            *mirror = true;
        }
        specs.push(mirrored);
    }
    let mut items = Vec::new();
    let mut latents_path = PathBuf::new();
    for spec in &specs {
        let (set, path) = load_or_encode(spec, &vae, vae_id, &cache, |done, total| {
            if progress(&DitEvent::Encoding { done, total }).is_break() {
                stop_requested = true;
            }
        })?;
        items.extend(set.items);
        latents_path = path;
    }
    let set = LatentSet::new(items)?;
    {
        let flat = Tensor::cat(
            &set.items
                .iter()
                .map(|i| i.latent.flatten_all())
                .collect::<candle_core::Result<Vec<_>>>()?,
            0,
        )?;
        let mean = flat.mean_all()?.to_scalar::<f32>()? as f64;
        let std = (flat.sqr()?.mean_all()?.to_scalar::<f32>()? as f64 - mean * mean)
            .max(0.0)
            .sqrt();
        let _ = progress(&DitEvent::Latents {
            path: latents_path.clone(),
            items: set.items.len(),
            buckets: set.buckets.iter().map(|(s, v)| (*s, v.len())).collect(),
            mean,
            std,
        });
    }
    let z_dim = vae.config().z_dim;
    if dcfg.in_channels != z_dim || dcfg.out_channels != z_dim {
        if names_a_file(&opts.config) {
            return Err(TrainError::Options(format!(
                "DiT config {} has in_channels {} and out_channels {}, but the VAE's latent has \
                 {z_dim} channels; set both to {z_dim} there, or pass a preset name (tiny, micro), \
                 whose channels follow the VAE",
                opts.config, dcfg.in_channels, dcfg.out_channels
            )));
        }
        // A preset names a shape of transformer, not a latent: it reads the VAE it is trained on.
        dcfg.in_channels = z_dim;
        dcfg.out_channels = z_dim;
    }
    let meta = resume_ck
        .as_deref()
        .map(checkpoint::load_meta)
        .transpose()?;
    // Steps the weights had before this run: an `--init-from` folder's count, carried by every
    // checkpoint, so an export reports the model's whole training, not the last leg's.
    let mut prior_steps = meta
        .as_ref()
        .map_or(0, |m| m["prior_steps"].as_u64().unwrap_or(0));
    let init_text = match (&meta, &opts.init_from) {
        (None, Some(dir)) if !opts.realign_text && dir.join("text").is_dir() => {
            Some(dir.join("text"))
        }
        _ => None,
    };
    let captions = set.captions();
    let tok: WordTokenizer = match &meta {
        Some(m) => {
            let mut t: WordTokenizer =
                serde_json::from_value(m["tokenizer"].clone()).map_err(|source| {
                    TrainError::Json {
                        path: ck_dir.join("state.json"),
                        source,
                    }
                })?;
            t.reindex();
            t
        }
        None => match &init_text {
            Some(dir) => read_tokenizer(dir)?,
            None => WordTokenizer::from_corpus(&captions, 1, opts.text_max_len),
        },
    };
    let long = captions.iter().filter(|c| tok.overflow(c) > 0).count();
    if long > 0 {
        let _ = progress(&DitEvent::LongCaptions {
            long,
            of: captions.len(),
            kept_words: tok.max_len(),
        });
    }
    // A resumed run keeps the encoder it was built with, whether recipe-made or a folder's.
    let tcfg = match (&meta, &init_text) {
        (Some(m), _) => {
            serde_json::from_value(m["text_config"].clone()).map_err(|source| TrainError::Json {
                path: ck_dir.join("state.json"),
                source,
            })?
        }
        (None, Some(dir)) => read_json_file(&dir.join("config.json"))?,
        (None, None) => {
            text_config_for(&dcfg, tok.vocab_size(), opts.text_layers, opts.text_max_len)
        }
    };

    // 2. Models, optimizer, EMA — fresh or from the checkpoint.
    let models = build_models(&dcfg, &tcfg, &tok, opts.seed, &dev)?;
    if resume_ck.is_none() {
        if let Some(dir) = &opts.init_from {
            let path = tessera_models::find_weights(&dir.join("dit")).ok_or_else(|| {
                TrainError::Data(format!(
                    "{}: no dit/model.safetensors; --init-from needs an exported model folder",
                    dir.display()
                ))
            })?;
            // A folder without the position path grows one, starting silent: the same function.
            // Other tokens (another patch size or latent channel count: a VAE with another
            // latent) keep the blocks, the text and timestep paths; the patch embedding and the
            // head start fresh.
            let config_path = dir.join("dit").join("config.json");
            let theirs: serde_json::Value = read_json_file(&config_path)?;
            prior_steps = theirs["_trained_steps"].as_u64().unwrap_or(0);
            let theirs: DitConfig =
                serde_json::from_value(theirs).map_err(|source| TrainError::Json {
                    path: config_path,
                    source,
                })?;
            let grows = dcfg.abs_pos_embed && !theirs.abs_pos_embed;
            let as_ours = DitConfig {
                abs_pos_embed: theirs.abs_pos_embed || grows,
                patch_size: dcfg.patch_size,
                in_channels: dcfg.in_channels,
                out_channels: dcfg.out_channels,
                ..theirs.clone()
            };
            let new_tokens = as_ours.patch_size != theirs.patch_size
                || as_ours.in_channels != theirs.in_channels
                || as_ours.out_channels != theirs.out_channels;
            if as_ours != dcfg {
                return Err(TrainError::Options(format!(
                    "--init-from {}: its dit/config.json differs from the run's --config {} \
                     beyond adding abs_pos_embed or changing patch_size or the latent channels",
                    dir.display(),
                    opts.config
                )));
            }
            let fresh = |n: &str| {
                (grows && n.starts_with("dit.pos_embedder."))
                    || (new_tokens
                        && (n.starts_with("dit.patch_embedding.")
                            || n.starts_with("dit.proj_out.")))
            };
            let vars: Vec<(String, Var)> = models
                .named
                .iter()
                .filter(|(n, _)| !fresh(n))
                .cloned()
                .collect();
            checkpoint::init_vars_from(&vars, "dit.", &path)?;
        }
        if let Some(dir) = &init_text {
            let path = tessera_models::find_weights(dir).ok_or_else(|| {
                TrainError::Data(format!(
                    "{}: no model.safetensors; --init-from takes the text encoder from the \
                     model folder's text/ (or pass --realign-text for a new one)",
                    dir.display()
                ))
            })?;
            checkpoint::init_vars_from(&models.named, "text.", &path)?;
        } else if opts.text_align_steps > 0 {
            let text_vars: Vec<(String, Var)> = models
                .named
                .iter()
                .filter(|(n, _)| n.starts_with("text."))
                .cloned()
                .collect();
            let report = crate::text_align::align_text(
                &models.text,
                &text_vars,
                &set,
                opts,
                opts.text_align_steps,
                |step, loss| {
                    let _ = progress(&DitEvent::Aligning {
                        step,
                        steps: opts.text_align_steps,
                        loss,
                    });
                },
            )?;
            let _ = progress(&DitEvent::TextAligned(report));
        }
    }
    let named = models.named.clone();
    let mut opt = AdamW::new(named.clone(), opts.adamw)?;
    opt.scale_lr("text.", opts.text_lr_scale);
    for (prefix, scale) in &opts.lr_scales {
        opt.scale_lr(prefix, *scale);
    }
    let mut ema = Ema::new(&named, opts.ema_decay)?;
    let mut start = 0usize;
    if let (Some(ck), Some(meta)) = (&resume_ck, &meta) {
        let saved: DitTrainOptions =
            serde_json::from_value(meta["options"].clone()).map_err(|source| TrainError::Json {
                path: ck.join("state.json"),
                source,
            })?;
        // The run length, resume flag, reporting cadence and device may change; anything else
        // would change the curve.
        let same = DitTrainOptions {
            steps: opts.steps,
            resume: opts.resume,
            sample_every: opts.sample_every,
            checkpoint_every: opts.checkpoint_every,
            device: opts.device,
            ..saved
        };
        if let Some(changed) = checkpoint::changed_options(&same, opts) {
            return Err(TrainError::CheckpointMismatch {
                path: ck.clone(),
                what: format!(
                    "{changed} (only steps, sample_every, checkpoint_every and device may \
                     change on resume; pass the run's other options as they were)"
                ),
            });
        }
        checkpoint::set_vars(&named, "", &checkpoint::load_tensors(ck, "model")?, ck)?;
        ema.restore(checkpoint::load_tensors(ck, "ema")?)?;
        start = meta["step"].as_u64().unwrap_or(0) as usize;
        opt.load_state(&checkpoint::load_tensors(ck, "optim")?, start)?;
    }
    let log_path = opts.out.join("log.jsonl");
    let mut log = JsonlLog::open(&log_path, opts.resume.then_some(start))?;
    let sched = WarmupCosine {
        peak: opts.lr,
        warmup: opts.warmup,
        total: opts.steps,
        floor: opts.lr_floor,
    };
    let ts = opts.timesteps.sampler();
    let conditioned_ts = opts.conditioned_timesteps.map(TimestepDist::sampler);
    let masks = MaskSampler::new(opts.masks, 0.3)?;
    let save = |step: usize,
                opt: &AdamW,
                ema: &Ema,
                last: Option<&DitStepReport>|
     -> Result<PathBuf> {
        let model: HashMap<String, Tensor> = named
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let meta = serde_json::json!({
            "step": step,
            "prior_steps": prior_steps,
            "options": opts,
            "dit_config": dcfg,
            "text_config": tcfg,
            "tokenizer": tok,
            "latents": latents_path,
            "last": last,
            "rng": {"kind": "chacha8 per (seed, step, stream)", "seed": opts.seed, "next_step": step},
        });
        checkpoint::save(
            &ck_dir,
            step,
            &[
                ("model", &model),
                ("ema", &ema.shadow),
                ("optim", &opt.state()),
            ],
            &meta,
            2,
        )
    };

    // Bucket choice weighted by size; cumulative weights once.
    let total_items: usize = set.buckets.iter().map(|(_, v)| v.len()).sum();
    let video_grid = set
        .buckets
        .iter()
        .map(|(s, _)| *s)
        .max_by_key(|s| s.0)
        .unwrap_or((1, 1, 1));
    let video_frames = (video_grid.0 - 1) * vae.config().temporal_factor() + 1;
    let held_out = match (&opts.data, opts.sample_every) {
        (_, 0) => Vec::new(),
        (None, _) => sample_prompts(opts, video_frames)?,
        // A user dataset has no held-out split here: sample its first clips' captions and
        // compare with their VAE reconstructions.
        (Some(_), _) => set
            .buckets
            .iter()
            .find(|(s, _)| *s == video_grid)
            .map(|(_, idx)| idx.iter().take(opts.sample_prompts))
            .into_iter()
            .flatten()
            .map(|&i| {
                let item = &set.items[i];
                let x = vae.decode_latents(&item.latent.unsqueeze(0)?.to_device(vae.device())?)?;
                Ok((item.caption.clone(), tensor_to_video(&x, opts.fps)?))
            })
            .collect::<Result<Vec<_>>>()?,
    };

    let mut last: Option<DitStepReport> = None;
    let mut last_ck = checkpoint::latest(&ck_dir)?.unwrap_or_else(|| ck_dir.clone());
    let mut t0 = Instant::now();
    let mut step = start;
    while step < opts.steps && !stop_requested {
        let mut acc = GradStore::default();
        let mut loss_sum = 0f64;
        let mut frames_seen = 0usize;
        for micro in 0..opts.grad_accum {
            let stream = micro as u64 * 4;
            let mut rng = step_rng(opts.seed, step as u64, stream);
            let mut pick = rng.random_range(0..total_items);
            let bucket = set
                .buckets
                .iter()
                .find(|(_, v)| {
                    let hit = pick < v.len();
                    if !hit {
                        pick -= v.len();
                    }
                    hit
                })
                .map(|(_, v)| v)
                .ok_or_else(|| TrainError::Data("empty bucket list".into()))?;
            let idx: Vec<usize> = (0..opts.batch)
                .map(|_| bucket[rng.random_range(0..bucket.len())])
                .collect();
            let x0 = Tensor::stack(
                &idx.iter()
                    .map(|&i| set.items[i].latent.clone())
                    .collect::<Vec<_>>(),
                0,
            )?
            .to_device(&dev)?; // (B, C, T', h, w)
            frames_seen = frames_seen.max(x0.dim(2)?);
            let captions: Vec<&str> = idx
                .iter()
                .map(|&i| pick_caption(&set, i, opts, &mut rng))
                .collect();
            let mut noise_rng = step_rng(opts.seed, step as u64, stream + 1);
            let noise = randn(&mut noise_rng, x0.shape(), &dev)?;
            let ex =
                TrainingExample::draw(&x0, &noise, &ts, conditioned_ts.as_ref(), &masks, &mut rng)?;
            let (ids, mask) = tok.batch(&captions, &dev)?;
            let mut states = models.text.forward_ids(&ids, &mask)?;
            if opts.freeze_text {
                // No gradient reaches the encoder, so AdamW leaves it (and its decay) alone.
                states = states.detach();
            }
            let pred = models
                .dit
                .forward(&ex.x_t, &ex.timesteps, &states, Some(&mask))?;
            let weights = (opts.object_weight > 0.0)
                .then(|| object_weights(&x0, opts.object_weight))
                .transpose()?;
            let loss = weighted_masked_mse(&pred, &ex.target, &ex.known, weights.as_ref())?;
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(TrainError::NonFinite { step, value });
            }
            loss_sum += value;
            let grads = (loss / opts.grad_accum as f64)?.backward()?;
            accumulate(&mut acc, &grads, &named)?;
        }
        let gnorm = opt.grad_norm(&acc)?;
        if !gnorm.is_finite() {
            return Err(TrainError::NonFinite { step, value: gnorm });
        }
        let scale = if gnorm > opts.max_grad_norm {
            opts.max_grad_norm / gnorm
        } else {
            1.0
        };
        let lr = sched.lr(step);
        opt.step(&acc, lr, scale)?;
        ema.update(&named, step)?;
        step += 1;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let report = DitStepReport {
            step,
            steps: opts.steps,
            loss: loss_sum / opts.grad_accum as f64,
            lr,
            grad_norm: gnorm,
            latent_frames: frames_seen,
            it_per_s: 1.0 / secs,
            eta_s: secs * (opts.steps - step) as f64,
        };
        log.write(
            &serde_json::to_value(&report).map_err(|source| TrainError::Json {
                path: log_path.clone(),
                source,
            })?,
        )?;
        let flow = progress(&DitEvent::Step(report.clone()));
        last = Some(report);
        if opts.sample_every > 0 && (step.is_multiple_of(opts.sample_every) || step == opts.steps) {
            let (paths, pixel_error) = write_samples(
                opts,
                &dcfg,
                &tcfg,
                &tok,
                &ema.shadow,
                &vae,
                &held_out,
                video_grid,
                step,
            )?;
            log.write(&serde_json::json!({"step": step, "sample_pixel_error": pixel_error}))?;
            let _ = progress(&DitEvent::Samples {
                step,
                paths,
                pixel_error,
            });
        }
        let stop = flow.is_break();
        if step.is_multiple_of(opts.checkpoint_every) || step == opts.steps || stop {
            last_ck = save(step, &opt, &ema, last.as_ref())?;
            let _ = progress(&DitEvent::Checkpoint {
                step,
                path: last_ck.clone(),
            });
        }
        if stop {
            break;
        }
        t0 = Instant::now();
    }
    Ok(DitTrainSummary {
        step,
        last,
        checkpoint: last_ck,
        latents: latents_path,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Samples the held-out prompts with the EMA weights, writes `samples/step-N-i.gif` and returns
/// the paths and the mean pixel error (0–255) against the held-out clips.
#[allow(clippy::too_many_arguments)]
fn write_samples(
    opts: &DitTrainOptions,
    dcfg: &DitConfig,
    tcfg: &SmallEncoderConfig,
    tok: &WordTokenizer,
    ema: &HashMap<String, Tensor>,
    vae: &AutoencoderKLWan,
    held_out: &[(String, tessera_media::Video)],
    grid: (usize, usize, usize),
    step: usize,
) -> Result<(Vec<PathBuf>, f64)> {
    let dev = ema
        .values()
        .next()
        .map_or(Device::Cpu, |t| t.device().clone());
    let (dit, text) = models_from_tensors(dcfg, tcfg, tok, ema, &dev)?;
    let dir = opts.out.join("samples");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let prompts: Vec<&str> = held_out.iter().map(|(p, _)| p.as_str()).collect();
    let settings = SampleSettings {
        sampler: SamplerKind::Euler,
        steps: opts.sample_steps,
        cfg: opts.sample_cfg,
        shift: 1.0,
        seed: opts.seed,
    };
    let z = sample_latents(&dit, &text, &prompts, grid, settings, None)?;
    let mut paths = Vec::new();
    let mut err = 0f64;
    for (i, (prompt, reference)) in held_out.iter().enumerate() {
        let x = vae.decode_latents(&z.narrow(0, i, 1)?.to_device(vae.device())?)?;
        let video = tensor_to_video(&x, opts.fps)?;
        err += mean_abs_pixel_error(&video, reference);
        let p = dir.join(format!("step-{step:08}-{i}.gif"));
        tessera_media::write_video(&p, &video)?;
        if step == opts.sample_every || !dir.join(format!("reference-{i}.gif")).exists() {
            tessera_media::write_video(dir.join(format!("reference-{i}.gif")), reference)?;
            let tp = dir.join(format!("reference-{i}.txt"));
            std::fs::write(&tp, prompt).map_err(io_err(&tp))?;
        }
        paths.push(p);
    }
    Ok((paths, err / held_out.len().max(1) as f64))
}

/// Mean |a − b| over all bytes of the frames both videos have (0–255).
pub fn mean_abs_pixel_error(a: &tessera_media::Video, b: &tessera_media::Video) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (fa, fb) in a.frames.iter().zip(&b.frames) {
        for (x, y) in fa.iter().zip(fb) {
            sum += (f64::from(*x) - f64::from(*y)).abs();
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Checkpoint → models, export
// ---------------------------------------------------------------------------------------------

/// A trained DiT and text encoder restored from a run's latest checkpoint.
pub struct TrainedDit {
    pub dit: Dit,
    pub text: SmallTextEncoder,
    pub dit_config: DitConfig,
    pub text_config: SmallEncoderConfig,
    pub tokenizer: WordTokenizer,
    pub step: usize,
}

/// Loads the latest checkpoint of run `out`: EMA weights (`ema = true`) or the raw ones.
pub fn load_trained(out: &Path, ema: bool) -> Result<TrainedDit> {
    let ck_dir = out.join("checkpoints");
    let ck =
        checkpoint::latest(&ck_dir)?.ok_or_else(|| TrainError::NoCheckpoint(ck_dir.clone()))?;
    let meta = checkpoint::load_meta(&ck)?;
    let field = |k: &str| meta[k].clone();
    let json_err = |source| TrainError::Json {
        path: ck.join("state.json"),
        source,
    };
    let dit_config: DitConfig = serde_json::from_value(field("dit_config")).map_err(json_err)?;
    let text_config: SmallEncoderConfig =
        serde_json::from_value(field("text_config")).map_err(json_err)?;
    let mut tokenizer: WordTokenizer =
        serde_json::from_value(field("tokenizer")).map_err(json_err)?;
    tokenizer.reindex();
    let tensors = checkpoint::load_tensors(&ck, if ema { "ema" } else { "model" })?;
    let (dit, text) = models_from_tensors(
        &dit_config,
        &text_config,
        &tokenizer,
        &tensors,
        &Device::Cpu,
    )?;
    Ok(TrainedDit {
        dit,
        text,
        dit_config,
        text_config,
        tokenizer,
        step: meta["step"].as_u64().unwrap_or(0) as usize,
    })
}

/// File names inside the exported text encoder folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The vocabulary of an exported `text/` folder.
fn read_tokenizer(text_dir: &Path) -> Result<WordTokenizer> {
    let mut tok: WordTokenizer = read_json_file(&text_dir.join(TOKENIZER_FILE))?;
    tok.reindex();
    Ok(tok)
}

fn write_json_atomic(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Exports the EMA weights of run `out`'s latest checkpoint into a model folder:
/// `dit/{model.safetensors, config.json}` (diffusers names and config) and
/// `text/{model.safetensors, config.json, tokenizer.json}`, fp16.
pub fn export_dit(out: &Path, model_dir: &Path) -> Result<()> {
    let ck_dir = out.join("checkpoints");
    let ck =
        checkpoint::latest(&ck_dir)?.ok_or_else(|| TrainError::NoCheckpoint(ck_dir.clone()))?;
    export_dit_checkpoint(&ck, model_dir)
}

/// [`export_dit`] of one checkpoint folder (`out/checkpoints/step-N`).
pub fn export_dit_checkpoint(ck: &Path, model_dir: &Path) -> Result<()> {
    let meta = checkpoint::load_meta(ck)?;
    let ema = checkpoint::load_tensors(ck, "ema")?;
    let trained = meta["prior_steps"].as_u64().unwrap_or(0) + meta["step"].as_u64().unwrap_or(0);
    for (part, config, class) in [
        ("dit", meta["dit_config"].clone(), "WanTransformer3DModel"),
        ("text", meta["text_config"].clone(), "SmallTextEncoder"),
    ] {
        let dir = model_dir.join(part);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let prefix = format!("{part}.");
        let tensors: HashMap<String, Tensor> = ema
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        write_f16_atomic(&dir.join("model.safetensors"), &tensors)?;
        let mut config = config;
        if let Some(o) = config.as_object_mut() {
            o.insert("_class_name".into(), class.into());
            o.insert("_trained_steps".into(), trained.into());
        }
        write_json_atomic(&dir.join("config.json"), &config)?;
    }
    write_json_atomic(
        &model_dir.join("text").join(TOKENIZER_FILE),
        &meta["tokenizer"],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reject_bad_sizes_and_buckets() {
        let ok = DitTrainOptions::tiny(PathBuf::from("/tmp/x"));
        assert!(ok.validate().is_ok());
        let err = |o: DitTrainOptions| {
            o.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let msg = err(DitTrainOptions {
            size: 72,
            ..ok.clone()
        });
        assert!(msg.contains("use 64 or 80"), "{msg}");
        let msg = err(DitTrainOptions {
            buckets: vec![BucketSpec {
                frames: 32,
                count: 4,
            }],
            ..ok.clone()
        });
        assert!(msg.contains("4k+1"), "{msg}");
        let msg = err(DitTrainOptions {
            lr_scales: vec![("dit.blocks.0.".into(), f64::NAN)],
            ..ok.clone()
        });
        assert!(msg.contains("dit.blocks.0."), "{msg}");
        let msg = err(DitTrainOptions {
            config: "huge".into(),
            ..ok.clone()
        });
        assert!(msg.contains("unknown DiT config"), "{msg}");
        let msg = err(DitTrainOptions {
            objects: Some(1),
            data: Some("clips".into()),
            ..ok.clone()
        });
        assert!(msg.contains("drop --data"), "{msg}");
        let msg = err(DitTrainOptions {
            heading: true,
            data: Some("clips".into()),
            ..ok.clone()
        });
        assert!(
            msg.contains("--heading") && msg.contains("drop --data"),
            "{msg}"
        );
        let msg = err(DitTrainOptions {
            objects: Some(0),
            ..ok.clone()
        });
        assert!(msg.contains("1..=4"), "{msg}");
        let msg = err(DitTrainOptions {
            config: "no/such/config.json".into(),
            ..ok
        });
        assert!(msg.contains("config.json not found"), "{msg}");
        let Err(e) = load_vae(Some(Path::new("no/such/vae")), 0, &Device::Cpu) else {
            panic!("no VAE there")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("no VAE here") && msg.contains("--vae"),
            "{msg}"
        );
    }

    #[test]
    fn lr_scale_flag_parses_prefix_and_scale() {
        assert_eq!(
            parse_lr_scale("dit.pos_embedder.=30"),
            Ok(("dit.pos_embedder.".to_string(), 30.0))
        );
        for bad in ["dit.pos_embedder.", "=2", "dit.=x", "dit.=-1", "dit.=inf"] {
            let msg = parse_lr_scale(bad).unwrap_err();
            assert!(msg.contains(bad), "{bad}: {msg}");
        }
    }

    #[test]
    fn timesteps_flag_parses_both_distributions() {
        assert_eq!(
            TimestepDist::parse("uniform:3"),
            Ok(TimestepDist::ShiftedUniform { shift: 3.0 })
        );
        assert_eq!(
            TimestepDist::parse("logit-normal"),
            Ok(TimestepDist::LogitNormal {
                mean: 0.0,
                std: 1.0,
                shift: 1.0
            })
        );
        assert_eq!(
            TimestepDist::parse("logit-normal:-0.5,1.2,2"),
            Ok(TimestepDist::LogitNormal {
                mean: -0.5,
                std: 1.2,
                shift: 2.0
            })
        );
        for bad in [
            "normal",
            "uniform:x",
            "uniform:1,2",
            "uniform:0",
            "logit-normal:0",
        ] {
            let msg = TimestepDist::parse(bad).unwrap_err();
            assert!(msg.contains(bad), "{bad}: {msg}");
        }
    }

    #[test]
    fn gradient_accumulation_sums_parameter_grads_only() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.0], &dev)?;
        let named = vec![("a".to_string(), a.clone())];
        let mut acc = GradStore::default();
        for k in [1.0, 3.0] {
            let hidden = (a.as_tensor() * k)?;
            let g = hidden.sum_all()?.backward()?;
            accumulate(&mut acc, &g, &named)?;
        }
        assert_eq!(
            acc.get(&a).map(|g| g.to_vec1::<f32>()).transpose()?,
            Some(vec![4.0, 4.0])
        );
        assert_eq!(acc.get_ids().count(), 1);
        Ok(())
    }

    #[test]
    fn seeded_init_is_deterministic_and_follows_hints() -> Result<()> {
        let dev = Device::Cpu;
        let tok = WordTokenizer::from_words(["red".to_string(), "circle".to_string()], 8);
        let dcfg = dit_config_by_name("micro")?;
        let tcfg = text_config_for(&dcfg, tok.vocab_size(), 1, 8);
        let a = build_models(&dcfg, &tcfg, &tok, 5, &dev)?;
        let b = build_models(&dcfg, &tcfg, &tok, 5, &dev)?;
        let c = build_models(&dcfg, &tcfg, &tok, 6, &dev)?;
        let mut differs = false;
        for ((n, x), ((_, y), (_, z))) in a.named.iter().zip(b.named.iter().zip(&c.named)) {
            let d = (x.as_tensor() - y.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(d, 0.0, "{n} differs for the same seed");
            let e = (x.as_tensor() - z.as_tensor())?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            differs |= e > 0.0;
            let flat = x.as_tensor().flatten_all()?;
            if n.ends_with("proj_out.weight") || n.ends_with("scale_shift_table") {
                assert_eq!(
                    flat.abs()?.max(0)?.to_scalar::<f32>()?,
                    0.0,
                    "{n}: adaLN-Zero"
                );
            }
            if n == "text.token_embedding.weight" {
                let std = flat.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
                assert!((std - 0.02).abs() < 0.01, "{n}: std {std}");
            }
        }
        assert!(differs, "another seed gives other weights");
        Ok(())
    }
}
