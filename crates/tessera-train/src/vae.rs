//! VAE training: `L1 + λ_grad·|∇y − ∇x| + λ_KL·KL`, with optional MSE, `1 − SSIM` and cycle
//! terms, on mixed clip lengths (1…33 frames, so images
//! and videos share one latent), AdamW with warmup + cosine, gradient clipping, EMA, JSONL log,
//! atomic checkpoints, exact resume. Also evaluation (PSNR/SSIM) and the fp16 export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tessera_models::device::DeviceSpec;
use tessera_models::vae::{
    init_varmap, tensor_to_video, video_to_tensor, AutoencoderKLWan, Config,
};

use crate::data::{crop_planes, random_crop, ClipSource, FolderSource, WorldSource};
use crate::ema::Ema;
use crate::log::JsonlLog;
use crate::optim::{AdamW, AdamWParams};
use crate::rng::{randn, step_rng};
use crate::schedule::WarmupCosine;
use crate::{checkpoint, io_err, Flow, Result, TrainError};

/// Everything a VAE run depends on; stored in each checkpoint and checked on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeTrainOptions {
    /// Dataset folder of videos; `None` = the shapes world generated on the fly.
    pub data: Option<PathBuf>,
    /// Held-out folder evaluated (EMA weights, 33-frame clips) every `eval_every` steps.
    pub val_data: Option<PathBuf>,
    /// `tiny`, `small`, `tiny-residual` or `wan2.1`.
    pub config: String,
    /// Run directory: `log.jsonl`, `checkpoints/`, `export/`.
    pub out: PathBuf,
    /// Total optimizer steps.
    pub steps: usize,
    /// Frames per step: a step takes `max(1, frames_per_step / T)` clips of one length `T`.
    pub frames_per_step: usize,
    /// Clip lengths drawn uniformly per step (each `4k+1`).
    pub clip_lengths: Vec<usize>,
    /// Frame side the source provides.
    pub size: usize,
    /// Train on random square crops of this side (cheaper; convolutions transfer to full size).
    pub crop: Option<usize>,
    /// Peak learning rate.
    pub lr: f64,
    pub warmup: usize,
    pub adamw: AdamWParams,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    pub ema_decay: f64,
    /// Weight of the image-gradient L1 term (keeps edges sharp; cheaper than SSIM).
    pub grad_weight: f64,
    /// KL weight: small, the latent only needs to stay bounded and smooth.
    pub kl_weight: f64,
    /// Weight of an MSE term next to the L1. L1's gradient is as large on a nearly right backdrop
    /// pixel as on a missing object; MSE's grows with the error, so it steers a decoder that
    /// already has the backdrop toward the objects (and PSNR is an MSE).
    #[serde(default)]
    pub mse_weight: f64,
    /// Weight of a cycle term, `L1(D(E(tail)), tail)` with `tail` the last 5 decoded frames
    /// encoded as a clip of their own: long videos and loops condition later windows on decoded
    /// frames re-encoded that way, so a decoder that breaks this round trip shows seams. With a
    /// frozen encoder (`train_encoder = false`) only the decoder learns from it.
    #[serde(default)]
    pub cycle_weight: f64,
    /// Weight of a `1 − SSIM` term on the luma, [`ssim_loss`]: the structure that PSNR-driven
    /// terms blur away (checker floors, thin rings) and that SSIM, one of the VAE's targets,
    /// scores.
    #[serde(default)]
    pub ssim_weight: f64,
    /// Gaussian noise added to the latent before decoding, per item `σ ~ U(0, latent_noise)` in
    /// units of each channel's spread (a DiT's normalised latent space). A DiT's samples land
    /// near the encoder's latents, not on them, and a decoder that has only seen exact latents
    /// draws the difference as speckles and smudges. Measured (TRAINING.md, session 14): at 0.5
    /// and 1.0 the clean-latent PSNR held and the shipped DiT's clips flickered less; prompt
    /// following did not change.
    #[serde(default)]
    pub latent_noise: f64,
    /// Pixels in and around the objects' boxes count `1 + object_weight` times in the L1 and MSE
    /// terms (shapes world only: it knows where its objects are). A few percent of the pixels,
    /// they hardly move a plain mean, and a blurred object loses its shape. At 4 on the shipped
    /// decoder: real clips' colour and position through it up, their PSNR the same, and the
    /// DiT's near-miss latents drawn as speckles (TRAINING.md, session 16).
    #[serde(default)]
    pub object_weight: f64,
    pub checkpoint_every: usize,
    /// 0 = never.
    pub eval_every: usize,
    pub eval_clips: usize,
    pub resume: bool,
    pub seed: u64,
    /// Start from an exported model folder (config must match `config`) instead of random weights.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// `false` trains only the decoder: the encoder, and so the latent space a DiT was trained
    /// on, stays bit-identical while reconstructions keep improving.
    #[serde(default = "yes")]
    pub train_encoder: bool,
    /// Where the model trains; may change on resume.
    #[serde(default)]
    pub device: DeviceSpec,
}

fn yes() -> bool {
    true
}

impl VaeTrainOptions {
    /// Defaults for the tiny VAE on 64×64 shapes world.
    pub fn tiny(out: PathBuf) -> Self {
        Self {
            data: None,
            val_data: None,
            config: "tiny".into(),
            out,
            steps: 4000,
            frames_per_step: 17,
            clip_lengths: vec![1, 5, 9, 17, 33],
            size: 64,
            crop: Some(32),
            lr: 2e-3,
            warmup: 100,
            adamw: AdamWParams::default(),
            max_grad_norm: 1.0,
            ema_decay: 0.999,
            grad_weight: 0.5,
            kl_weight: 1e-6,
            mse_weight: 0.0,
            cycle_weight: 0.0,
            ssim_weight: 0.0,
            latent_noise: 0.0,
            object_weight: 0.0,
            checkpoint_every: 100,
            eval_every: 500,
            eval_clips: 8,
            resume: false,
            seed: 0,
            init_from: None,
            train_encoder: true,
            device: DeviceSpec::Cpu,
        }
    }

    pub fn validate(&self) -> Result<Config> {
        let bad = |m: String| Err(TrainError::Options(m));
        let cfg = config_by_name(&self.config)?;
        if self.steps == 0 || self.frames_per_step == 0 || self.checkpoint_every == 0 {
            return bad("steps, frames_per_step and checkpoint_every must be positive".into());
        }
        let f = cfg.temporal_factor();
        if self.clip_lengths.is_empty()
            || self
                .clip_lengths
                .iter()
                .any(|&t| t == 0 || !(t - 1).is_multiple_of(f))
        {
            return bad(format!(
                "clip lengths {:?} must be non-empty and each {f}k+1",
                self.clip_lengths
            ));
        }
        let s = cfg.spatial_factor();
        let side = self.crop.unwrap_or(self.size).min(self.size);
        if !side.is_multiple_of(s) || !self.size.is_multiple_of(s) || side == 0 {
            return bad(format!(
                "size {} and crop {:?} must be multiples of {s}",
                self.size, self.crop
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        for (name, w) in [
            ("grad_weight", self.grad_weight),
            ("kl_weight", self.kl_weight),
            ("mse_weight", self.mse_weight),
            ("cycle_weight", self.cycle_weight),
            ("ssim_weight", self.ssim_weight),
            ("latent_noise", self.latent_noise),
            ("object_weight", self.object_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(format!("{name} {w} must be zero or positive"));
            }
        }
        if self.object_weight > 0.0 && self.data.is_some() {
            return bad(
                "object_weight needs the shapes world's object boxes; a --data folder has none \
                 (drop --object-weight or --data)"
                    .into(),
            );
        }
        Ok(cfg)
    }
}

/// A preset ([`Config::preset`]) or a `config.json` file in diffusers' format.
pub fn config_by_name(name: &str) -> Result<Config> {
    Config::preset_or_file(name).map_err(|e| TrainError::Options(e.to_string()))
}

/// One step's numbers, for the progress callback and the log.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub loss: f64,
    pub l1: f64,
    pub kl: f64,
    /// Of the clamped reconstruction of this step's batch, dB.
    pub psnr: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub frames: usize,
    pub it_per_s: f64,
    /// Set on steps that ran an evaluation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_psnr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_ssim: Option<f64>,
}

/// Result of a run.
#[derive(Debug, Clone)]
pub struct VaeTrainSummary {
    pub steps_done: usize,
    pub last: Option<StepReport>,
    pub checkpoint: PathBuf,
}

/// Trains with the source `opts.data` names; see [`train_vae_with`].
pub fn train_vae(
    opts: &VaeTrainOptions,
    progress: impl FnMut(&StepReport) -> Flow,
) -> Result<VaeTrainSummary> {
    let max_len = opts.clip_lengths.iter().copied().max().unwrap_or(1);
    let mut source: Box<dyn ClipSource> = match &opts.data {
        Some(dir) => Box::new(FolderSource::open(dir, opts.size, max_len)?),
        None => Box::new(WorldSource::new(
            opts.size,
            opts.seed,
            tessera_world::Split::Train,
        )),
    };
    let val = match &opts.val_data {
        Some(dir) => {
            let f = FolderSource::open(dir, opts.size, 33)?;
            (0..f.len().min(opts.eval_clips))
                .filter_map(|i| f.head(i, 33))
                .collect()
        }
        None if opts.data.is_none() => {
            let w = WorldSource::new(opts.size, 0, tessera_world::Split::Val);
            (0..opts.eval_clips as u64)
                .map(|i| w.clip(i, 33))
                .collect::<Result<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    train_vae_with(opts, source.as_mut(), &val, progress)
}

/// Parameters the decoder-only stage trains: everything after the latent.
fn is_decoder_param(name: &str) -> bool {
    name.starts_with("decoder.") || name.starts_with("post_quant_conv.")
}

/// Sets every parameter from an exported model folder, naming any missing or misshapen tensor.
/// A folder whose config has fewer residual blocks per level (else the same) grows into this
/// one: its tensors move to their blocks' new indices and each added block starts as an
/// identity (its last convolution zero), so the run starts from the smaller model's function.
fn load_init(all: &[(String, Var)], cfg: &Config, dir: &Path) -> Result<()> {
    let path = tessera_models::find_weights(dir).ok_or_else(|| {
        TrainError::Data(format!(
            "{}: no weights ({:?}); --init-from needs an exported VAE folder",
            dir.display(),
            tessera_models::WEIGHT_FILES
        ))
    })?;
    let from = Config::from_diffusers_json(&dir.join("config.json"))
        .map_err(|e| TrainError::Data(format!("{}: {e}", dir.display())))?;
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    // `from` with one field (and the latent statistics, which export measures) taken from `cfg`:
    // equal to `cfg` when that field is all the two differ in.
    let only_differs_in = |set: fn(&mut Config, &Config), what: &str| {
        let mut c = Config {
            latents_mean: cfg.latents_mean.clone(),
            latents_std: cfg.latents_std.clone(),
            ..from.clone()
        };
        set(&mut c, cfg);
        if &c == cfg {
            Ok(())
        } else {
            Err(TrainError::CheckpointMismatch {
                path: path.clone(),
                what: format!("{what} and also differs in another field; change one at a time"),
            })
        }
    };
    if from.z_dim > cfg.z_dim {
        only_differs_in(|c, to| c.z_dim = to.z_dim, "has more latent channels")?;
        return checkpoint::set_vars(all, "", &narrow_latent(&from, cfg.z_dim, tensors)?, &path);
    }
    if from.num_res_blocks >= cfg.num_res_blocks {
        return checkpoint::set_vars(all, "", &tensors, &path);
    }
    only_differs_in(
        |c, to| c.num_res_blocks = to.num_res_blocks,
        "has fewer residual blocks (a model only grows deeper)",
    )?;
    let grown = grow_deeper(&from, cfg, tensors);
    let (old, new): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .partition(|(n, _)| grown.contains_key(n));
    checkpoint::set_vars(&old, "", &grown, &path)?;
    for (name, var) in new {
        // The residual branch's last layer (a block's `conv2`, an attention's `proj`).
        let last = [".conv2.weight", ".conv2.bias", ".proj.weight", ".proj.bias"];
        if last.iter().any(|s| name.ends_with(s)) {
            var.set(&var.as_tensor().zeros_like()?)?;
        }
    }
    Ok(())
}

/// A model's tensors for the same model with `z` latent channels: the `z` channels of widest
/// spread (`latents_std`) are kept, with their log-variances, in every tensor at the latent
/// (the encoder's `conv_out` and `quant_conv` on the mean and log-variance halves,
/// `post_quant_conv`, the decoder's `conv_in`). The decoder starts knowing how to draw from the
/// channels that carried the most; what the dropped ones held is learnt again.
fn narrow_latent(
    from: &Config,
    z: usize,
    mut tensors: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut by_spread: Vec<usize> = (0..from.z_dim).collect();
    by_spread.sort_by(|&a, &b| from.latents_std[b].total_cmp(&from.latents_std[a]));
    let mut keep: Vec<u32> = by_spread[..z].iter().map(|&c| c as u32).collect();
    keep.sort_unstable();
    let both: Vec<u32> = keep
        .iter()
        .copied()
        .chain(keep.iter().map(|&c| c + from.z_dim as u32))
        .collect();
    let dev = Device::Cpu;
    let (keep, both) = (Tensor::new(keep, &dev)?, Tensor::new(both, &dev)?);
    // (tensor, rows kept, columns kept): rows are output channels, columns input channels.
    let plan = [
        ("encoder.conv_out.weight", Some(&both), None),
        ("encoder.conv_out.bias", Some(&both), None),
        ("quant_conv.weight", Some(&both), Some(&both)),
        ("quant_conv.bias", Some(&both), None),
        ("post_quant_conv.weight", Some(&keep), Some(&keep)),
        ("post_quant_conv.bias", Some(&keep), None),
        ("decoder.conv_in.weight", None, Some(&keep)),
    ];
    for (name, rows, cols) in plan {
        let Some(mut t) = tensors.remove(name) else {
            continue;
        };
        if let Some(r) = rows {
            t = t.index_select(r, 0)?;
        }
        if let Some(c) = cols {
            t = t.index_select(c, 1)?;
        }
        tensors.insert(name.to_string(), t);
    }
    Ok(tensors)
}

/// Renames a model's tensors for the same model with more residual blocks per level: the
/// encoder's flat `down_blocks` indices shift; the decoder's new blocks come last in each level,
/// so its names stay.
fn grow_deeper(
    from: &Config,
    to: &Config,
    tensors: HashMap<String, Tensor>,
) -> HashMap<String, Tensor> {
    let to_blocks = to.encoder_down_blocks();
    let moved: HashMap<String, String> = from
        .encoder_down_blocks()
        .iter()
        .enumerate()
        .filter_map(|(k, b)| {
            let k2 = to_blocks.iter().position(|c| c == b)?;
            Some((
                format!("encoder.down_blocks.{k}."),
                format!("encoder.down_blocks.{k2}."),
            ))
        })
        .collect();
    tensors
        .into_iter()
        .map(|(name, t)| {
            let renamed = moved.iter().find_map(|(a, b)| {
                name.strip_prefix(a.as_str())
                    .map(|rest| format!("{b}{rest}"))
            });
            (renamed.unwrap_or(name), t)
        })
        .collect()
}

fn named_vars(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Data("varmap lock poisoned".into()))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// A batch for `step`: `(clips, 3, T, S, S)` in `[-1, 1]`, drawn from the step's own RNG, and
/// with `object_weight` the per-pixel loss weights `1 + object_weight·box`, `(clips, 1, T, S, S)`.
fn batch_for_step(
    opts: &VaeTrainOptions,
    source: &mut dyn ClipSource,
    rng: &mut rand_chacha::ChaCha8Rng,
    dev: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let t = opts.clip_lengths[rng.random_range(0..opts.clip_lengths.len())];
    let n = (opts.frames_per_step / t).max(1);
    let (mut clips, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let (v, boxes) = if opts.object_weight > 0.0 {
            source.sample_with_objects(rng, t)?
        } else {
            (source.sample(rng, t)?, None)
        };
        let width = v.width as usize;
        let (v, window) = match opts.crop {
            Some(c) => random_crop(&v, c, rng),
            None => {
                let height = v.height as usize;
                (v, [0, 0, width, height])
            }
        };
        if opts.object_weight > 0.0 {
            let boxes = boxes.ok_or_else(|| {
                TrainError::Options("object_weight: this clip source has no object boxes".into())
            })?;
            let [_, _, cw, ch] = window;
            let flat: Vec<f32> = crop_planes(&boxes, width, 1, window)
                .concat()
                .into_iter()
                .map(|b| 1.0 + opts.object_weight as f32 * f32::from(b))
                .collect();
            weights.push(Tensor::from_vec(flat, (1, 1, t, ch, cw), dev)?);
        }
        clips.push(video_to_tensor(&v, dev)?);
    }
    let weights = (opts.object_weight > 0.0)
        .then(|| Tensor::cat(&weights, 0))
        .transpose()?;
    Ok((Tensor::cat(&clips, 0)?, weights))
}

/// `L1 + λ_grad·L1(∇) + λ_KL·KL + λ_MSE·MSE`, plus the batch PSNR (dB, of the clamped output).
struct Losses {
    total: Tensor,
    l1: f64,
    kl: f64,
    psnr: f64,
}

fn losses(
    vae: &AutoencoderKLWan,
    x: &Tensor,
    weights: Option<&Tensor>,
    noise_rng: &mut rand_chacha::ChaCha8Rng,
    opts: &VaeTrainOptions,
) -> Result<Losses> {
    let post = vae.encode(x)?;
    let eps = randn(noise_rng, post.mean.shape(), x.device())?;
    let mut z = post.sample_with(&eps)?;
    if !opts.train_encoder {
        z = z.detach(); // gradients stop at the frozen encoder
    }
    if opts.latent_noise > 0.0 {
        z = (&z + latent_noise(&z, noise_rng, opts.latent_noise)?)?;
    }
    let y = vae.decode_unclamped(&z)?;
    let err = (&y - x)?;
    let weighted = |e: Tensor| -> candle_core::Result<Tensor> {
        match weights {
            Some(w) => e.broadcast_mul(w)?.mean_all(),
            None => e.mean_all(),
        }
    };
    let l1 = err.abs()?.mean_all()?;
    let diff = |t: &Tensor, dim: usize| -> candle_core::Result<Tensor> {
        let n = t.dim(dim)?;
        t.narrow(dim, 1, n - 1)? - t.narrow(dim, 0, n - 1)?
    };
    let gx = (diff(&y, 4)? - diff(x, 4)?)?.abs()?.mean_all()?;
    let gy = (diff(&y, 3)? - diff(x, 3)?)?.abs()?.mean_all()?;
    let kl = post.kl_mean()?;
    let l1_term = match weights {
        Some(_) => weighted(err.abs()?)?,
        None => l1.clone(),
    };
    let mut total = ((l1_term + ((gx + gy)? * opts.grad_weight)?)? + (&kl * opts.kl_weight)?)?;
    if opts.mse_weight > 0.0 {
        total = (total + (weighted(err.sqr()?)? * opts.mse_weight)?)?;
    }
    if opts.cycle_weight > 0.0 {
        // What the next long-video window is conditioned on: the last 4·1+1 decoded frames,
        // encoded as a clip of their own (first frame alone) and decoded again.
        let t = y.dim(2)?;
        let tail = y.narrow(2, t - t.min(5), t.min(5))?;
        let again = vae.decode_unclamped(&vae.encode(&tail)?.mean)?;
        let cycle = (again - tail.detach())?.abs()?.mean_all()?;
        total = (total + (cycle * opts.cycle_weight)?)?;
    }
    if opts.ssim_weight > 0.0 {
        total = (total + (ssim_loss(&y, x)? * opts.ssim_weight)?)?;
    }
    let mse = (y.detach().clamp(-1f32, 1f32)? - x)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    Ok(Losses {
        total,
        l1: l1.to_scalar::<f32>()? as f64,
        kl: kl.to_scalar::<f32>()? as f64,
        // Range 2 ([-1, 1]) → peak² = 4.
        psnr: 10.0 * (4.0 / mse.max(1e-12)).log10(),
    })
}

/// `σ·s_c·ε` with `σ ~ U(0, max)` per item and `s_c` channel `c`'s standard deviation over the
/// batch (a constant: the noise's size does not train the encoder).
fn latent_noise(z: &Tensor, rng: &mut rand_chacha::ChaCha8Rng, max: f64) -> Result<Tensor> {
    let (b, c) = (z.dim(0)?, z.dim(1)?);
    let per_channel = z.detach().transpose(0, 1)?.reshape((c, ()))?;
    let mean = per_channel.mean_keepdim(1)?;
    let std = per_channel
        .broadcast_sub(&mean)?
        .sqr()?
        .mean_keepdim(1)?
        .sqrt()?
        .reshape((1, c, 1, 1, 1))?;
    let sigma: Vec<f32> = (0..b).map(|_| rng.random_range(0.0..max) as f32).collect();
    let sigma = Tensor::from_vec(sigma, (b, 1, 1, 1, 1), z.device())?;
    let eps = randn(rng, z.shape(), z.device())?;
    Ok(eps.broadcast_mul(&std)?.broadcast_mul(&sigma)?)
}

/// `1 − SSIM` of the luma of `y` against `x` (`(B, 3, T, H, W)` in `[-1, 1]`), averaged over
/// frames: `tessera_media::ssim`'s window and constants as differentiable tensor ops (two
/// separable Gaussian convolutions per statistic), so the term trains what the metric scores.
pub fn ssim_loss(y: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (b, _, t, h, w) = y.dims5()?;
    let window = tessera_media::ssim_window(w, h);
    let k = window.len();
    let taps = Tensor::from_vec(window, k, y.device())?.to_dtype(y.dtype())?;
    let (row, col) = (taps.reshape((1, 1, 1, k))?, taps.reshape((1, 1, k, 1))?);
    let blur = |m: &Tensor| -> candle_core::Result<Tensor> {
        m.conv2d(&row, 0, 1, 1, 1)?.conv2d(&col, 0, 1, 1, 1)
    };
    // Luma in [0, 1], one plane per frame: (B·T, 1, H, W).
    let luma = |v: &Tensor| -> candle_core::Result<Tensor> {
        let v = ((v + 1.0)? * 0.5)?;
        let [wr, wg, wb] = tessera_media::LUMA;
        let l = ((v.narrow(1, 0, 1)? * wr)? + (v.narrow(1, 1, 1)? * wg)?)?;
        let l = (l + (v.narrow(1, 2, 1)? * wb)?)?;
        l.permute((0, 2, 1, 3, 4))?.reshape((b * t, 1, h, w))
    };
    let (ly, lx) = (luma(y)?, luma(x)?);
    let (my, mx) = (blur(&ly)?, blur(&lx)?);
    let vy = (blur(&ly.sqr()?)? - my.sqr()?)?;
    let vx = (blur(&lx.sqr()?)? - mx.sqr()?)?;
    let cov = (blur(&(&ly * &lx)?)? - (&my * &mx)?)?;
    let (k1, k2) = tessera_media::SSIM_K;
    let (c1, c2) = (k1 * k1, k2 * k2);
    let num = ((((&my * &mx)? * 2.0)? + c1)? * ((cov * 2.0)? + c2)?)?;
    let den = (((my.sqr()? + mx.sqr()?)? + c1)? * ((vy + vx)? + c2)?)?;
    Ok((1.0 - (num / den)?.mean_all()?)?)
}

/// The training loop over any clip source; `val` (if any) is evaluated with the EMA weights.
/// Resuming (`opts.resume`) restores model, EMA, optimizer and step from `out/checkpoints`, and
/// because each step's data and noise come from `(seed, step)`, continues the same curve.
pub fn train_vae_with(
    opts: &VaeTrainOptions,
    source: &mut dyn ClipSource,
    val: &[tessera_media::Video],
    mut progress: impl FnMut(&StepReport) -> Flow,
) -> Result<VaeTrainSummary> {
    let cfg = opts.validate()?;
    if source.size() != opts.size {
        return Err(TrainError::Options(format!(
            "source gives {}px frames, options say size {}",
            source.size(),
            opts.size
        )));
    }
    let dev = opts.device.open()?;
    std::fs::create_dir_all(&opts.out).map_err(io_err(&opts.out))?;
    let ck_dir = opts.out.join("checkpoints");
    let resume_ck = checkpoint::run_start(&ck_dir, opts.resume)?;
    let varmap = init_varmap(&cfg, opts.seed, &dev)?;
    let all = named_vars(&varmap)?;
    if let Some(dir) = &opts.init_from {
        load_init(&all, &cfg, dir)?;
    }
    let vae = AutoencoderKLWan::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let named: Vec<(String, Var)> = all
        .iter()
        .filter(|(n, _)| opts.train_encoder || is_decoder_param(n))
        .cloned()
        .collect();
    let mut opt = AdamW::new(named.clone(), opts.adamw)?;
    // Over every parameter, updated only for the trained ones: frozen weights stay exact.
    let mut ema = Ema::new(&all, opts.ema_decay)?;
    let mut start = 0usize;
    if let Some(ck) = resume_ck {
        let meta = checkpoint::load_meta(&ck)?;
        let saved: VaeTrainOptions =
            serde_json::from_value(meta["options"].clone()).map_err(|source| TrainError::Json {
                path: ck.join("state.json"),
                source,
            })?;
        // Everything but the run length, the resume flag and the device must match, or the
        // curve changes.
        let same = VaeTrainOptions {
            steps: opts.steps,
            resume: opts.resume,
            device: opts.device,
            ..saved.clone()
        };
        if let Some(changed) = checkpoint::changed_options(&same, opts) {
            return Err(TrainError::CheckpointMismatch {
                path: ck,
                what: format!(
                    "{changed} (only --steps and --device may change on resume; pass the \
                     run's other options as they were)"
                ),
            });
        }
        checkpoint::set_vars(&all, "", &checkpoint::load_tensors(&ck, "model")?, &ck)?;
        ema.restore(checkpoint::load_tensors(&ck, "ema")?)?;
        start = meta["step"].as_u64().unwrap_or(0) as usize;
        opt.load_state(&checkpoint::load_tensors(&ck, "optim")?, start)?;
    }
    let mut log = JsonlLog::open(&opts.out.join("log.jsonl"), opts.resume.then_some(start))?;
    let sched = WarmupCosine {
        peak: opts.lr,
        warmup: opts.warmup,
        total: opts.steps,
        floor: 0.05,
    };
    let save =
        |step: usize, opt: &AdamW, ema: &Ema, last: Option<&StepReport>| -> Result<PathBuf> {
            let model: HashMap<String, Tensor> = all
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            let meta = serde_json::json!({
                "step": step,
                "options": opts,
                "config": cfg,
                "last": last,
                "rng": {"kind": "chacha8 per step", "seed": opts.seed, "next_step": step},
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
    let mut last: Option<StepReport> = None;
    let mut last_ck = checkpoint::latest(&ck_dir)?.unwrap_or_else(|| ck_dir.clone());
    let mut t0 = Instant::now();
    for step in start..opts.steps {
        let mut rng = step_rng(opts.seed, step as u64, 0);
        let (x, weights) = batch_for_step(opts, source, &mut rng, &dev)?;
        let frames = x.dim(0)? * x.dim(2)?;
        let mut noise_rng = step_rng(opts.seed, step as u64, 1);
        let l = losses(&vae, &x, weights.as_ref(), &mut noise_rng, opts)?;
        let loss = l.total.to_scalar::<f32>()? as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { step, value: loss });
        }
        let grads = l.total.backward()?;
        let gnorm = opt.grad_norm(&grads)?;
        if !gnorm.is_finite() {
            return Err(TrainError::NonFinite { step, value: gnorm });
        }
        let scale = if gnorm > opts.max_grad_norm {
            opts.max_grad_norm / gnorm
        } else {
            1.0
        };
        let lr = sched.lr(step);
        opt.step(&grads, lr, scale)?;
        ema.update(&named, step)?;
        let done = step + 1;
        let mut report = StepReport {
            step: done,
            loss,
            l1: l.l1,
            kl: l.kl,
            psnr: l.psnr,
            lr,
            grad_norm: gnorm,
            frames,
            it_per_s: 1.0 / t0.elapsed().as_secs_f64().max(1e-9),
            val_psnr: None,
            val_ssim: None,
        };
        t0 = Instant::now();
        if !val.is_empty()
            && opts.eval_every > 0
            && (done % opts.eval_every == 0 || done == opts.steps)
        {
            let ev = ema_model(&cfg, &ema.shadow, &dev)?;
            let (p, s) = eval_vae(&ev, val)?;
            report.val_psnr = Some(p);
            report.val_ssim = Some(s);
            t0 = Instant::now();
        }
        log.write(
            &serde_json::to_value(&report).map_err(|source| TrainError::Json {
                path: opts.out.join("log.jsonl"),
                source,
            })?,
        )?;
        let flow = progress(&report);
        if done % opts.checkpoint_every == 0 || done == opts.steps || flow == Flow::Stop {
            last_ck = save(done, &opt, &ema, Some(&report))?;
            t0 = Instant::now();
        }
        last = Some(report);
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(VaeTrainSummary {
        steps_done: last.as_ref().map_or(start, |r| r.step),
        last,
        checkpoint: last_ck,
    })
}

/// A model from EMA (or any) named tensors.
pub fn ema_model(
    cfg: &Config,
    shadow: &HashMap<String, Tensor>,
    dev: &Device,
) -> Result<AutoencoderKLWan> {
    Ok(AutoencoderKLWan::new(
        cfg,
        VarBuilder::from_tensors(shadow.clone(), DType::F32, dev),
    )?)
}

/// Mean PSNR (dB) and SSIM of `clips` reconstructed through the inference path (posterior
/// mean, chunked encode, decode), each clip `4k+1` frames.
pub fn eval_vae(vae: &AutoencoderKLWan, clips: &[tessera_media::Video]) -> Result<(f64, f64)> {
    let dev = vae.device();
    if clips.is_empty() {
        return Err(TrainError::Data("no validation clips".into()));
    }
    let (mut psnr, mut ssim) = (0.0, 0.0);
    for v in clips {
        let x = video_to_tensor(v, dev)?;
        let z = vae.encode_chunked(&x)?.mean;
        let y = vae.decode(&z)?;
        let out = tensor_to_video(&y, v.fps)?;
        psnr += tessera_media::psnr(v, &out)?;
        ssim += tessera_media::ssim(v, &out)?;
    }
    let n = clips.len() as f64;
    Ok((psnr / n, ssim / n))
}

/// Exports the EMA weights of a run's latest checkpoint to `dir` with [`export_vae`] (latent
/// statistics from 32 clips of the run's own data seed, so a decoder-only continuation of a run
/// exports the same statistics as its parent).
pub fn export_vae_run(run: &Path, dir: &Path) -> Result<Config> {
    let ck_dir = run.join("checkpoints");
    let ck = checkpoint::latest(&ck_dir)?.ok_or_else(|| {
        TrainError::Data(format!(
            "{}: no checkpoint to export; pass a `tessera train vae` run folder",
            run.display()
        ))
    })?;
    let meta = checkpoint::load_meta(&ck)?;
    let opts: VaeTrainOptions =
        serde_json::from_value(meta["options"].clone()).map_err(|source| TrainError::Json {
            path: ck.join("state.json"),
            source,
        })?;
    let cfg = config_by_name(&opts.config)?;
    let ema = checkpoint::load_tensors(&ck, "ema")?;
    let mut src = WorldSource::new(opts.size, opts.seed, tessera_world::Split::Train);
    export_vae(&cfg, &ema, &mut src, 32, opts.seed, dir)
}

/// Writes a diffusers-style model folder: `config.json` (with latent statistics measured on
/// `stats_clips` clips of `source`) and `diffusion_pytorch_model.safetensors` in fp16.
pub fn export_vae(
    cfg: &Config,
    weights: &HashMap<String, Tensor>,
    source: &mut dyn ClipSource,
    stats_clips: usize,
    seed: u64,
    dir: &Path,
) -> Result<Config> {
    let dev = Device::Cpu;
    let vae = ema_model(cfg, weights, &dev)?;
    // Per-channel mean/std of posterior means over the clips.
    let mut sum = vec![0f64; cfg.z_dim];
    let mut sq = vec![0f64; cfg.z_dim];
    let mut count = 0usize;
    for i in 0..stats_clips {
        let mut rng = step_rng(seed, i as u64, 7);
        let v = source.sample(&mut rng, 17)?;
        let z = vae.encode(&video_to_tensor(&v, &dev)?)?.mean; // (1, z, T', h, w)
        let per_c = z.squeeze(0)?.flatten_from(1)?; // (z, N)
        let vals: Vec<Vec<f32>> = per_c.to_vec2()?;
        for (c, row) in vals.iter().enumerate() {
            sum[c] += row.iter().map(|v| *v as f64).sum::<f64>();
            sq[c] += row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        }
        count += vals.first().map_or(0, |r| r.len());
    }
    let mut out_cfg = cfg.clone();
    if count > 0 {
        out_cfg.latents_mean = sum.iter().map(|s| (s / count as f64) as f32).collect();
        out_cfg.latents_std = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let m = s / count as f64;
                ((q / count as f64 - m * m).max(1e-8)).sqrt() as f32
            })
            .collect();
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    crate::write_f16_atomic(&dir.join("diffusion_pytorch_model.safetensors"), weights)?;
    let mut json = serde_json::to_value(&out_cfg).map_err(|source| TrainError::Json {
        path: dir.join("config.json"),
        source,
    })?;
    if let Some(o) = json.as_object_mut() {
        o.insert("_class_name".into(), "AutoencoderKLWan".into());
    }
    let cpath = dir.join("config.json");
    let ctmp = dir.join("config.json.tmp");
    let text = serde_json::to_string_pretty(&json).map_err(|source| TrainError::Json {
        path: cpath.clone(),
        source,
    })?;
    std::fs::write(&ctmp, text + "\n").map_err(io_err(&ctmp))?;
    std::fs::rename(&ctmp, &cpath).map_err(io_err(&cpath))?;
    Ok(out_cfg)
}
