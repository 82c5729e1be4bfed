//! Spacetime diffusion transformer in the Wan2.1 layout, so Wan checkpoints load unchanged.
//!
//! Wan: Open and Advanced Large-Scale Video Generative Models (<https://arxiv.org/abs/2503.20314>).
//! Parameter names and numerics follow diffusers' `WanTransformer3DModel`,
//! <https://github.com/huggingface/diffusers/blob/v0.42.1/src/diffusers/models/transformers/transformer_wan.py>,
//! with the output head as in the Wan2.1 checkpoints (a top-level `scale_shift_table`).
//!
//! Data flow: latent `(B, C, T', H', W')` → `1×2×2` patches → `L = T'·H'/2·W'/2` tokens of width
//! `dim` → blocks (adaLN-modulated self-attention with 3D RoPE, cross-attention to the text,
//! GELU-tanh MLP) → modulated LayerNorm → linear head → un-patchify to `(B, C_out, T', H', W')`.
//!
//! Timesteps may be one per sample `(B,)`, one per latent frame `(B, T')` or one per token
//! `(B, L)`; known frames carry `t = 0` and the rest their noise level.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::attention::{attention, AttentionImpl};
use crate::layers::{gelu_tanh, LayerNorm, Linear, RmsNorm};

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Architecture hyper-parameters. Field names are those of diffusers' `config.json`, so a Wan
/// checkpoint's config deserialises directly (extra fields are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Patch extent `(t, h, w)` in latent cells.
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    /// Per-head width; split between time, height and width by the 3D RoPE.
    pub attention_head_dim: usize,
    /// Latent channels in.
    pub in_channels: usize,
    /// Latent channels out (the predicted velocity).
    pub out_channels: usize,
    /// Width of the text encoder's token states.
    pub text_dim: usize,
    /// Width of the sinusoidal timestep features.
    pub freq_dim: usize,
    /// Hidden width of the block MLP.
    pub ffn_dim: usize,
    pub num_layers: usize,
    /// Affine LayerNorm before cross-attention (`norm2`); Wan2.1 has it.
    pub cross_attn_norm: bool,
    /// Epsilon of every LayerNorm/RMSNorm.
    pub eps: f64,
    /// Base of the rotary frequencies.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Only `"rms_norm_across_heads"` exists in Wan2.1; kept to reject other checkpoints clearly.
    #[serde(default = "default_qk_norm")]
    pub qk_norm: Option<String>,
    /// Image-conditioning (Wan I2V) projections; not supported, must be `None`.
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    /// Tessera extension (absent from Wan, so `false` for its checkpoints): the masked mean of
    /// the text states, through an MLP (`condition_embedder.text_pooled_embedder`), is added to
    /// the timestep embedding, as SD3 adds its pooled text vector. Cross-attention alone is easy
    /// to learn to ignore: a small DiT trained from scratch reads the scene from the noisy latent
    /// within a few hundred steps and lets the caption fade; through the modulation of every
    /// block the caption stays on a path it cannot bypass.
    #[serde(default)]
    pub pooled_text: bool,
    /// Tessera extension (absent from Wan): a zero-initialised projection of Fourier features of
    /// each token's *normalised* frame position (`pos_embedder.weight`), added after the patch
    /// embedding. RoPE gives attention relative offsets only, so from pure noise a token cannot
    /// tell where in the frame it is, and "on the left" has nowhere to go; a big model recovers
    /// position from edge effects, a tiny one placed objects independently of the caption
    /// (TRAINING.md, session 12). Normalised coordinates keep "left" meaning left at every
    /// resolution and aspect.
    #[serde(default)]
    pub abs_pos_embed: bool,
}

/// Fourier frequencies per axis of [`Config::abs_pos_embed`]'s features (sin and cos of
/// `π·k·u`, k = 1..=8, for normalised row and column u ∈ (0, 1)).
const POS_FREQS: usize = 8;

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_qk_norm() -> Option<String> {
    Some("rms_norm_across_heads".into())
}

impl Config {
    /// Our CPU-trained default (also the bench reference config).
    pub fn tiny() -> Self {
        Self {
            // Wan's patch: 16× spatial reduction from pixels with the 8× VAE.
            patch_size: [1, 2, 2],
            // 4 × 64 = 256 wide: big enough for shapes world, a train step stays sub-second.
            num_attention_heads: 4,
            // 64 leaves ≥ 10 rotary pairs per axis (frames, rows, columns).
            attention_head_dim: 64,
            // The VAE's 16 latent channels.
            in_channels: 16,
            out_channels: 16,
            // Our small text encoder's width, so no projection bottleneck.
            text_dim: 256,
            // As Wan: enough resolution to tell 1000 timesteps apart.
            freq_dim: 256,
            // 4× the width, the usual transformer ratio.
            ffn_dim: 1024,
            // Depth 6: trains on CPU in hours, still composes objects and motion.
            num_layers: 6,
            cross_attn_norm: true,
            eps: 1e-6,
            rope_theta: default_rope_theta(),
            qk_norm: default_qk_norm(),
            added_kv_proj_dim: None,
            pooled_text: true,
            abs_pos_embed: false,
        }
    }

    /// Wan2.1 T2V 1.3B (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, `transformer/config.json`).
    pub fn wan2_1_1_3b() -> Self {
        Self {
            patch_size: [1, 2, 2],
            num_attention_heads: 12,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: 16,
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 8960,
            num_layers: 30,
            cross_attn_norm: true,
            eps: 1e-6,
            rope_theta: default_rope_theta(),
            qk_norm: default_qk_norm(),
            added_kv_proj_dim: None,
            pooled_text: false,
            abs_pos_embed: false,
        }
    }

    /// Model width (`heads × head_dim`).
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn validate(&self) -> std::result::Result<(), DitError> {
        let bad = |msg: String| Err(DitError::Config(msg));
        if self.patch_size.contains(&0) {
            return bad(format!("patch_size {:?} has a zero", self.patch_size));
        }
        if self.num_attention_heads == 0 || self.num_layers == 0 {
            return bad("num_attention_heads and num_layers must be ≥ 1".into());
        }
        if !self.attention_head_dim.is_multiple_of(2) || self.attention_head_dim < 6 {
            return bad(format!(
                "attention_head_dim {} must be even and ≥ 6 (RoPE needs a rotary pair per axis)",
                self.attention_head_dim
            ));
        }
        if self.freq_dim == 0 || !self.freq_dim.is_multiple_of(2) {
            return bad(format!("freq_dim {} must be even and > 0", self.freq_dim));
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("text_dim", self.text_dim),
            ("ffn_dim", self.ffn_dim),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if self.eps.is_nan()
            || self.eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 1.0
        {
            return bad(format!(
                "eps {} must be > 0 and rope_theta {} > 1",
                self.eps, self.rope_theta
            ));
        }
        if self.qk_norm.as_deref() != Some("rms_norm_across_heads") {
            return bad(format!(
                "qk_norm {:?} unsupported; only \"rms_norm_across_heads\" (Wan2.1)",
                self.qk_norm
            ));
        }
        if self.added_kv_proj_dim.is_some() {
            return bad("image conditioning (added_kv_proj_dim, Wan I2V) is not supported".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What can go wrong building or running the DiT, with the fix in the message.
#[derive(Debug, thiserror::Error)]
pub enum DitError {
    #[error("invalid DiT config: {0}")]
    Config(String),
    #[error(
        "latent {axis} = {got} is not a multiple of the patch size {patch}; \
         use {below} or {above} (in pixels ×8 with the VAE)"
    )]
    LatentSize {
        axis: &'static str,
        got: usize,
        patch: usize,
        below: usize,
        above: usize,
    },
    #[error("latent has shape {got:?}; expected (B, {channels}, T', H', W')")]
    LatentShape { got: Vec<usize>, channels: usize },
    #[error(
        "timesteps of shape {got:?} fit none of (B,) = ({batch},), \
         (B, T') = ({batch}, {frames}) or (B, L) = ({batch}, {tokens})"
    )]
    Timesteps {
        got: Vec<usize>,
        batch: usize,
        frames: usize,
        tokens: usize,
    },
    #[error("text states of shape {got:?}; expected ({batch}, L_text, {text_dim})")]
    Text {
        got: Vec<usize>,
        batch: usize,
        text_dim: usize,
    },
    #[error("checkpoint tensor `{name}` has shape {got:?}, the config expects {want:?}")]
    CheckpointShape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("checkpoint {path} lacks tensor `{name}` (wrong model or config?)")]
    CheckpointMissing { path: String, name: String },
    #[error("checkpoint has tensors the config does not use (wrong config?): {0:?}")]
    CheckpointUnused(Vec<String>),
    #[error("reading checkpoint {path}: {source}")]
    CheckpointRead {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Linear layer whose weight and bias start at zero (adaLN-Zero: a fresh model's blocks are the
/// identity and its output is 0). Checkpoint values replace the init.
fn linear_zeros(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?;
    let b = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// Fourier features of the normalised position of every token of an `hp × wp` grid:
/// `(hp·wp, 4·POS_FREQS)`, row-major, `[sin, cos]` of rows then of columns.
fn position_features(hp: usize, wp: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(hp * wp * 4 * POS_FREQS);
    for i in 0..hp {
        for j in 0..wp {
            for u in [(i as f32 + 0.5) / hp as f32, (j as f32 + 0.5) / wp as f32] {
                for k in 1..=POS_FREQS {
                    let a = std::f32::consts::PI * k as f32 * u;
                    data.extend([a.sin(), a.cos()]);
                }
            }
        }
    }
    Tensor::from_vec(data, (hp * wp, 4 * POS_FREQS), device)
}

/// Sinusoidal timestep features `(N,)` → `(N, dim)` as `[cos | sin]` (diffusers `Timesteps` with
/// `flip_sin_to_cos=True, downscale_freq_shift=0`). Values are on the 0..1000 scale.
fn timestep_features(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?; // (N, half)
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

/// Mean of the text states `(B, L, D)` over real tokens → `(B, D)`; 0 for an empty prompt.
/// What the pooled-text path reads (also what `text_sensitivity` compares between prompts).
pub fn masked_mean(text: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => text.mean(1),
        Some(m) => {
            let m = m.to_dtype(text.dtype())?.detach(); // (B, L)
            let n = m.sum_keepdim(1)?.clamp(1.0, f64::MAX)?; // (B, 1)
            text.broadcast_mul(&m.unsqueeze(2)?)?
                .sum(1)?
                .broadcast_div(&n)
        }
    }
}

/// Normalised activations `(B, L, dim)` scaled and shifted per timestep group: `scale`/`shift`
/// are `(B, G, 1, dim)` with `G` dividing `L` (1, frames or tokens).
fn modulate(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (b, l, dim) = x.dims3()?;
    let g = scale.dim(1)?;
    x.reshape((b, g, l / g, dim))? // (B, G, L/G, dim)
        .broadcast_mul(&(scale + 1.0)?)?
        .broadcast_add(shift)?
        .reshape((b, l, dim))
}

/// `x + y·gate` with `gate` `(B, G, 1, dim)`.
fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (b, l, dim) = y.dims3()?;
    let g = gate.dim(1)?;
    let y = y
        .reshape((b, g, l / g, dim))? // (B, G, L/G, dim)
        .broadcast_mul(gate)?
        .reshape((b, l, dim))?;
    x + y
}

/// 3D rotary embedding for one `(T', H', W')` token grid, computed on the fly so any frame count,
/// size and aspect works. Each head's rotary pairs are split time/height/width as Wan does:
/// `c − 2⌊c/3⌋`, `⌊c/3⌋`, `⌊c/3⌋` of `c = head_dim/2` pairs. (Some older diffusers releases split the
/// doubled dims instead, which differs when `2⌊d/6⌋ ≠ ⌊d/3⌋`, e.g. d = 64.)
#[derive(Clone, Debug)]
pub struct Rope {
    /// `(1, L, 1, head_dim/2, 1)`, broadcast over batch, heads and the pair member.
    cos: Tensor,
    sin: Tensor,
    /// The same tables, `(L, head_dim/2)` row-major, for the fused CPU op.
    table: Arc<RopeTable>,
}

#[derive(Debug)]
struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    pub fn new(
        grid: (usize, usize, usize),
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Result<Self> {
        let (t, h, w) = grid;
        let c = head_dim / 2;
        let (ch, cw) = (c / 3, c / 3);
        let ct = c - ch - cw;
        let axis_freqs = |pairs: usize| -> Vec<f64> {
            let dim = 2 * pairs;
            (0..pairs)
                .map(|k| 1.0 / theta.powf((2 * k) as f64 / dim as f64))
                .collect()
        };
        let (ft, fh, fw) = (axis_freqs(ct), axis_freqs(ch), axis_freqs(cw));
        let l = t * h * w;
        let mut cos = Vec::with_capacity(l * c);
        let mut sin = Vec::with_capacity(l * c);
        for f in 0..t {
            for y in 0..h {
                for x in 0..w {
                    let angles = ft
                        .iter()
                        .map(|q| f as f64 * q)
                        .chain(fh.iter().map(|q| y as f64 * q))
                        .chain(fw.iter().map(|q| x as f64 * q));
                    for a in angles {
                        cos.push(a.cos() as f32);
                        sin.push(a.sin() as f32);
                    }
                }
            }
        }
        let shape = (1, l, 1, c, 1);
        Ok(Self {
            cos: Tensor::from_slice(&cos, shape, device)?,
            sin: Tensor::from_slice(&sin, shape, device)?,
            table: Arc::new(RopeTable { cos, sin }),
        })
    }

    /// Rotates interleaved pairs `(x[2i], x[2i+1])` of `(B, L, H, head_dim)`; differentiable.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op1(RopeOp {
                table: self.table.clone(),
                inverse: false,
            });
        }
        self.apply_composed(x)
    }

    /// The same rotation from candle ops (other devices and dtypes; reference in tests).
    fn apply_composed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, h, d) = x.dims4()?;
        let x = x.reshape((b, l, h, d / 2, 2))?; // (B, L, H, pairs, 2)
        let x1 = x.narrow(4, 0, 1)?;
        let x2 = x.narrow(4, 1, 1)?;
        let o1 = (x1.broadcast_mul(&self.cos)? - x2.broadcast_mul(&self.sin)?)?;
        let o2 = (x1.broadcast_mul(&self.sin)? + x2.broadcast_mul(&self.cos)?)?;
        Tensor::cat(&[o1, o2], 4)?.reshape((b, l, h, d))
    }
}

/// Fused rotary embedding on `(B, L, H, head_dim)`; the backward pass is the inverse rotation.
struct RopeOp {
    table: Arc<RopeTable>,
    inverse: bool,
}

impl candle_core::CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-3d"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        use rayon::prelude::*;
        let candle_core::CpuStorage::F32(data) = s else {
            candle_core::bail!("rope: expects f32")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("rope: expects a contiguous tensor")
        };
        let x = &data[start..end];
        let (_, l, h, d) = layout.shape().dims4()?;
        let c = d / 2;
        if self.table.cos.len() != l * c {
            candle_core::bail!(
                "rope: table is for {} positions, input has {l}",
                self.table.cos.len() / c.max(1)
            )
        }
        let sign = if self.inverse { -1.0f32 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        // One token (all heads) per row: (B·L, H·D).
        y.par_chunks_mut(h * d)
            .zip(x.par_chunks(h * d))
            .enumerate()
            .for_each(|(row, (yr, xr))| {
                let pos = row % l;
                let cos = &self.table.cos[pos * c..(pos + 1) * c];
                let sin = &self.table.sin[pos * c..(pos + 1) * c];
                for (yh, xh) in yr.chunks_exact_mut(d).zip(xr.chunks_exact(d)) {
                    for (i, (yp, xp)) in yh.chunks_exact_mut(2).zip(xh.chunks_exact(2)).enumerate()
                    {
                        let (co, si) = (cos[i], sign * sin[i]);
                        yp[0] = xp[0] * co - xp[1] * si;
                        yp[1] = xp[0] * si + xp[1] * co;
                    }
                }
            });
        Ok((candle_core::CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inverse = RopeOp {
            table: self.table.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// `WanAttention`: projections, RMS norm of q and k across all heads, optional RoPE.
#[derive(Clone, Debug)]
struct WanAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    heads: usize,
}

impl WanAttention {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim();
        Ok(Self {
            to_q: Linear::load(dim, dim, vb.pp("to_q"))?,
            to_k: Linear::load(dim, dim, vb.pp("to_k"))?,
            to_v: Linear::load(dim, dim, vb.pp("to_v"))?,
            to_out: Linear::load(dim, dim, vb.pp("to_out.0"))?,
            norm_q: RmsNorm::new(dim, cfg.eps, vb.pp("norm_q"))?,
            norm_k: RmsNorm::new(dim, cfg.eps, vb.pp("norm_k"))?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x`: `(B, Lq, dim)`, `context`: `(B, Lk, dim)` (self-attention when `None`),
    /// `key_mask`: `(B, Lk)`. Returns `(B, Lq, dim)`.
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rope: Option<&Rope>,
        key_mask: Option<&Tensor>,
        imp: AttentionImpl,
    ) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let (b, lq, dim) = x.dims3()?;
        let lk = ctx.dim(1)?;
        let hd = dim / self.heads;
        let q = self.norm_q.forward(&self.to_q.forward(x)?)?;
        let k = self.norm_k.forward(&self.to_k.forward(ctx)?)?;
        let v = self.to_v.forward(ctx)?;
        let mut q = q.reshape((b, lq, self.heads, hd))?; // (B, Lq, H, hd)
        let mut k = k.reshape((b, lk, self.heads, hd))?; // (B, Lk, H, hd)
        let v = v.reshape((b, lk, self.heads, hd))?;
        if let Some(rope) = rope {
            q = rope.apply(&q)?;
            k = rope.apply(&k)?;
        }
        let o = attention(
            &q.transpose(1, 2)?, // (B, H, Lq, hd)
            &k.transpose(1, 2)?,
            &v.transpose(1, 2)?,
            key_mask,
            imp,
        )?;
        let o = o.transpose(1, 2)?.reshape((b, lq, dim))?; // (B, Lq, H·hd)
        self.to_out.forward(&o)
    }
}

/// diffusers `FeedForward(activation_fn="gelu-approximate")`: `net.0.proj` → GELU-tanh → `net.2`.
#[derive(Clone, Debug)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: Linear::load(dim, hidden, vb.pp("net.0.proj"))?,
            proj_out: Linear::load(hidden, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out
            .forward(&gelu_tanh(&self.proj_in.forward(x)?)?)
    }
}

/// Two linears with an activation between: `linear_1` → act → `linear_2`.
#[derive(Clone, Debug)]
struct Mlp2 {
    linear_1: Linear,
    linear_2: Linear,
    gelu: bool,
}

impl Mlp2 {
    fn new(in_dim: usize, dim: usize, gelu: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(in_dim, dim, vb.pp("linear_1"))?,
            linear_2: Linear::load(dim, dim, vb.pp("linear_2"))?,
            gelu,
        })
    }

    /// Same layers, the output layer zero for fresh weights: an added condition that starts as
    /// a no-op and grows only as far as it helps.
    fn zero_out(in_dim: usize, dim: usize, gelu: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(in_dim, dim, vb.pp("linear_1"))?,
            linear_2: linear_zeros(dim, dim, vb.pp("linear_2"))?,
            gelu,
        })
    }
}

impl Module for Mlp2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.linear_1.forward(x)?;
        let h = if self.gelu { gelu_tanh(&h)? } else { h.silu()? };
        self.linear_2.forward(&h)
    }
}

/// `WanTransformerBlock`.
#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn1: WanAttention,
    norm2: Option<LayerNorm>,
    attn2: WanAttention,
    norm3: LayerNorm,
    ffn: FeedForward,
    /// `(1, 6, dim)`: shift, scale, gate of self-attention, then of the MLP.
    scale_shift_table: Tensor,
}

impl Block {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.dim();
        Ok(Self {
            norm1: LayerNorm::no_affine(cfg.eps),
            attn1: WanAttention::new(cfg, vb.pp("attn1"))?,
            norm2: if cfg.cross_attn_norm {
                Some(LayerNorm::new(dim, cfg.eps, vb.pp("norm2"))?)
            } else {
                None
            },
            attn2: WanAttention::new(cfg, vb.pp("attn2"))?,
            norm3: LayerNorm::no_affine(cfg.eps),
            ffn: FeedForward::new(dim, cfg.ffn_dim, vb.pp("ffn"))?,
            // Zero (adaLN-Zero) for fresh weights: gates start at 0 from `time_proj` too.
            scale_shift_table: vb.get_with_hints(
                (1, 6, dim),
                "scale_shift_table",
                Init::Const(0.0),
            )?,
        })
    }

    /// `x`: `(B, L, dim)`; `tproj`: `(B, G, 6, dim)`; `text`: `(B, Lt, dim)`.
    fn forward(
        &self,
        x: &Tensor,
        text: &Tensor,
        text_mask: Option<&Tensor>,
        tproj: &Tensor,
        rope: &Rope,
        imp: AttentionImpl,
    ) -> Result<Tensor> {
        let m = self.scale_shift_table.unsqueeze(0)?.broadcast_add(tproj)?; // (B, G, 6, dim)
        let part = |i: usize| m.narrow(2, i, 1); // (B, G, 1, dim)
        let (shift, scale, gate) = (part(0)?, part(1)?, part(2)?);
        let (c_shift, c_scale, c_gate) = (part(3)?, part(4)?, part(5)?);

        let h = modulate(&self.norm1.forward(x)?, &scale, &shift)?;
        let h = self.attn1.forward(&h, None, Some(rope), None, imp)?;
        let x = gated_residual(x, &h, &gate)?;

        let h = match &self.norm2 {
            Some(n) => n.forward(&x)?,
            None => x.clone(),
        };
        let x = (&x + self.attn2.forward(&h, Some(text), None, text_mask, imp)?)?;

        let h = modulate(&self.norm3.forward(&x)?, &c_scale, &c_shift)?;
        gated_residual(&x, &self.ffn.forward(&h)?, &c_gate)
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// `WanTransformer3DModel` (text-to-video variant).
#[derive(Clone, Debug)]
pub struct Dit {
    cfg: Config,
    /// The `Conv3d(kernel = stride = patch)` as a matmul over flattened patches.
    patch_embedding: Linear,
    time_embedder: Mlp2,
    time_proj: Linear,
    text_embedder: Mlp2,
    /// Present when `cfg.pooled_text`.
    text_pooled_embedder: Option<Mlp2>,
    /// `(dim, 4·POS_FREQS)`, present when `cfg.abs_pos_embed`.
    pos_embedder: Option<Tensor>,
    blocks: Vec<Block>,
    norm_out: LayerNorm,
    /// `(1, 2, dim)`: shift and scale of the output norm.
    scale_shift_table: Tensor,
    proj_out: Linear,
    attention_impl: AttentionImpl,
}

impl Dit {
    /// Builds the model from `vb`: a checkpoint (names as diffusers) or a `VarMap` for training,
    /// whose adaLN tables, `time_proj` and `proj_out` then start at zero.
    pub fn new(cfg: &Config, vb: VarBuilder) -> std::result::Result<Self, DitError> {
        cfg.validate()?;
        let dim = cfg.dim();
        let [pt, ph, pw] = cfg.patch_size;
        let patch_len = cfg.in_channels * pt * ph * pw;
        let pvb = vb.pp("patch_embedding");
        // Xavier-uniform as in DiT: with adaLN-Zero zeroing the head, a zero patch embedding
        // would hide the input from the whole network at the start.
        let bound = (6.0 / (patch_len + dim) as f64).sqrt();
        let xavier = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let pw5 = pvb.get_with_hints((dim, cfg.in_channels, pt, ph, pw), "weight", xavier)?;
        let pb = pvb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        let patch_embedding = Linear::new(pw5.reshape((dim, patch_len))?, Some(pb));
        let cvb = vb.pp("condition_embedder");
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embedding,
            time_embedder: Mlp2::new(cfg.freq_dim, dim, false, cvb.pp("time_embedder"))?,
            time_proj: linear_zeros(dim, 6 * dim, cvb.pp("time_proj"))?,
            text_embedder: Mlp2::new(cfg.text_dim, dim, true, cvb.pp("text_embedder"))?,
            text_pooled_embedder: if cfg.pooled_text {
                Some(Mlp2::zero_out(
                    cfg.text_dim,
                    dim,
                    false,
                    cvb.pp("text_pooled_embedder"),
                )?)
            } else {
                None
            },
            pos_embedder: if cfg.abs_pos_embed {
                Some(vb.pp("pos_embedder").get_with_hints(
                    (dim, 4 * POS_FREQS),
                    "weight",
                    Init::Const(0.0),
                )?)
            } else {
                None
            },
            blocks,
            norm_out: LayerNorm::no_affine(cfg.eps),
            scale_shift_table: vb.get_with_hints(
                (1, 2, dim),
                "scale_shift_table",
                Init::Const(0.0),
            )?,
            proj_out: linear_zeros(dim, cfg.out_channels * pt * ph * pw, vb.pp("proj_out"))?,
            attention_impl: AttentionImpl::default(),
        })
    }

    /// Loads safetensors files (diffusers names, any float dtype) as f32 on `device`, insisting
    /// that every tensor the config needs is present with its shape and nothing is left over.
    pub fn load<P: AsRef<Path>>(
        cfg: &Config,
        paths: &[P],
        device: &Device,
    ) -> std::result::Result<Self, DitError> {
        cfg.validate()?;
        let mut tensors = HashMap::new();
        for p in paths {
            let p = p.as_ref();
            let ts = candle_core::safetensors::load(p, device).map_err(|source| {
                DitError::CheckpointRead {
                    path: p.to_path_buf(),
                    source,
                }
            })?;
            tensors.extend(ts);
        }
        let first = paths
            .first()
            .map(|p| p.as_ref().display().to_string())
            .unwrap_or_default();
        let backend = CheckedTensors {
            tensors,
            used: Arc::new(Mutex::new(HashSet::new())),
            failure: Arc::new(Mutex::new(None)),
        };
        let (used, failure, all) = (
            backend.used.clone(),
            backend.failure.clone(),
            backend.tensors.keys().cloned().collect::<Vec<_>>(),
        );
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let model = Self::new(cfg, vb);
        if let Some(f) = lock(&failure).take() {
            return Err(match f {
                Failure::Missing(name) => DitError::CheckpointMissing { path: first, name },
                Failure::Shape { name, got, want } => DitError::CheckpointShape { name, got, want },
            });
        }
        let model = model?;
        let used = lock(&used);
        let mut unused: Vec<String> = all
            .into_iter()
            .filter(|k| !used.contains(k) && !IGNORED_KEYS.iter().any(|i| k.ends_with(i)))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(DitError::CheckpointUnused(unused));
        }
        Ok(model)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where the weights live; inputs must be placed there too.
    pub fn device(&self) -> &Device {
        self.scale_shift_table.device()
    }

    /// Chooses the attention implementation (both train; `Naive` materialises `L×L` scores).
    pub fn set_attention_impl(&mut self, imp: AttentionImpl) {
        self.attention_impl = imp;
    }

    /// Predicts the velocity for noisy latents.
    ///
    /// - `latents`: `(B, C_in, T', H', W')`, `H'`/`W'` multiples of the patch size.
    /// - `timesteps`: on the 0..1000 scale; `(B,)`, `(B, T')` per latent frame or `(B, L)` per
    ///   token (`L = T'·H'/2·W'/2`, frame-major), 0 marks a clean known frame.
    /// - `text`: `(B, L_text, text_dim)`; `text_mask`: `(B, L_text)`, 1 = token, 0 = padding.
    ///
    /// Returns `(B, C_out, T', H', W')`.
    pub fn forward(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &Tensor,
        text_mask: Option<&Tensor>,
    ) -> std::result::Result<Tensor, DitError> {
        let cfg = &self.cfg;
        let dims = latents.dims();
        if dims.len() != 5 || dims[1] != cfg.in_channels {
            return Err(DitError::LatentShape {
                got: dims.to_vec(),
                channels: cfg.in_channels,
            });
        }
        let (b, c, f, hh, ww) = latents.dims5()?;
        let [pt, ph, pw] = cfg.patch_size;
        for (axis, got, patch) in [("frames", f, pt), ("height", hh, ph), ("width", ww, pw)] {
            if got % patch != 0 || got == 0 {
                let below = got / patch * patch;
                return Err(DitError::LatentSize {
                    axis,
                    got,
                    patch,
                    below: if below == 0 { patch } else { below },
                    above: below + patch,
                });
            }
        }
        let (tp, hp, wp) = (f / pt, hh / ph, ww / pw);
        let l = tp * hp * wp;
        let groups = match timesteps.dims() {
            [bt] if *bt == b => 1,
            [bt, g] if *bt == b && (*g == tp || *g == l) => *g,
            got => {
                return Err(DitError::Timesteps {
                    got: got.to_vec(),
                    batch: b,
                    frames: tp,
                    tokens: l,
                })
            }
        };
        match text.dims() {
            [bt, _, d] if *bt == b && *d == cfg.text_dim => {}
            got => {
                return Err(DitError::Text {
                    got: got.to_vec(),
                    batch: b,
                    text_dim: cfg.text_dim,
                })
            }
        }
        let dim = cfg.dim();

        // 1. Patches: (B, C, T', H', W') → (B, L, C·pt·ph·pw) → (B, L, dim).
        let x = latents
            .reshape(vec![b, c, tp, pt, hp, ph, wp, pw])?
            .permute(vec![0, 2, 4, 6, 1, 3, 5, 7])? // (B, T', H', W', C, pt, ph, pw)
            .reshape((b, l, c * pt * ph * pw))?;
        let mut x = self.patch_embedding.forward(&x)?;
        if let Some(w) = &self.pos_embedder {
            let pos = position_features(hp, wp, latents.device())?.matmul(&w.t()?)?; // (H'·W', dim)
            x = x
                .reshape((b, tp, hp * wp, dim))?
                .broadcast_add(&pos)?
                .reshape((b, l, dim))?;
        }
        let rope = Rope::new(
            (tp, hp, wp),
            cfg.attention_head_dim,
            cfg.rope_theta,
            latents.device(),
        )?;

        // 2. Conditions: one embedding per timestep group, broadcast over its tokens.
        let t = timestep_features(&timesteps.flatten_all()?, cfg.freq_dim)?; // (B·G, freq)
        let mut temb = self.time_embedder.forward(&t)?; // (B·G, dim)
        if let Some(pooled) = &self.text_pooled_embedder {
            let p = pooled.forward(&masked_mean(text, text_mask)?)?; // (B, dim)
            temb = temb
                .reshape((b, groups, dim))?
                .broadcast_add(&p.unsqueeze(1)?)?
                .reshape((b * groups, dim))?;
        }
        let tproj = self.time_proj.forward(&temb.silu()?)?; // (B·G, 6·dim)
        let tproj = tproj.reshape((b, groups, 6, dim))?;
        let text = self.text_embedder.forward(text)?; // (B, L_text, dim)

        // 3. Blocks.
        for block in &self.blocks {
            x = block.forward(&x, &text, text_mask, &tproj, &rope, self.attention_impl)?;
        }

        // 4. Output head: shift/scale from the raw time embedding (no SiLU, as Wan).
        let m = self
            .scale_shift_table
            .unsqueeze(0)?
            .broadcast_add(&temb.reshape((b, groups, 1, dim))?)?; // (B, G, 2, dim)
        let x = modulate(
            &self.norm_out.forward(&x)?,
            &m.narrow(2, 1, 1)?,
            &m.narrow(2, 0, 1)?,
        )?;
        let x = self.proj_out.forward(&x)?; // (B, L, pt·ph·pw·C_out)

        // 5. Un-patchify: (B, L, pt·ph·pw·C_out) → (B, C_out, T', H', W').
        let oc = cfg.out_channels;
        let x = x
            .reshape(vec![b, tp, hp, wp, pt, ph, pw, oc])?
            .permute(vec![0, 7, 1, 4, 2, 5, 3, 6])? // (B, C_out, T', pt, H', ph, W', pw)
            .reshape((b, oc, f, hh, ww))?;
        Ok(x)
    }
}

/// Keys diffusers itself skips when loading Wan checkpoints.
const IGNORED_KEYS: &[&str] = &["norm_added_q.weight"];

enum Failure {
    Missing(String),
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tensor map that records which names the model asked for and the first mismatch, so the
/// loader can name the offending tensor and report leftovers.
struct CheckedTensors {
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<HashSet<String>>>,
    failure: Arc<Mutex<Option<Failure>>>,
}

impl CheckedTensors {
    fn fail(&self, f: Failure) {
        let mut slot = lock(&self.failure);
        if slot.is_none() {
            *slot = Some(f);
        }
    }
}

impl SimpleBackend for CheckedTensors {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            self.fail(Failure::Shape {
                name: name.to_string(),
                got: t.dims().to_vec(),
                want: s.dims().to_vec(),
            });
            candle_core::bail!(
                "checkpoint tensor {name}: shape {:?}, want {s:?}",
                t.shape()
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let Some(t) = self.tensors.get(name) else {
            self.fail(Failure::Missing(name.to_string()));
            candle_core::bail!("checkpoint lacks {name}")
        };
        lock(&self.used).insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn tiny_model() -> (Dit, VarMap) {
        let mut cfg = Config::tiny();
        cfg.num_layers = 1;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        (Dit::new(&cfg, vb).expect("tiny config builds"), vm)
    }

    #[test]
    fn presets_validate() {
        Config::tiny().validate().expect("tiny");
        Config::wan2_1_1_3b().validate().expect("1.3b");
        let mut c = Config::tiny();
        c.attention_head_dim = 5;
        assert!(matches!(c.validate(), Err(DitError::Config(_))));
    }

    #[test]
    fn wan_config_json_deserialises() {
        let json = r#"{"_class_name": "WanTransformer3DModel", "added_kv_proj_dim": null,
            "attention_head_dim": 128, "cross_attn_norm": true, "eps": 1e-06, "ffn_dim": 8960,
            "freq_dim": 256, "image_dim": null, "in_channels": 16, "num_attention_heads": 12,
            "num_layers": 30, "out_channels": 16, "patch_size": [1, 2, 2],
            "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096}"#;
        let cfg: Config = serde_json::from_str(json).expect("diffusers config parses");
        assert_eq!(cfg, Config::wan2_1_1_3b());
    }

    #[test]
    fn fused_rope_matches_composition_and_its_gradient() -> Result<()> {
        use candle_core::Var;
        let dev = Device::Cpu;
        let rope = Rope::new((3, 2, 4), 32, 10_000.0, &dev)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 24, 3, 32), &dev)?)?;
        let w = Tensor::randn(0f32, 1., (2, 24, 3, 32), &dev)?;
        let fused = rope.apply(x.as_tensor())?;
        let composed = rope.apply_composed(x.as_tensor())?;
        let e = (&fused - &composed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(e < 1e-6, "forward {e}");
        let gf = (fused * &w)?.sum_all()?.backward()?;
        let gc = (composed * &w)?.sum_all()?.backward()?;
        let (gf, gc) = (
            gf.get(&x).expect("fused grad"),
            gc.get(&x).expect("composed grad"),
        );
        let e = (gf - gc)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(e < 1e-6, "backward {e}");
        Ok(())
    }

    #[test]
    fn odd_latent_size_names_valid_sizes() {
        let (m, _) = tiny_model();
        let x = Tensor::zeros((1, 16, 2, 7, 8), DType::F32, &Device::Cpu).expect("alloc");
        let t = Tensor::zeros(1, DType::F32, &Device::Cpu).expect("alloc");
        let text = Tensor::zeros((1, 3, 256), DType::F32, &Device::Cpu).expect("alloc");
        let err = m.forward(&x, &t, &text, None).expect_err("7 is odd");
        match err {
            DitError::LatentSize {
                axis: "height",
                got: 7,
                below: 6,
                above: 8,
                ..
            } => {}
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn fresh_model_predicts_zero_and_timestep_shapes_agree() -> std::result::Result<(), DitError> {
        let (m, vm) = tiny_model();
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 16, 3, 4, 6), &dev)?;
        let text = Tensor::randn(0f32, 1., (2, 5, 256), &dev)?;
        let t = Tensor::new(&[500f32, 20.], &dev)?;
        let out = m.forward(&x, &t, &text, None)?;
        assert_eq!(out.dims(), x.dims());
        assert_eq!(out.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        // Give the zero-initialised layers values, then check (B,), (B, T') and (B, L) forms of
        // the same timesteps agree.
        for (name, var) in vm.data().lock().expect("varmap").iter() {
            if name.contains("time_proj")
                || name.contains("scale_shift")
                || name.contains("proj_out")
            {
                var.set(&(Tensor::randn(0f32, 0.05, var.shape(), &dev)?))?;
            }
        }
        let a = m.forward(&x, &t, &text, None)?;
        let per_frame = t.unsqueeze(1)?.repeat((1, 3))?;
        let b = m.forward(&x, &per_frame, &text, None)?;
        let per_token = t.unsqueeze(1)?.repeat((1, 3 * 2 * 3))?;
        let c = m.forward(&x, &per_token, &text, None)?;
        let d1 = (&a - &b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let d2 = (&a - &c)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.0);
        assert!(d1 < 1e-5 && d2 < 1e-5, "{d1} {d2}");
        Ok(())
    }
}
