//! Causal 3D video VAE with the Wan2.1 layout (`AutoencoderKLWan`), and Wan2.2's residual
//! variant of it (`is_residual`, see [`Config::is_residual`]).
//!
//! Reference: diffusers `models/autoencoders/autoencoder_kl_wan.py`
//! (<https://github.com/huggingface/diffusers/blob/022e259c82d219b981738a267dea7e6eaf3b5bf7/src/diffusers/models/autoencoders/autoencoder_kl_wan.py>),
//! itself a port of Wan2.1's `wan/modules/vae.py`. Parameter names are exactly diffusers', so a
//! diffusers-format checkpoint loads unchanged.
//!
//! Shapes: video `(B, 3, T, H, W)` in `[-1, 1]` with `T = 4k+1` and `H, W` multiples of 8 (for the
//! Wan layout) ↔ latent `(B, z, k+1, H/8, W/8)`. Frame 0 is encoded alone (causal convolutions pad
//! only the past), so an image is a 1-frame video.
//!
//! # One forward, three ways to run it
//! Every causal layer keeps its context in a cache struct passed `&mut` ([`EncoderCache`],
//! [`DecoderCache`]). A fresh cache and the whole clip is one pass ([`AutoencoderKLWan::encode`]);
//! the same cache fed the first frame and then 4 frames at a time (or latent frames one by one,
//! [`DecodeStream`]) gives the same numbers, with memory bounded by the chunk. Diffusers always
//! runs chunked; the fresh-cache rules below reproduce its first-chunk special cases over a whole
//! clip:
//! - temporal downsample: frame 0 passes through, the stride-2 `time_conv` covers all frames;
//! - temporal upsample: frame 0 passes through, later frames are doubled by a causal `time_conv`
//!   that never sees frame 0 (Wan's `"Rep"` marker).
//! - residual layout: the down shortcut pads time at the front to an even count (frame 0 alone
//!   again), the up shortcut drops its first duplicated frame on the clip's first chunk.
//!
//! # Loading the real Wan2.1 VAE
//! ```text
//! huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers vae/config.json \
//!     vae/diffusion_pytorch_model.safetensors --local-dir wan
//! ```
//! then `AutoencoderKLWan::load(&Config::wan2_1(), &["wan/vae/diffusion_pytorch_model.safetensors"],
//! DType::F32, &dev)` (or [`Config::from_diffusers_json`] on `vae/config.json`). The original
//! `Wan2.1_VAE.pth` uses Wan's own key names (`encoder.downsamples.*`, `conv1`, `conv2`, ...);
//! convert it with diffusers, which knows the mapping:
//! ```text
//! python -c "from diffusers import AutoencoderKLWan as A; \
//!   A.from_single_file('Wan2.1_VAE.pth').save_pretrained('wan-vae')"
//! ```
//! which writes `wan-vae/config.json` and `wan-vae/diffusion_pytorch_model.safetensors`.
//!
//! Wan2.2's VAE (`Wan-AI/Wan2.2-TI2V-5B-Diffusers/vae`) loads the same way: its residual
//! layout (`is_residual: true`), 2×2 pixel patches folded into 12 input channels
//! (`patch_size: 2`, 16× space in all) and a decoder wider than the encoder
//! (`decoder_base_dim`) each match diffusers (`fixtures/gen/vae_fixtures.py`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor, Var, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::conv3d::{conv3d, Conv3dGeometry};

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What went wrong at the VAE's public edge, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error("invalid VAE config: {0}")]
    Config(String),
    #[error("video must be (B, {channels}, T, H, W); got shape {got:?}")]
    InputShape { channels: usize, got: Vec<usize> },
    #[error("{got} frames: the VAE needs T = {factor}k+1 frames; nearest valid counts are {below} and {above}")]
    FrameCount {
        got: usize,
        factor: usize,
        below: usize,
        above: usize,
    },
    #[error("frame size {height}x{width} (HxW) is not a multiple of {factor}; nearest valid sizes: height {h_below} or {h_above}, width {w_below} or {w_above}")]
    FrameSize {
        height: usize,
        width: usize,
        factor: usize,
        h_below: usize,
        h_above: usize,
        w_below: usize,
        w_above: usize,
    },
    #[error("stream chunk of {got} frames: after the first call, chunks must hold a multiple of {factor} frames")]
    ChunkLength { got: usize, factor: usize },
    #[error("weights file {path}: missing tensor `{name}` (expected shape {expected:?}); is this an AutoencoderKLWan checkpoint in diffusers format for this config?")]
    MissingWeight {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
    },
    #[error("weights file {path}: tensor `{name}` has shape {found:?}, the config expects {expected:?}; pick the config that matches the checkpoint")]
    WeightShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("weights file {path}: unexpected tensor `{name}` not used by this config ({count} unexpected in all); pick the config that matches the checkpoint")]
    UnexpectedWeight {
        path: PathBuf,
        name: String,
        count: usize,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing VAE config {path}: {source}")]
    ConfigJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type VaeResult<T> = std::result::Result<T, VaeError>;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// Architecture of the VAE. Field names follow diffusers' `AutoencoderKLWan` `config.json`
/// (including its `temperal_downsample` spelling) so that file deserializes as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Channels of the first (full-resolution) level.
    pub base_dim: usize,
    /// Latent channels.
    pub z_dim: usize,
    /// Channel multiplier per level; `len - 1` spatial 2× downsamples.
    pub dim_mult: Vec<usize>,
    /// Residual blocks per encoder level (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Encoder scales (1, 0.5, ...) that get an attention block after each residual block.
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    /// Per downsample (len = `dim_mult.len() - 1`): whether it also halves time.
    pub temperal_downsample: Vec<bool>,
    /// Per-channel latent statistics: normalised latent = `(z - mean) / std`.
    pub latents_mean: Vec<f32>,
    pub latents_std: Vec<f32>,
    /// Wan2.2's residual layout: every encoder level and decoder upsample gets a parameter-free
    /// shortcut ([`AvgDown3d`], [`DupUp3d`]) that rearranges pixels and channels, so colour and
    /// position reach the latent (and come back) without having to be learned by the convs;
    /// upsamples keep their channels instead of halving them.
    #[serde(default)]
    pub is_residual: bool,
    /// Channels the encoder's first conv takes (and the decoder's last gives): `3·p²` for
    /// `patch_size` p.
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Wan2.2's patchify: each `p×p` pixel block enters the encoder as channels (and the
    /// decoder's channels unfold back into pixels), so the network runs at `1/p` the
    /// resolution and the VAE compresses space by `p·2^(levels−1)`.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// The decoder's base width when it differs from the encoder's (Wan2.2: 256 vs 160):
    /// decoding is the harder direction, and the latent does not depend on it.
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
}

fn three() -> usize {
    3
}

/// Names [`Config::preset`] knows.
pub const PRESETS: &str = "tiny, small, tiny-residual, tiny-patch, wan2.1";

impl Config {
    /// Wan2.1's VAE (`Wan-AI/Wan2.1-T2V-*-Diffusers/vae/config.json`), ~127 M parameters.
    pub fn wan2_1() -> Self {
        Self {
            base_dim: 96,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
            // Published per-channel statistics of Wan2.1 latents (diffusers' defaults).
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134,
                -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
                2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
            ],
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
            decoder_base_dim: None,
        }
    }

    /// The CPU-trainable default: Wan's geometry (8× space, 4× time, 16 latent channels, so the
    /// DiT sees the same latent shape as with Wan) at 1/6 of its width and one residual block per
    /// level. Base 16 keeps a training step on a 64×64×17 clip around a second on two cores;
    /// shapes-world frames are flat colours and edges, which is what the thin first level has to
    /// carry. Latent statistics start as identity and are measured after training.
    pub fn tiny() -> Self {
        Self {
            base_dim: 16,
            num_res_blocks: 1,
            latents_mean: vec![0.0; 16],
            latents_std: vec![1.0; 16],
            ..Self::wan2_1()
        }
    }

    /// `tiny` with Wan's two residual blocks per level: more depth for ~1.5× the work per
    /// step; a run can start from a trained `tiny` (`--init-from` grows it).
    pub fn small() -> Self {
        Self {
            num_res_blocks: 2,
            ..Self::tiny()
        }
    }

    /// `tiny` in Wan2.2's residual layout (same widths and depth; the decoder's upper levels
    /// are twice as wide because upsamples no longer halve channels).
    pub fn tiny_residual() -> Self {
        Self {
            is_residual: true,
            ..Self::tiny()
        }
    }

    /// A preset by name, or a diffusers-style `config.json` by path.
    pub fn preset_or_file(name: &str) -> VaeResult<Self> {
        if let Some(cfg) = Self::preset(name) {
            return Ok(cfg);
        }
        if name.ends_with(".json") {
            return Self::from_diffusers_json(Path::new(name));
        }
        Err(VaeError::Config(format!(
            "unknown VAE config `{name}`; use {PRESETS} or a config.json path"
        )))
    }

    /// The named configs (`tessera train vae --config NAME`, the benches), `None` for others;
    /// [`PRESETS`] lists them.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            "tiny-residual" => Some(Self::tiny_residual()),
            "tiny-patch" => Some(Self::tiny_patch()),
            "wan2.1" | "wan2_1" => Some(Self::wan2_1()),
            _ => None,
        }
    }

    /// `tiny-residual` at half the work a step: 2×2 pixel patches folded into channels first
    /// (Wan2.2's `patch_size`) replace the full-resolution level, and the three levels left are
    /// twice as wide (32, 64, 64) for about the same parameters; 8× space, 4× time as before.
    pub fn tiny_patch() -> Self {
        Self {
            base_dim: 32,
            dim_mult: vec![1, 2, 2],
            temperal_downsample: vec![true, true],
            patch_size: Some(2),
            in_channels: 12,
            out_channels: 12,
            ..Self::tiny_residual()
        }
    }

    /// The encoder's `down_blocks` in order (Wan2.1 layout): per level, `num_res_blocks`
    /// residual blocks (each followed by attention on the levels in `attn_scales`), then a
    /// downsample on all but the last level.
    pub fn encoder_down_blocks(&self) -> Vec<DownBlock> {
        let mut out = Vec::new();
        let levels = self.dim_mult.len();
        for level in 0..levels {
            let scale = 0.5f64.powi(level as i32);
            for block in 0..self.num_res_blocks {
                out.push(DownBlock::Res { level, block });
                if self.attn_scales.contains(&scale) {
                    out.push(DownBlock::Attn { level, block });
                }
            }
            if level + 1 != levels {
                out.push(DownBlock::Resample { level });
            }
        }
        out
    }

    /// Reads a diffusers `config.json` (unknown keys such as `_class_name` are ignored).
    pub fn from_diffusers_json(path: &Path) -> VaeResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| VaeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| VaeError::ConfigJson {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> VaeResult<()> {
        let bad = |m: String| Err(VaeError::Config(m));
        if self.base_dim == 0 || self.z_dim == 0 || self.num_res_blocks == 0 {
            return bad("base_dim, z_dim and num_res_blocks must be positive".into());
        }
        if self.dim_mult.is_empty() || self.dim_mult.contains(&0) {
            return bad(format!(
                "dim_mult {:?} must be non-empty and positive",
                self.dim_mult
            ));
        }
        if self.temperal_downsample.len() != self.dim_mult.len() - 1 {
            return bad(format!(
                "temperal_downsample has {} entries; dim_mult {:?} needs {}",
                self.temperal_downsample.len(),
                self.dim_mult,
                self.dim_mult.len() - 1
            ));
        }
        // The decoder halves channels at each upsample (`dim // 2`): odd widths cannot halve.
        let dec = self.decoder_dim();
        if self.dim_mult.len() > 1 && self.dim_mult.iter().any(|m| !(dec * m).is_multiple_of(2)) {
            return bad(format!(
                "decoder_base_dim (or base_dim) {dec} × dim_mult must be even at every level"
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return bad(format!(
                "latents_mean/latents_std need z_dim = {} entries, got {} and {}",
                self.z_dim,
                self.latents_mean.len(),
                self.latents_std.len()
            ));
        }
        if self.latents_std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return bad("latents_std entries must be positive".into());
        }
        if self.is_residual && !self.attn_scales.is_empty() {
            return bad("attn_scales must be empty with is_residual = true (Wan2.2 has no encoder attention outside the middle block)".into());
        }
        if self.patch_size == Some(0) || self.decoder_base_dim == Some(0) {
            return bad("patch_size and decoder_base_dim must be positive when set".into());
        }
        if self.is_residual {
            // The shortcuts average (down) or repeat (up) whole channel groups: a level's
            // widths times its block size must divide evenly, as diffusers asserts.
            for level in 0..self.dim_mult.len() {
                let (ft, fs) = self.shortcut_block(level);
                let f = ft * fs * fs;
                let m = |l: usize| if l == 0 { 1 } else { self.dim_mult[l - 1] };
                let (cin, cout) = (m(level), self.dim_mult[level]);
                if (cin * f) % cout != 0 {
                    return bad(format!(
                        "dim_mult {:?} does not fit is_residual: level {level}'s shortcut averages \
                         groups of its {cin}×{f} (width × block) input channels down to width \
                         {cout}, which must divide evenly; end on two equal multipliers, like \
                         [1, 2, 4, 4]",
                        self.dim_mult
                    ));
                }
            }
        }
        let rgb = 3 * self.patch() * self.patch();
        if self.in_channels != rgb || self.out_channels != rgb {
            return bad(format!(
                "in_channels/out_channels must be 3·patch_size² = {rgb} (RGB in {p}×{p} patches), got {}/{}",
                self.in_channels,
                self.out_channels,
                p = self.patch()
            ));
        }
        Ok(())
    }

    /// The (time, space) block the residual layout's down shortcut folds at `level`: 2×2 space
    /// (×2 time where the level downsamples time), none on the last level, which keeps its size.
    fn shortcut_block(&self, level: usize) -> (usize, usize) {
        if level + 1 == self.dim_mult.len() {
            (1, 1)
        } else if self.temperal_downsample[level] {
            (2, 2)
        } else {
            (1, 2)
        }
    }

    /// Side of the pixel patches folded into channels (1 = none).
    pub fn patch(&self) -> usize {
        self.patch_size.unwrap_or(1)
    }

    /// The decoder's base width.
    pub fn decoder_dim(&self) -> usize {
        self.decoder_base_dim.unwrap_or(self.base_dim)
    }

    /// Spatial compression factor (8 for Wan2.1, 16 for Wan2.2's patchified VAE).
    pub fn spatial_factor(&self) -> usize {
        self.patch() << (self.dim_mult.len() - 1)
    }

    /// Temporal compression factor (4 for Wan): `T = factor·k + 1` frames → `k + 1` latents.
    pub fn temporal_factor(&self) -> usize {
        1 << self.temperal_downsample.iter().filter(|t| **t).count()
    }

    /// Latent frames for `frames` video frames (which must be valid).
    pub fn latent_frames(&self, frames: usize) -> usize {
        (frames - 1) / self.temporal_factor() + 1
    }

    /// Checks a video shape `(B, 3, T, H, W)`, naming the nearest valid values.
    pub fn check_video_dims(&self, dims: &[usize]) -> VaeResult<()> {
        if dims.len() != 5 || dims[1] != 3 || dims[0] == 0 {
            return Err(VaeError::InputShape {
                channels: 3,
                got: dims.to_vec(),
            });
        }
        let (t, h, w) = (dims[2], dims[3], dims[4]);
        let f = self.temporal_factor();
        if t == 0 || (t - 1) % f != 0 {
            let below = if t == 0 { 1 } else { (t - 1) / f * f + 1 };
            return Err(VaeError::FrameCount {
                got: t,
                factor: f,
                below,
                above: below + if t <= 1 { 0 } else { f },
            });
        }
        let s = self.spatial_factor();
        if h % s != 0 || w % s != 0 || h == 0 || w == 0 {
            let lo = |v: usize| (v / s * s).max(s);
            let hi = |v: usize| v.div_ceil(s).max(1) * s;
            return Err(VaeError::FrameSize {
                height: h,
                width: w,
                factor: s,
                h_below: lo(h),
                h_above: hi(h),
                w_below: lo(w),
                w_above: hi(w),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Wan keeps this many past frames per causal 3×3×3 conv (`CACHE_T`).
const CACHE_T: usize = 2;

/// The last `n` frames (or all, if fewer) of `(B, C, T, H, W)`.
fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2)?;
    x.narrow(2, t - n.min(t), n.min(t))
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// Causal context of one conv: its last `CACHE_T` input frames.
#[derive(Debug, Clone, Default)]
pub struct ConvCache {
    ctx: Option<Tensor>,
}

/// `WanCausalConv3d`: a 3D conv whose temporal padding `2·p` goes entirely before frame 0.
#[derive(Debug, Clone)]
struct CausalConv3d {
    weight: Tensor,
    bias: Tensor,
    geom: Conv3dGeometry,
}

impl CausalConv3d {
    /// `kernel`/`stride`/`padding` as in PyTorch's `Conv3d(…, kernel, stride, padding)`.
    fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        padding: [usize; 3],
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((cout, cin, kernel[0], kernel[1], kernel[2]), "weight")?;
        let bias = vb.get(cout, "bias")?;
        let geom = Conv3dGeometry {
            kernel,
            stride,
            pad_t: 2 * padding[0],
            pad_h: [padding[1]; 2],
            pad_w: [padding[2]; 2],
        };
        Ok(Self { weight, bias, geom })
    }

    fn k3(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(cin, cout, [3; 3], [1; 3], [1; 3], vb)
    }

    fn k1(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(cin, cout, [1; 3], [1; 3], [0; 3], vb)
    }

    /// Convolution with `ctx` (up to `pad_t` real past frames) replacing that much zero padding.
    fn forward_ctx(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<Tensor> {
        match ctx {
            Some(c) if self.geom.pad_t > 0 => {
                let n = c.dim(2)?;
                let x = Tensor::cat(&[c, x], 2)?;
                let geom = Conv3dGeometry {
                    pad_t: self.geom.pad_t - n.min(self.geom.pad_t),
                    ..self.geom
                };
                conv3d(&x, &self.weight, Some(&self.bias), &geom)
            }
            _ => conv3d(x, &self.weight, Some(&self.bias), &self.geom),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_ctx(x, None)
    }

    /// Streaming step: convolve with the cached past, then remember this input's tail.
    fn forward_cached(&self, x: &Tensor, cache: &mut ConvCache) -> Result<Tensor> {
        let y = self.forward_ctx(x, cache.ctx.as_ref())?;
        let joined = match &cache.ctx {
            Some(c) if x.dim(2)? < CACHE_T => Tensor::cat(&[c, x], 2)?,
            _ => x.clone(),
        };
        // Detached: context carries values between chunks, never gradients (and must not keep
        // the previous chunks' autograd graph alive).
        cache.ctx = Some(last_frames(&joined, CACHE_T)?.detach().contiguous()?);
        Ok(y)
    }
}

/// A 2D conv applied to every frame, as a `(1, kh, kw)` 3D conv (no layout change needed).
#[derive(Debug, Clone)]
struct FrameConv2d {
    weight: Tensor,
    bias: Tensor,
    geom: Conv3dGeometry,
}

impl FrameConv2d {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad_h: [usize; 2],
        pad_w: [usize; 2],
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get((cout, cin, k, k), "weight")?,
            bias: vb.get(cout, "bias")?,
            geom: Conv3dGeometry {
                kernel: [1, k, k],
                stride: [1, stride, stride],
                pad_t: 0,
                pad_h,
                pad_w,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (o, c, kh, kw) = self.weight.dims4()?;
        let w = self.weight.reshape((o, c, 1, kh, kw))?;
        conv3d(x, &w, Some(&self.bias), &self.geom)
    }
}

/// `WanRMS_norm`: `F.normalize(x, dim=1) · √C · γ`, i.e. an RMS norm over channels. Built from
/// differentiable ops (candle's fused `rms_norm` has no backward and works on the last dim).
#[derive(Debug, Clone)]
struct RmsNorm {
    gamma: Tensor,
}

impl RmsNorm {
    /// `images` selects the `(C, 1, 1)` gamma of 2D use (attention) over `(C, 1, 1, 1)`.
    fn new(dim: usize, images: bool, vb: VarBuilder) -> Result<Self> {
        let gamma = if images {
            vb.get((dim, 1, 1), "gamma")?
        } else {
            vb.get((dim, 1, 1, 1), "gamma")?
        };
        Ok(Self { gamma })
    }

    /// `x`: `(B, C, T, H, W)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        // torch clamps the L2 norm at 1e-12; in mean-square units that is 1e-24 / C.
        let eps = 1e-24 / c as f64;
        if let Some(y) = crate::kernels::channel_rms_norm(x, &self.gamma, eps, false)? {
            return Ok(y);
        }
        let ms = x.sqr()?.mean_keepdim(1)?;
        let g = self.gamma.reshape((1, c, 1, 1, 1))?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(&g)
    }

    /// `silu(norm(x))`, fused in one pass at inference.
    fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        let eps = 1e-24 / x.dim(1)? as f64;
        match crate::kernels::channel_rms_norm(x, &self.gamma, eps, true)? {
            Some(y) => Ok(y),
            None => self.forward(x)?.silu(),
        }
    }
}

#[derive(Debug, Clone)]
struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

/// Context of one residual block's two causal convs.
#[derive(Debug, Clone, Default)]
pub struct ResCache {
    conv1: ConvCache,
    conv2: ConvCache,
}

impl ResidualBlock {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: RmsNorm::new(cin, false, vb.pp("norm1"))?,
            conv1: CausalConv3d::k3(cin, cout, vb.pp("conv1"))?,
            norm2: RmsNorm::new(cout, false, vb.pp("norm2"))?,
            conv2: CausalConv3d::k3(cout, cout, vb.pp("conv2"))?,
            shortcut: if cin != cout {
                Some(CausalConv3d::k1(cin, cout, vb.pp("conv_shortcut"))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut ResCache) -> Result<Tensor> {
        let h = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let y = self.norm1.forward_silu(x)?;
        let y = self.conv1.forward_cached(&y, &mut cache.conv1)?;
        let y = self.norm2.forward_silu(&y)?;
        let y = self.conv2.forward_cached(&y, &mut cache.conv2)?;
        y + h
    }
}

/// Single-head self-attention within each frame (no mixing across time, so it is causal).
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: RmsNorm,
    to_qkv_w: Tensor,
    to_qkv_b: Tensor,
    proj_w: Tensor,
    proj_b: Tensor,
}

impl AttentionBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: RmsNorm::new(dim, true, vb.pp("norm"))?,
            to_qkv_w: vb.pp("to_qkv").get((3 * dim, dim, 1, 1), "weight")?,
            to_qkv_b: vb.pp("to_qkv").get(3 * dim, "bias")?,
            proj_w: vb.pp("proj").get((dim, dim, 1, 1), "weight")?,
            proj_b: vb.pp("proj").get(dim, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let pointwise = |x: &Tensor, wt: &Tensor, bias: &Tensor| -> Result<Tensor> {
            let (o, i, _, _) = wt.dims4()?;
            let wt = wt.reshape((o, i, 1, 1, 1))?;
            let g = Conv3dGeometry {
                kernel: [1; 3],
                stride: [1; 3],
                pad_t: 0,
                pad_h: [0; 2],
                pad_w: [0; 2],
            };
            conv3d(x, &wt, Some(bias), &g)
        };
        let qkv = pointwise(&self.norm.forward(x)?, &self.to_qkv_w, &self.to_qkv_b)?;
        // (B, 3C, T, H, W) → (B·T, H·W, 3C): one token per pixel, one sequence per frame.
        let qkv = qkv
            .reshape((b, 3 * c, t, h * w))?
            .permute((0, 2, 3, 1))?
            .reshape((b * t, h * w, 3 * c))?;
        let q = qkv.narrow(2, 0, c)?.contiguous()?;
        let k = qkv.narrow(2, c, c)?.contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? / (c as f64).sqrt())?;
        // The generic softmax backpropagates; the fused `softmax_last_dim` does not.
        let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?; // (B·T, H·W, C)
                                                                            // (B·T, H·W, C) → (B, C, T, H, W)
        let att = att
            .reshape((b, t, h * w, c))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((b, c, t, h, w))?;
        pointwise(&att, &self.proj_w, &self.proj_b)? + x
    }
}

#[derive(Debug, Clone)]
struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            res0: ResidualBlock::new(dim, dim, vb.pp("resnets.0"))?,
            attn: AttentionBlock::new(dim, vb.pp("attentions.0"))?,
            res1: ResidualBlock::new(dim, dim, vb.pp("resnets.1"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut [ResCache; 2]) -> Result<Tensor> {
        let x = self.res0.forward(x, &mut cache[0])?;
        let x = self.attn.forward(&x)?;
        self.res1.forward(&x, &mut cache[1])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResampleMode {
    Up2d,
    Up3d,
    Down2d,
    Down3d,
}

/// `WanResample`: spatial 2× (conv 3×3) plus, in the 3D modes, a temporal 2× `time_conv`.
#[derive(Debug, Clone)]
struct Resample {
    mode: ResampleMode,
    conv: FrameConv2d,
    time_conv: Option<CausalConv3d>,
}

/// Temporal state of one resample: whether frame 0 went by, and the `time_conv` context.
#[derive(Debug, Clone, Default)]
pub struct ResampleCache {
    started: bool,
    conv: ConvCache,
}

impl Resample {
    /// `up_out`: channels after an upsample (Wan2.1 halves them, Wan2.2's residual layout keeps
    /// them); unused when downsampling.
    fn new(dim: usize, up_out: usize, mode: ResampleMode, vb: VarBuilder) -> Result<Self> {
        let rv = vb.pp("resample.1");
        let (conv, time_conv) = match mode {
            ResampleMode::Up2d | ResampleMode::Up3d => {
                let conv = FrameConv2d::new(dim, up_out, 3, 1, [1, 1], [1, 1], rv)?;
                let tc = if mode == ResampleMode::Up3d {
                    Some(CausalConv3d::new(
                        dim,
                        dim * 2,
                        [3, 1, 1],
                        [1; 3],
                        [1, 0, 0],
                        vb.pp("time_conv"),
                    )?)
                } else {
                    None
                };
                (conv, tc)
            }
            ResampleMode::Down2d | ResampleMode::Down3d => {
                // ZeroPad2d((0, 1, 0, 1)) then a valid stride-2 conv.
                let conv = FrameConv2d::new(dim, dim, 3, 2, [0, 1], [0, 1], rv)?;
                let tc = if mode == ResampleMode::Down3d {
                    Some(CausalConv3d::new(
                        dim,
                        dim,
                        [3, 1, 1],
                        [2, 1, 1],
                        [0; 3],
                        vb.pp("time_conv"),
                    )?)
                } else {
                    None
                };
                (conv, tc)
            }
        };
        Ok(Self {
            mode,
            conv,
            time_conv,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut ResampleCache) -> Result<Tensor> {
        match (self.mode, &self.time_conv) {
            (ResampleMode::Up3d, Some(tc)) => {
                let x = self.time_upsample(x, tc, cache)?;
                self.spatial_up(&x)
            }
            (ResampleMode::Up2d, _) => self.spatial_up(x),
            (ResampleMode::Down3d, Some(tc)) => {
                let x = self.conv.forward(x)?;
                Self::time_downsample(&x, tc, cache)
            }
            (ResampleMode::Down2d, _) => self.conv.forward(x),
            _ => candle_core::bail!("resample {:?} built without its time_conv", self.mode),
        }
    }

    fn spatial_up(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        // (B, C, T, H, W) → (B, C·T, H, W) for the 2D nearest upsample, then back.
        let x = x
            .reshape((b, c * t, h, w))?
            .upsample_nearest2d(2 * h, 2 * w)?
            .reshape((b, c, t, 2 * h, 2 * w))?;
        self.conv.forward(&x)
    }

    /// Frame 0 passes through; later frames each become two via a causal conv to `2C` channels
    /// whose context never includes frame 0 (Wan's first chunk stores `"Rep"`, not the frame).
    fn time_upsample(
        &self,
        x: &Tensor,
        tc: &CausalConv3d,
        cache: &mut ResampleCache,
    ) -> Result<Tensor> {
        let (b, c, t, h, w) = x.dims5()?;
        let (head, rest) = if cache.started {
            (None, Some(x.clone()))
        } else {
            cache.started = true;
            let head = x.narrow(2, 0, 1)?;
            let rest = if t > 1 {
                Some(x.narrow(2, 1, t - 1)?)
            } else {
                None
            };
            (Some(head), rest)
        };
        let rest = match rest {
            Some(r) => {
                let n = r.dim(2)?;
                let y = tc.forward_cached(&r, &mut cache.conv)?; // (B, 2C, n, H, W)
                                                                 // (B, 2, C, n, H, W) → (B, C, n, 2, H, W) → (B, C, 2n, H, W): frame pairs.
                let y = y
                    .reshape((b, 2, c, n, h, w))?
                    .permute((0, 2, 3, 1, 4, 5))?
                    .contiguous()?
                    .reshape((b, c, 2 * n, h, w))?;
                Some(y)
            }
            None => None,
        };
        match (head, rest) {
            (Some(h0), Some(r)) => Tensor::cat(&[h0, r], 2),
            (Some(h0), None) => Ok(h0),
            (None, Some(r)) => Ok(r),
            (None, None) => Ok(x.clone()),
        }
    }

    /// Frame 0 passes through; the stride-2 `time_conv` (no padding) then runs over the frames
    /// with the previous chunk's last frame prepended, which over a whole clip is frames `0..T`.
    fn time_downsample(x: &Tensor, tc: &CausalConv3d, cache: &mut ResampleCache) -> Result<Tensor> {
        let t = x.dim(2)?;
        let out = match &cache.conv.ctx {
            None => {
                let head = x.narrow(2, 0, 1)?;
                if t >= 3 {
                    Tensor::cat(&[head, tc.forward(x)?], 2)?
                } else {
                    head
                }
            }
            Some(prev) => tc.forward(&Tensor::cat(&[prev, x], 2)?)?,
        };
        cache.started = true;
        cache.conv.ctx = Some(last_frames(x, 1)?.detach().contiguous()?);
        Ok(out)
    }
}

/// Wan2.2's downsampling shortcut: each `factor_t × factor_s × factor_s` block of every channel
/// moves into channels (space-to-depth), and consecutive groups of those channels are averaged
/// down to `cout`. Time is zero-padded at the front to a multiple of `factor_t`, which keeps a
/// clip's first frame alone, as the causal main path does, and makes chunks of 1 then 4
/// frames give the same result as the whole clip.
#[derive(Debug, Clone)]
struct AvgDown3d {
    cout: usize,
    factor_t: usize,
    factor_s: usize,
}

impl AvgDown3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let (b, c, t, h, w) = x.dims5()?;
        let pad = (ft - t % ft) % ft;
        let x = x.pad_with_zeros(2, pad, 0)?;
        let (t, h, w) = ((t + pad) / ft, h / fs, w / fs);
        let group = c * ft * fs * fs / self.cout;
        // (B, C, t, ft, h, fs, w, fs) → (B, C, ft, fs, fs, t, h, w): channel c·f + (dt, dy, dx).
        x.reshape(vec![b, c, t, ft, h, fs, w, fs])?
            .permute(vec![0, 1, 3, 5, 7, 2, 4, 6])?
            .contiguous()?
            .reshape((b, self.cout, group, t, h, w))?
            .mean(2)
    }
}

/// Wan2.2's upsampling shortcut, the mirror of [`AvgDown3d`]: every channel is repeated, and
/// the copies spread out into `factor_t × factor_s × factor_s` blocks (depth-to-space). At a
/// clip's start the first `factor_t − 1` frames are dropped, as the main path keeps frame 0
/// single.
#[derive(Debug, Clone)]
struct DupUp3d {
    cout: usize,
    factor_t: usize,
    factor_s: usize,
}

impl DupUp3d {
    fn forward(&self, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let (b, c, t, h, w) = x.dims5()?;
        let repeats = self.cout * ft * fs * fs / c;
        let x = x
            .unsqueeze(2)?
            .broadcast_as(vec![b, c, repeats, t, h, w])?
            .reshape(vec![b, self.cout, ft, fs, fs, t, h, w])?
            .permute(vec![0, 1, 5, 2, 6, 3, 7, 4])?
            .contiguous()?
            .reshape((b, self.cout, t * ft, h * fs, w * fs))?;
        if first_chunk && ft > 1 {
            x.narrow(2, ft - 1, t * ft - (ft - 1))
        } else {
            Ok(x)
        }
    }
}

/// Wan2.2's patchify: `(B, C, T, H, W)` → `(B, C·p², T, H/p, W/p)`, channel
/// `c·p² + dx·p + dy` (column offset before row offset, as diffusers orders them).
fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, c, t, h, w) = x.dims5()?;
    x.reshape(vec![b, c, t, h / p, p, w / p, p])?
        .permute(vec![0, 1, 6, 4, 2, 3, 5])?
        .contiguous()?
        .reshape((b, c * p * p, t, h / p, w / p))
}

/// Inverse of [`patchify`].
fn unpatchify(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 1 {
        return Ok(x.clone());
    }
    let (b, cp, t, h, w) = x.dims5()?;
    let c = cp / (p * p);
    x.reshape(vec![b, c, p, p, t, h, w])?
        .permute(vec![0, 1, 4, 5, 3, 6, 2])?
        .contiguous()?
        .reshape((b, c, t, h * p, w * p))
}

// ---------------------------------------------------------------------------------------------
// Encoder and decoder
// ---------------------------------------------------------------------------------------------

/// One entry of the encoder's flat `down_blocks` list (Wan numbers them across levels, so the
/// index of a block depends on the config; growing a model deeper renames them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlock {
    Res { level: usize, block: usize },
    Attn { level: usize, block: usize },
    Resample { level: usize },
}

#[derive(Debug, Clone)]
enum DownLayer {
    Res(ResidualBlock),
    Attn(AttentionBlock),
    Resample(Resample),
    /// Start of a residual down block: remember its input.
    Branch,
    /// End of one: add the remembered input through the shortcut.
    Merge(AvgDown3d),
}

/// Context of every causal layer of the encoder; fresh = start of a clip.
#[derive(Debug, Clone)]
pub struct EncoderCache {
    conv_in: ConvCache,
    res: Vec<ResCache>,
    resample: Vec<ResampleCache>,
    mid: [ResCache; 2],
    conv_out: ConvCache,
}

#[derive(Debug, Clone)]
struct Encoder {
    conv_in: CausalConv3d,
    down: Vec<DownLayer>,
    mid: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dims: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|m| m * cfg.base_dim)
            .collect();
        let conv_in = CausalConv3d::k3(cfg.in_channels, dims[0], vb.pp("conv_in"))?;
        let vd = vb.pp("down_blocks");
        let down_mode = |level: usize| {
            if cfg.temperal_downsample[level] {
                ResampleMode::Down3d
            } else {
                ResampleMode::Down2d
            }
        };
        let mut down = Vec::new();
        if cfg.is_residual {
            // Wan2.2: one `down_blocks` entry per level (resnets, downsampler, shortcut).
            let levels = cfg.dim_mult.len();
            for level in 0..levels {
                let vl = vd.pp(level);
                let (cin, cout) = (dims[level], dims[level + 1]);
                down.push(DownLayer::Branch);
                for j in 0..cfg.num_res_blocks {
                    let c = if j == 0 { cin } else { cout };
                    down.push(DownLayer::Res(ResidualBlock::new(
                        c,
                        cout,
                        vl.pp("resnets").pp(j),
                    )?));
                }
                let last = level + 1 == levels;
                if !last {
                    let mode = down_mode(level);
                    down.push(DownLayer::Resample(Resample::new(
                        cout,
                        cout,
                        mode,
                        vl.pp("downsampler"),
                    )?));
                }
                let (factor_t, factor_s) = cfg.shortcut_block(level);
                down.push(DownLayer::Merge(AvgDown3d {
                    cout,
                    factor_t,
                    factor_s,
                }));
            }
        } else {
            for (k, entry) in cfg.encoder_down_blocks().into_iter().enumerate() {
                down.push(match entry {
                    DownBlock::Res { level, block } => {
                        let cin = if block == 0 {
                            dims[level]
                        } else {
                            dims[level + 1]
                        };
                        DownLayer::Res(ResidualBlock::new(cin, dims[level + 1], vd.pp(k))?)
                    }
                    DownBlock::Attn { level, .. } => {
                        DownLayer::Attn(AttentionBlock::new(dims[level + 1], vd.pp(k))?)
                    }
                    DownBlock::Resample { level } => {
                        let d = dims[level + 1];
                        DownLayer::Resample(Resample::new(d, d, down_mode(level), vd.pp(k))?)
                    }
                });
            }
        }
        let top = dims[dims.len() - 1];
        Ok(Self {
            conv_in,
            down,
            mid: MidBlock::new(top, vb.pp("mid_block"))?,
            norm_out: RmsNorm::new(top, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::k3(top, 2 * cfg.z_dim, vb.pp("conv_out"))?,
        })
    }

    fn new_cache(&self) -> EncoderCache {
        let count = |f: fn(&DownLayer) -> bool| self.down.iter().filter(|l| f(l)).count();
        EncoderCache {
            conv_in: ConvCache::default(),
            res: vec![ResCache::default(); count(|l| matches!(l, DownLayer::Res(_)))],
            resample: vec![
                ResampleCache::default();
                count(|l| matches!(l, DownLayer::Resample(_)))
            ],
            mid: Default::default(),
            conv_out: ConvCache::default(),
        }
    }

    /// `(B, 3, T, H, W)` → `(B, 2z, T', H/8, W/8)` (before `quant_conv`).
    fn forward(&self, x: &Tensor, cache: &mut EncoderCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(x, &mut cache.conv_in)?;
        let (mut ri, mut si) = (0, 0);
        let mut branch = None;
        for layer in &self.down {
            x = match layer {
                DownLayer::Branch => {
                    branch = Some(x.clone());
                    continue;
                }
                DownLayer::Merge(s) => match branch.take() {
                    Some(input) => (&x + s.forward(&input)?)?,
                    None => candle_core::bail!("residual down block merged without its input"),
                },
                DownLayer::Res(r) => {
                    ri += 1;
                    r.forward(&x, &mut cache.res[ri - 1])?
                }
                DownLayer::Attn(a) => a.forward(&x)?,
                DownLayer::Resample(s) => {
                    si += 1;
                    s.forward(&x, &mut cache.resample[si - 1])?
                }
            };
        }
        let x = self.mid.forward(&x, &mut cache.mid)?;
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, &mut cache.conv_out)
    }
}

#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
    /// Wan2.2's residual layout only.
    shortcut: Option<DupUp3d>,
}

#[derive(Debug, Clone)]
struct UpBlockCache {
    res: Vec<ResCache>,
    up: ResampleCache,
}

/// Context of every causal layer of the decoder; fresh = start of a clip.
#[derive(Debug, Clone)]
pub struct DecoderCache {
    conv_in: ConvCache,
    mid: [ResCache; 2],
    up: Vec<UpBlockCache>,
    conv_out: ConvCache,
}

#[derive(Debug, Clone)]
struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let n = cfg.dim_mult.len();
        let dims: Vec<usize> = std::iter::once(cfg.dim_mult[n - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .map(|m| m * cfg.decoder_dim())
            .collect();
        let temporal_up: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let conv_in = CausalConv3d::k3(cfg.z_dim, dims[0], vb.pp("conv_in"))?;
        let mid = MidBlock::new(dims[0], vb.pp("mid_block"))?;
        let mut up = Vec::new();
        for i in 0..n {
            // Each upsample halves the channels in Wan2.1, so later blocks take half as input;
            // the residual layout keeps them.
            let block_in = if i > 0 && !cfg.is_residual {
                dims[i] / 2
            } else {
                dims[i]
            };
            let cout = dims[i + 1];
            let vu = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::new();
            let mut cin = block_in;
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::new(cin, cout, vu.pp("resnets").pp(j))?);
                cin = cout;
            }
            let (mut upsampler, mut shortcut) = (None, None);
            if i != n - 1 {
                let mode = if temporal_up[i] {
                    ResampleMode::Up3d
                } else {
                    ResampleMode::Up2d
                };
                if cfg.is_residual {
                    upsampler = Some(Resample::new(cout, cout, mode, vu.pp("upsampler"))?);
                    shortcut = Some(DupUp3d {
                        cout,
                        factor_t: if temporal_up[i] { 2 } else { 1 },
                        factor_s: 2,
                    });
                } else {
                    upsampler = Some(Resample::new(cout, cout / 2, mode, vu.pp("upsamplers.0"))?);
                }
            }
            up.push(UpBlock {
                resnets,
                upsampler,
                shortcut,
            });
        }
        let last = dims[n];
        Ok(Self {
            conv_in,
            mid,
            up,
            norm_out: RmsNorm::new(last, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::k3(last, cfg.out_channels, vb.pp("conv_out"))?,
        })
    }

    fn new_cache(&self) -> DecoderCache {
        DecoderCache {
            conv_in: ConvCache::default(),
            mid: Default::default(),
            up: self
                .up
                .iter()
                .map(|b| UpBlockCache {
                    res: vec![ResCache::default(); b.resnets.len()],
                    up: ResampleCache::default(),
                })
                .collect(),
            conv_out: ConvCache::default(),
        }
    }

    /// `(B, z, T', h, w)` (after `post_quant_conv`) → `(B, 3, 4(T'-1)+1, 8h, 8w)`, unclamped.
    fn forward(&self, z: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(z, &mut cache.conv_in)?;
        x = self.mid.forward(&x, &mut cache.mid)?;
        for (block, bc) in self.up.iter().zip(cache.up.iter_mut()) {
            let input = x.clone();
            // Before the upsampler marks it: whether this block sees the clip's first frame.
            let first_chunk = !bc.up.started;
            for (r, rc) in block.resnets.iter().zip(bc.res.iter_mut()) {
                x = r.forward(&x, rc)?;
            }
            if let Some(u) = &block.upsampler {
                x = u.forward(&x, &mut bc.up)?;
            }
            if let Some(s) = &block.shortcut {
                x = (x + s.forward(&input, first_chunk)?)?;
            }
        }
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, &mut cache.conv_out)
    }
}

// ---------------------------------------------------------------------------------------------
// Posterior
// ---------------------------------------------------------------------------------------------

/// Diagonal Gaussian `q(z | x)`: mean and log-variance, each `(B, z, T', H/8, W/8)`.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mean: Tensor,
    /// Clamped to `[-30, 20]` like diffusers' `DiagonalGaussianDistribution`.
    pub logvar: Tensor,
}

impl Posterior {
    fn from_moments(h: &Tensor, z: usize) -> Result<Self> {
        Ok(Self {
            mean: h.narrow(1, 0, z)?,
            logvar: h.narrow(1, z, z)?.clamp(-30f32, 20f32)?,
        })
    }

    /// `mean + σ·ε` with the caller's standard-normal `noise` (same shape), so sampling stays
    /// reproducible under the caller's RNG.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        let std = (&self.logvar * 0.5)?.exp()?;
        self.mean.add(&std.mul(noise)?)
    }

    /// Mean over elements of `KL(q ‖ N(0, I))`.
    pub fn kl_mean(&self) -> Result<Tensor> {
        let var = self.logvar.exp()?;
        let kl = ((self.mean.sqr()? + var)? - 1.0)?.sub(&self.logvar)?;
        kl.mean_all()? * 0.5
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The VAE. Cheap to clone (tensors are reference counted).
#[derive(Debug, Clone)]
pub struct AutoencoderKLWan {
    encoder: Encoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    cfg: Config,
    latents_mean: Tensor,
    latents_std: Tensor,
}

impl AutoencoderKLWan {
    /// Builds the model from `vb` (diffusers key names: `encoder.*`, `quant_conv.*`,
    /// `post_quant_conv.*`, `decoder.*`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> VaeResult<Self> {
        cfg.validate()?;
        let dev = vb.device().clone();
        let z = cfg.z_dim;
        let stat = |v: &[f32]| Tensor::from_slice(v, (1, z, 1, 1, 1), &dev);
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            quant_conv: CausalConv3d::k1(2 * z, 2 * z, vb.pp("quant_conv"))?,
            post_quant_conv: CausalConv3d::k1(z, z, vb.pp("post_quant_conv"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            latents_mean: stat(&cfg.latents_mean)?.to_dtype(vb.dtype())?,
            latents_std: stat(&cfg.latents_std)?.to_dtype(vb.dtype())?,
            cfg: cfg.clone(),
        })
    }

    /// Loads diffusers-format safetensors, checking every tensor name and shape first (missing,
    /// mismatched and unexpected tensors are errors naming the tensor).
    pub fn load<P: AsRef<Path>>(
        cfg: &Config,
        paths: &[P],
        dtype: DType,
        dev: &Device,
    ) -> VaeResult<Self> {
        cfg.validate()?;
        let mut tensors = HashMap::new();
        let mut origin = HashMap::new();
        for p in paths {
            let p = p.as_ref();
            if !p.exists() {
                return Err(VaeError::Io {
                    path: p.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            for (k, v) in candle_core::safetensors::load(p, dev)? {
                origin.insert(k.clone(), p.to_path_buf());
                tensors.insert(k, v);
            }
        }
        let first = paths
            .first()
            .map(|p| p.as_ref().to_path_buf())
            .unwrap_or_default();
        let expected = expected_parameters(cfg)?;
        for (name, shape) in &expected {
            match tensors.get(name) {
                None => {
                    return Err(VaeError::MissingWeight {
                        path: first,
                        name: name.clone(),
                        expected: shape.dims().to_vec(),
                    })
                }
                Some(t) if t.dims() != shape.dims() => {
                    return Err(VaeError::WeightShape {
                        path: origin[name].clone(),
                        name: name.clone(),
                        expected: shape.dims().to_vec(),
                        found: t.dims().to_vec(),
                    })
                }
                Some(_) => {}
            }
        }
        let known: HashSet<&String> = expected.iter().map(|(n, _)| n).collect();
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !known.contains(k)).collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(VaeError::UnexpectedWeight {
                path: origin[*name].clone(),
                name: (*name).clone(),
                count: extra.len(),
            });
        }
        Self::new(cfg, VarBuilder::from_tensors(tensors, dtype, dev))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where the weights live; inputs must be placed there too.
    pub fn device(&self) -> &Device {
        self.latents_mean.device()
    }

    /// Fresh causal context for [`Self::encode_chunk`].
    pub fn new_encoder_cache(&self) -> EncoderCache {
        self.encoder.new_cache()
    }

    /// Fresh causal context for [`Self::decode_chunk`].
    pub fn new_decoder_cache(&self) -> DecoderCache {
        self.decoder.new_cache()
    }

    /// Encodes a whole clip `(B, 3, T, H, W)` in `[-1, 1]`, `T = 4k+1`, in one pass.
    pub fn encode(&self, x: &Tensor) -> VaeResult<Posterior> {
        self.cfg.check_video_dims(x.dims())?;
        let mut cache = self.new_encoder_cache();
        self.encode_chunk(x, &mut cache)
    }

    /// Encodes the next frames of a clip with `cache` carrying the causal context: first a
    /// chunk of `4k+1` frames (typically 1), then chunks of a multiple of 4 frames. The
    /// concatenated results equal [`Self::encode`] on the whole clip.
    pub fn encode_chunk(&self, x: &Tensor, cache: &mut EncoderCache) -> VaeResult<Posterior> {
        let started = cache.conv_in.ctx.is_some();
        let dims = x.dims();
        if started {
            let f = self.cfg.temporal_factor();
            let mut as_first = dims.to_vec();
            as_first[2] = 1;
            self.cfg.check_video_dims(&as_first)?;
            if !dims[2].is_multiple_of(f) || dims[2] == 0 {
                return Err(VaeError::ChunkLength {
                    got: dims[2],
                    factor: f,
                });
            }
        } else {
            self.cfg.check_video_dims(dims)?;
        }
        let h = self
            .encoder
            .forward(&patchify(x, self.cfg.patch())?, cache)?;
        let h = self.quant_conv.forward(&h)?;
        Ok(Posterior::from_moments(&h, self.cfg.z_dim)?)
    }

    /// Encodes first frame, then 4 frames at a time, with one cache: the streaming path, for
    /// long clips (memory bounded by the chunk); equal to [`Self::encode`].
    pub fn encode_chunked(&self, x: &Tensor) -> VaeResult<Posterior> {
        self.cfg.check_video_dims(x.dims())?;
        let t = x.dim(2)?;
        let f = self.cfg.temporal_factor();
        let mut cache = self.new_encoder_cache();
        let (mut means, mut logvars) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < t {
            let len = if start == 0 { 1 } else { f };
            let p = self.encode_chunk(&x.narrow(2, start, len)?, &mut cache)?;
            means.push(p.mean);
            logvars.push(p.logvar);
            start += len;
        }
        Ok(Posterior {
            mean: Tensor::cat(&means, 2)?,
            logvar: Tensor::cat(&logvars, 2)?,
        })
    }

    /// Decodes latents `(B, z, T', h, w)` to `(B, 3, 4(T'-1)+1, 8h, 8w)` clamped to `[-1, 1]`.
    pub fn decode(&self, z: &Tensor) -> VaeResult<Tensor> {
        Ok(self.decode_unclamped(z)?.clamp(-1f32, 1f32)?)
    }

    /// [`Self::decode`] without the final clamp (training needs the gradient outside the range).
    pub fn decode_unclamped(&self, z: &Tensor) -> VaeResult<Tensor> {
        let mut cache = self.new_decoder_cache();
        self.decode_chunk(z, &mut cache)
    }

    /// Decodes the next latent frames of a clip with `cache` carrying the causal context
    /// (unclamped). The first call yields `4(n-1)+1` frames, later calls `4n`.
    pub fn decode_chunk(&self, z: &Tensor, cache: &mut DecoderCache) -> VaeResult<Tensor> {
        let (_, c, t, _, _) = z.dims5()?;
        if c != self.cfg.z_dim || t == 0 {
            return Err(VaeError::InputShape {
                channels: self.cfg.z_dim,
                got: z.dims().to_vec(),
            });
        }
        let x = self.post_quant_conv.forward(z)?;
        Ok(unpatchify(
            &self.decoder.forward(&x, cache)?,
            self.cfg.patch(),
        )?)
    }

    /// Encodes to the normalised latent `(mean - latents_mean) / latents_std` (posterior mean,
    /// deterministic) — the space the diffusion model works in.
    pub fn encode_latents(&self, x: &Tensor) -> VaeResult<Tensor> {
        let p = self.encode(x)?;
        self.normalize_latents(&p.mean)
    }

    /// Inverse of [`Self::encode_latents`]: denormalises and decodes, clamped to `[-1, 1]`.
    pub fn decode_latents(&self, z: &Tensor) -> VaeResult<Tensor> {
        self.decode(&self.denormalize_latents(z)?)
    }

    /// `(z - mean) / std` per channel.
    pub fn normalize_latents(&self, z: &Tensor) -> VaeResult<Tensor> {
        let m = self.latents_mean.to_dtype(z.dtype())?;
        let s = self.latents_std.to_dtype(z.dtype())?;
        Ok(z.broadcast_sub(&m)?.broadcast_div(&s)?)
    }

    /// `z · std + mean` per channel.
    pub fn denormalize_latents(&self, z: &Tensor) -> VaeResult<Tensor> {
        let m = self.latents_mean.to_dtype(z.dtype())?;
        let s = self.latents_std.to_dtype(z.dtype())?;
        Ok(z.broadcast_mul(&s)?.broadcast_add(&m)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming decode and spatial tiling
// ---------------------------------------------------------------------------------------------

/// Spatial tiling in latent pixels: tiles of `tile` with `overlap` shared between neighbours,
/// blended with linear ramps. Receptive fields are cut at tile borders, so the result is close
/// to, not equal to, the untiled decode; the overlap hides the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub tile: usize,
    pub overlap: usize,
}

impl Tiling {
    /// 256-pixel tiles overlapping by 64 pixels for an 8× VAE (diffusers' defaults).
    pub fn wan_default() -> Self {
        Self {
            tile: 32,
            overlap: 8,
        }
    }

    /// Tile start offsets covering `len` (the last tile is aligned to the end).
    fn starts(&self, len: usize) -> Vec<usize> {
        if len <= self.tile {
            return vec![0];
        }
        let stride = (self.tile - self.overlap).max(1);
        let mut s: Vec<usize> = (0..)
            .map(|i| i * stride)
            .take_while(|&p| p + self.tile < len)
            .collect();
        s.push(len - self.tile);
        s.dedup();
        s
    }
}

/// Weights along one axis for a tile at `start..start+len` in `0..total`: ramps where the tile
/// overlaps a neighbour, 1 elsewhere.
fn ramp(start: usize, len: usize, total: usize, ramp_len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut w = 1.0f32;
            if start > 0 && i < ramp_len {
                w = w.min((i + 1) as f32 / (ramp_len + 1) as f32);
            }
            if start + len < total && len - i <= ramp_len {
                w = w.min((len - i) as f32 / (ramp_len + 1) as f32);
            }
            w
        })
        .collect()
}

/// Decodes a latent clip chunk by chunk, so a long video can be written as it decodes with
/// memory bounded by the chunk; optionally tiled in space.
pub struct DecodeStream<'a> {
    vae: &'a AutoencoderKLWan,
    tiling: Option<Tiling>,
    /// One causal context per tile (a single one when untiled), created on the first push.
    caches: Vec<DecoderCache>,
}

impl<'a> DecodeStream<'a> {
    pub fn new(vae: &'a AutoencoderKLWan, tiling: Option<Tiling>) -> Self {
        Self {
            vae,
            tiling,
            caches: Vec::new(),
        }
    }

    /// Decodes the next latent frames `(B, z, n, h, w)` (unnormalised); returns the new video
    /// frames `(B, 3, n', 8h, 8w)` in `[-1, 1]`: `n' = 4(n-1)+1` on the first push, `4n` after.
    pub fn push(&mut self, z: &Tensor) -> VaeResult<Tensor> {
        let (_, _, _, h, w) = z.dims5()?;
        let Some(tiling) = self.tiling.filter(|t| h > t.tile || w > t.tile) else {
            if self.caches.is_empty() {
                self.caches.push(self.vae.new_decoder_cache());
            }
            return Ok(self
                .vae
                .decode_chunk(z, &mut self.caches[0])?
                .clamp(-1f32, 1f32)?);
        };
        let (ys, xs) = (tiling.starts(h), tiling.starts(w));
        if self.caches.is_empty() {
            self.caches = (0..ys.len() * xs.len())
                .map(|_| self.vae.new_decoder_cache())
                .collect();
        }
        let s = self.vae.cfg.spatial_factor();
        let (th, tw) = (tiling.tile.min(h), tiling.tile.min(w));
        let mut acc: Option<Tensor> = None;
        let mut wsum: Option<Tensor> = None;
        for (iy, &y0) in ys.iter().enumerate() {
            for (ix, &x0) in xs.iter().enumerate() {
                let zt = z.narrow(3, y0, th)?.narrow(4, x0, tw)?;
                let out = self
                    .vae
                    .decode_chunk(&zt, &mut self.caches[iy * xs.len() + ix])?;
                let wy = ramp(y0 * s, th * s, h * s, tiling.overlap * s);
                let wx = ramp(x0 * s, tw * s, w * s, tiling.overlap * s);
                let wy = Tensor::from_vec(wy, (1, 1, 1, th * s, 1), out.device())?;
                let wx = Tensor::from_vec(wx, (1, 1, 1, 1, tw * s), out.device())?;
                let wt = wy.broadcast_mul(&wx)?.to_dtype(out.dtype())?;
                let place = |t: &Tensor| -> Result<Tensor> {
                    t.pad_with_zeros(3, y0 * s, (h - y0 - th) * s)?
                        .pad_with_zeros(4, x0 * s, (w - x0 - tw) * s)
                };
                let weighted = place(&out.broadcast_mul(&wt)?)?;
                let wpl = place(&wt)?;
                acc = Some(match acc {
                    Some(a) => (a + weighted)?,
                    None => weighted,
                });
                wsum = Some(match wsum {
                    Some(a) => (a + wpl)?,
                    None => wpl,
                });
            }
        }
        match (acc, wsum) {
            (Some(a), Some(ws)) => Ok(a.broadcast_div(&ws)?.clamp(-1f32, 1f32)?),
            _ => Err(VaeError::Config("tiling produced no tiles".into())),
        }
    }
}

impl AutoencoderKLWan {
    /// Decodes with spatial tiling (whole clip): for frames too large to decode in one piece.
    pub fn decode_tiled(&self, z: &Tensor, tiling: Tiling) -> VaeResult<Tensor> {
        DecodeStream::new(self, Some(tiling)).push(z)
    }
}

// ---------------------------------------------------------------------------------------------
// Video conversion
// ---------------------------------------------------------------------------------------------

/// RGB8 video → `(1, 3, T, H, W)` f32 in `[-1, 1]`.
pub fn video_to_tensor(video: &tessera_media::Video, dev: &Device) -> Result<Tensor> {
    let (h, w, t) = (
        video.height as usize,
        video.width as usize,
        video.frames.len(),
    );
    let mut data = Vec::with_capacity(3 * t * h * w);
    for c in 0..3 {
        for f in &video.frames {
            if f.len() != h * w * 3 {
                candle_core::bail!(
                    "video frame has {} bytes, expected {}x{}x3 = {}",
                    f.len(),
                    h,
                    w,
                    h * w * 3
                )
            }
            data.extend(f.iter().skip(c).step_by(3).map(|v| *v as f32 / 127.5 - 1.0));
        }
    }
    Tensor::from_vec(data, (1, 3, t, h, w), dev)
}

/// `(1, 3, T, H, W)` or `(3, T, H, W)` in `[-1, 1]` → RGB8 video (values clamped, rounded).
pub fn tensor_to_video(x: &Tensor, fps: f64) -> Result<tessera_media::Video> {
    let x = if x.rank() == 5 {
        x.squeeze(0)?
    } else {
        x.clone()
    };
    let (c, t, h, w) = x.dims4()?;
    if c != 3 {
        candle_core::bail!("tensor_to_video needs 3 channels, got {c}")
    }
    let v: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut video = tessera_media::Video::new(w as u32, h as u32, fps);
    for f in 0..t {
        let mut frame = vec![0u8; h * w * 3];
        for (i, px) in frame.iter_mut().enumerate() {
            let (p, ch) = (i / 3, i % 3);
            let val = v[((ch * t + f) * h * w) + p];
            *px = ((val + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
        }
        video.frames.push(frame);
    }
    Ok(video)
}

// ---------------------------------------------------------------------------------------------
// Parameters: names, shapes, fresh initialisation
// ---------------------------------------------------------------------------------------------

/// Records the names and shapes a model asks for, handing out broadcast zeros (no allocation).
struct ShapeRecorder(Arc<Mutex<Vec<(String, Shape)>>>);

impl SimpleBackend for ShapeRecorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("shape recorder poisoned".into()))?
            .push((name.to_string(), s.clone()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("shape recorder: `{name}` requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Every parameter of the config, in diffusers naming, with its shape (construction order).
pub fn expected_parameters(cfg: &Config) -> VaeResult<Vec<(String, Shape)>> {
    let rec = Arc::new(Mutex::new(Vec::new()));
    let backend: Box<dyn SimpleBackend> = Box::new(ShapeRecorder(rec.clone()));
    let vb = VarBuilder::from_backend(backend, DType::F32, Device::Cpu);
    AutoencoderKLWan::new(cfg, vb)?;
    let list = rec
        .lock()
        .map_err(|_| VaeError::Config("shape recorder poisoned".into()))?
        .clone();
    Ok(list)
}

/// Initial posterior log-variance of fresh weights (σ ≈ 0.02).
pub const INIT_LOGVAR: f32 = -8.0;

/// Fresh trainable weights, deterministic in `seed`: conv weights `U(±1/√fan_in)` (PyTorch's
/// default), biases 0, norm gains 1 — except the log-variance half of `quant_conv.bias`, which
/// starts at [`INIT_LOGVAR`]: with the tiny KL weight of VAE training nothing pulls log σ² down
/// quickly, and unit posterior noise at the start drowns the latent for thousands of steps.
pub fn init_varmap(cfg: &Config, seed: u64, dev: &Device) -> VaeResult<VarMap> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| VaeError::Config("varmap poisoned".into()))?;
        for (name, shape) in expected_parameters(cfg)? {
            let n = shape.elem_count();
            let t = if name == "quant_conv.bias" {
                let z = cfg.z_dim;
                let v: Vec<f32> = (0..2 * z)
                    .map(|i| if i < z { 0.0 } else { INIT_LOGVAR })
                    .collect();
                Tensor::from_vec(v, shape, dev)?
            } else if name.ends_with("gamma") {
                Tensor::ones(shape, DType::F32, dev)?
            } else if name.ends_with("bias") {
                Tensor::zeros(shape, DType::F32, dev)?
            } else {
                let fan_in: usize = shape.dims()[1..].iter().product();
                let bound = 1.0 / (fan_in as f32).sqrt();
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                Tensor::from_vec(v, shape, dev)?
            };
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_come_by_preset_name_or_file() {
        assert_eq!(Config::preset_or_file("tiny").unwrap(), Config::tiny());
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configs/vae-tiny-residual-s4-t2.json"
        );
        let cfg = Config::preset_or_file(file).unwrap();
        assert_eq!((cfg.temporal_factor(), cfg.spatial_factor()), (2, 4));
        let err = Config::preset_or_file("huge").unwrap_err().to_string();
        assert!(
            err.contains("`huge`") && err.contains("tiny-residual"),
            "{err}"
        );
        assert!(matches!(
            Config::preset_or_file("/no/such.json"),
            Err(VaeError::Io { .. })
        ));
    }

    /// `cfg`'s layout at 4 channels wide, 4 latent channels: tests run in milliseconds.
    fn at_micro_widths(cfg: Config) -> Config {
        Config {
            base_dim: 4,
            z_dim: 4,
            latents_mean: vec![0.0; 4],
            latents_std: vec![1.0; 4],
            ..cfg
        }
    }

    fn micro() -> Config {
        at_micro_widths(Config {
            dim_mult: vec![1, 2, 2, 2],
            ..Config::tiny()
        })
    }

    fn model(cfg: &Config, seed: u64) -> AutoencoderKLWan {
        let vm = init_varmap(cfg, seed, &Device::Cpu).unwrap();
        AutoencoderKLWan::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
    }

    #[test]
    fn presets_validate_and_factors() {
        for c in [
            Config::tiny(),
            Config::tiny_residual(),
            Config::tiny_patch(),
            Config::wan2_1(),
        ] {
            c.validate().unwrap();
            assert_eq!(c.spatial_factor(), 8);
            assert_eq!(c.temporal_factor(), 4);
            assert_eq!(c.latent_frames(33), 9);
        }
        let mut bad = Config::tiny();
        bad.temperal_downsample.pop();
        assert!(matches!(bad.validate(), Err(VaeError::Config(_))));
        // The residual shortcut cannot average 2 channel groups into 4 at the last level.
        let widening = Config {
            dim_mult: vec![1, 2, 4],
            temperal_downsample: vec![true, true],
            ..Config::tiny_residual()
        };
        let err = widening.validate().unwrap_err().to_string();
        assert!(
            err.contains("level 2") && err.contains("[1, 2, 4, 4]"),
            "{err}"
        );
        Config {
            dim_mult: vec![1, 2, 2],
            ..widening
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn bad_sizes_name_nearest_valid_values() {
        let c = Config::tiny();
        match c.check_video_dims(&[1, 3, 10, 64, 64]) {
            Err(VaeError::FrameCount { below, above, .. }) => assert_eq!((below, above), (9, 13)),
            other => panic!("{other:?}"),
        }
        match c.check_video_dims(&[1, 3, 9, 60, 64]) {
            Err(VaeError::FrameSize {
                h_below, h_above, ..
            }) => assert_eq!((h_below, h_above), (56, 64)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.check_video_dims(&[1, 4, 9, 64, 64]),
            Err(VaeError::InputShape { .. })
        ));
    }

    fn micro_residual() -> Config {
        Config {
            is_residual: true,
            ..micro()
        }
    }

    fn micro_patch() -> Config {
        at_micro_widths(Config::tiny_patch())
    }

    #[test]
    fn shapes_round_trip() -> VaeResult<()> {
        for cfg in [micro(), micro_residual(), micro_patch()] {
            let m = model(&cfg, 0);
            let x = Tensor::randn(0f32, 0.5, (1, 3, 9, 16, 24), &Device::Cpu)?;
            let p = m.encode(&x)?;
            assert_eq!(p.mean.dims(), &[1, 4, 3, 2, 3]);
            let y = m.decode(&p.mean)?;
            assert_eq!(y.dims(), &[1, 3, 9, 16, 24]);
            // An image is a one-frame video in both layouts.
            let img = m.decode(&m.encode(&x.narrow(2, 0, 1)?)?.mean)?;
            assert_eq!(img.dims(), &[1, 3, 1, 16, 24]);
        }
        Ok(())
    }

    /// Changing frames ≥ k must not change latents of frames < k (causality), nor decoded
    /// frames of latent frames < k.
    #[test]
    fn encoder_and_decoder_are_causal() -> VaeResult<()> {
        for cfg in [micro(), micro_residual(), micro_patch()] {
            let m = model(&cfg, 1);
            let x = Tensor::randn(0f32, 0.5, (1, 3, 9, 16, 16), &Device::Cpu)?;
            let tail = Tensor::randn(0f32, 0.5, (1, 3, 4, 16, 16), &Device::Cpu)?;
            let x2 = Tensor::cat(&[x.narrow(2, 0, 5)?, tail], 2)?;
            let (pa, pb) = (m.encode(&x)?.mean, m.encode(&x2)?.mean);
            let max = |a: Tensor, b: Tensor| -> VaeResult<f32> {
                Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
            };
            let d = max(pa.narrow(2, 0, 2)?, pb.narrow(2, 0, 2)?)?;
            assert!(d < 1e-6, "latent of the past changed by {d}");
            let d = max(
                m.decode(&pa)?.narrow(2, 0, 5)?,
                m.decode(&pb)?.narrow(2, 0, 5)?,
            )?;
            assert!(d < 1e-6, "decoded past changed by {d}");
        }
        Ok(())
    }

    #[test]
    fn missing_and_mismatched_weights_are_named() -> VaeResult<()> {
        let cfg = micro();
        let dir = tempfile::tempdir().map_err(|e| VaeError::Io {
            path: "tmp".into(),
            source: e,
        })?;
        let vm = init_varmap(&cfg, 0, &Device::Cpu)?;
        let path = dir.path().join("w.safetensors");
        let mut ts: HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        ts.remove("decoder.conv_out.bias");
        candle_core::safetensors::save(&ts, &path)?;
        match AutoencoderKLWan::load(&cfg, &[&path], DType::F32, &Device::Cpu) {
            Err(VaeError::MissingWeight { name, expected, .. }) => {
                assert_eq!(name, "decoder.conv_out.bias");
                assert_eq!(expected, vec![3]);
            }
            other => panic!("{other:?}"),
        }
        ts.insert(
            "decoder.conv_out.bias".into(),
            Tensor::zeros(4, DType::F32, &Device::Cpu)?,
        );
        candle_core::safetensors::save(&ts, &path)?;
        match AutoencoderKLWan::load(&cfg, &[&path], DType::F32, &Device::Cpu) {
            Err(VaeError::WeightShape {
                name,
                expected,
                found,
                ..
            }) => {
                assert_eq!(name, "decoder.conv_out.bias");
                assert_eq!((expected, found), (vec![3], vec![4]));
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn video_tensor_round_trip() -> Result<()> {
        let mut v = tessera_media::Video::new(4, 2, 8.0);
        for f in 0..3u8 {
            v.frames.push((0..24).map(|i| i as u8 * 10 + f).collect());
        }
        let t = video_to_tensor(&v, &Device::Cpu)?;
        assert_eq!(t.dims(), &[1, 3, 3, 2, 4]);
        assert_eq!(tensor_to_video(&t, 8.0)?, v);
        Ok(())
    }

    #[test]
    fn tiling_starts_cover_the_axis() {
        let t = Tiling {
            tile: 8,
            overlap: 2,
        };
        assert_eq!(t.starts(8), vec![0]);
        assert_eq!(t.starts(20), vec![0, 6, 12]);
        assert_eq!(t.starts(10), vec![0, 2]);
    }

    /// f64 noise of standard deviation `std` from a fixed seed: finite differences on random
    /// data that changes every run would fail whenever a draw lands near a kink (the logvar clamp).
    fn seeded_uniform(shape: &[usize], std: f64, seed: u64) -> Result<Tensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a = std * 3f64.sqrt(); // U(−a, a) has variance a²/3
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    /// Autograd through the whole model (RMS norm, causal convs, both resamples with their
    /// `time_conv`, attention with the generic softmax, posterior) against central finite
    /// differences, in f64, for one parameter of each kind and for the input.
    #[test]
    fn model_gradients_match_finite_differences() -> VaeResult<()> {
        let cfg = micro();
        let dev = Device::Cpu;
        let vm = init_varmap(&cfg, 3, &dev)?;
        let mut params: HashMap<String, Tensor> = HashMap::new();
        for (k, v) in vm.data().lock().unwrap().iter() {
            // Perturb the gains so the norm's gradient is not evaluated at γ = 1 only.
            let t = v.as_tensor().to_dtype(DType::F64)?;
            let t = if k.ends_with("gamma") {
                (t + seeded_uniform(v.shape().dims(), 0.1, k.len() as u64)?)?
            } else {
                t
            };
            params.insert(k.clone(), t);
        }
        let x = seeded_uniform(&[1, 3, 5, 16, 16], 0.5, 1)?;
        let r = seeded_uniform(&[1, 3, 5, 16, 16], 1.0, 2)?;
        let objective = |p: &HashMap<String, Tensor>, x: &Tensor| -> VaeResult<Tensor> {
            let m =
                AutoencoderKLWan::new(&cfg, VarBuilder::from_tensors(p.clone(), DType::F64, &dev))?;
            let post = m.encode(x)?;
            let y = m.decode_unclamped(&post.mean)?;
            Ok(((y * &r)?.sum_all()? + post.logvar.sum_all()?)?)
        };
        let checked = [
            "encoder.conv_in.weight",
            "encoder.down_blocks.0.norm1.gamma",
            "encoder.down_blocks.3.time_conv.weight",
            "encoder.down_blocks.3.resample.1.weight",
            "encoder.mid_block.attentions.0.to_qkv.weight",
            "encoder.mid_block.attentions.0.norm.gamma",
            "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
            "decoder.up_blocks.2.upsamplers.0.resample.1.weight",
            "decoder.norm_out.gamma",
            "quant_conv.bias",
        ];
        let vars: HashMap<String, Var> = checked
            .iter()
            .map(|n| Ok((n.to_string(), Var::from_tensor(&params[*n])?)))
            .collect::<Result<_>>()?;
        let xv = Var::from_tensor(&x)?;
        let mut with_vars = params.clone();
        for (n, v) in &vars {
            with_vars.insert(n.clone(), v.as_tensor().clone());
        }
        let grads = objective(&with_vars, xv.as_tensor())?.backward()?;
        let mut worst = (0f64, String::new());
        let h = 1e-6;
        for name in checked
            .iter()
            .map(|s| s.to_string())
            .chain(["input".to_string()])
        {
            let (base, grad) = if name == "input" {
                (x.clone(), grads.get(&xv).expect("input grad").clone())
            } else {
                let g = grads
                    .get(&vars[&name])
                    .unwrap_or_else(|| panic!("no gradient reached {name}"))
                    .clone();
                (params[&name].clone(), g)
            };
            let flat: Vec<f64> = base.flatten_all()?.to_vec1()?;
            let g: Vec<f64> = grad.flatten_all()?.to_vec1()?;
            for i in (0..flat.len()).step_by(flat.len().div_ceil(3)) {
                let eval = |delta: f64| -> VaeResult<f64> {
                    let mut v = flat.clone();
                    v[i] += delta;
                    let t = Tensor::from_vec(v, base.shape(), &dev)?;
                    let out = if name == "input" {
                        objective(&params, &t)?
                    } else {
                        let mut p = params.clone();
                        p.insert(name.clone(), t);
                        objective(&p, &x)?
                    };
                    Ok(out.to_scalar::<f64>()?)
                };
                let fd = (eval(h)? - eval(-h)?) / (2.0 * h);
                let err = (fd - g[i]).abs() / fd.abs().max(1.0);
                if err > worst.0 {
                    worst = (
                        err,
                        format!("{name}[{i}]: fd {fd:.6e} autograd {:.6e}", g[i]),
                    );
                }
            }
        }
        println!(
            "worst relative gradient error {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 < 1e-5, "{}", worst.1);
        Ok(())
    }
}
