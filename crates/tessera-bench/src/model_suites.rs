//! Model suites: the DiT (forward and train step at the reference config) and the VAE (encode and
//! decode of 33-frame clips). Each suite writes the weights, inputs and outputs it used to an
//! export folder, so `bench/peer/peer.py` can run diffusers on the very same numbers, check they
//! agree, and time it (see docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use tessera_models::{dit, vae};

use crate::{median_ms, Row};

/// Reference DiT workload of issue 8: batch 2, 1,024 video tokens (4 latent frames of 32×32
/// cells = 4·16·16 patches), 32 text tokens, one timestep per sample.
const DIT_BATCH: usize = 2;
const DIT_LATENT: (usize, usize, usize) = (4, 32, 32);
const DIT_TEXT_TOKENS: usize = 32;

/// Clip sizes of issue 8, `(frames, height, width)`.
const VAE_CLIPS: [(usize, usize, usize); 2] = [(33, 64, 64), (33, 256, 256)];

/// fp32 FLOPs of one DiT forward: every matmul (2 per multiply-add) including both attention
/// products; elementwise work is left out, so GFLOP/s here is comparable to the GEMM rows.
pub fn dit_forward_flops(cfg: &dit::Config, batch: usize, tokens: usize, text: usize) -> f64 {
    let d = cfg.dim() as f64;
    let (l, lt, b) = (tokens as f64, text as f64, batch as f64);
    let patch = (cfg.in_channels * cfg.patch_size.iter().product::<usize>()) as f64;
    let out = (cfg.out_channels * cfg.patch_size.iter().product::<usize>()) as f64;
    let per_block = l * 4.0 * d * d // self-attention q, k, v, out
        + 2.0 * l * l * d // q·kᵀ and p·v
        + l * 2.0 * d * d + lt * 2.0 * d * d // cross-attention q, out; k, v on the text
        + 2.0 * l * lt * d
        + l * 2.0 * d * cfg.ffn_dim as f64; // MLP
    let edges = l * patch * d + l * d * out + lt * (cfg.text_dim as f64 * d + d * d);
    2.0 * b * (cfg.num_layers as f64 * per_block + edges)
}

/// Uniform `±1/√fan_in` for matrices (PyTorch's default init), `1 ± 0.1` for norm gains and
/// `±0.1` for biases and modulation tables, from a seed: a fresh DiT has zero gates and a zero
/// head, which would make the parity check vacuous.
fn randomise(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims();
        let (centre, half) = if name.contains("scale_shift_table") || dims.len() < 2 {
            let centre = if name.contains("norm") && name.ends_with("weight") {
                1.0
            } else {
                0.0
            };
            (centre, 0.1)
        } else {
            let fan_in: usize = dims[1..].iter().product();
            (0.0, 1.0 / (fan_in as f32).sqrt())
        };
        let v: Vec<f32> = (0..var.elem_count())
            .map(|_| centre + rng.random_range(-half..half))
            .collect();
        var.set(&Tensor::from_vec(v, dims, &Device::Cpu)?)?;
    }
    Ok(())
}

fn uniform(rng: &mut impl Rng, shape: &[usize], half: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-half..half)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// Writes through a temporary name, so a reader never sees half a file.
fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    varmap.save(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn save_json(value: &impl serde::Serialize, path: &Path) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(value)?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The measured fp32 GEMM peak of this run: the fastest of a few square products (a peak is the
/// best the machine did, so the minimum time, not the median: other load only slows it). The
/// target "DiT forward ≥ 60 % of GEMM peak" is judged against this, not the theoretical peak.
pub fn measured_gemm_peak(runs: usize) -> Result<f64> {
    let mut best = 0f64;
    for n in [512usize, 1024] {
        let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
        a.matmul(&b)?; // warm-up
        for _ in 0..runs.max(3) {
            let start = std::time::Instant::now();
            a.matmul(&b)?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            best = best.max(2.0 * (n * n * n) as f64 / (ms * 1e6));
        }
    }
    Ok(best)
}

/// DiT forward (a loaded checkpoint, no gradient tracking) and one training step (forward, MSE
/// to a target velocity, backward, AdamW) at the reference config.
pub fn dit(runs: usize, export: &Path) -> Result<Vec<Row>> {
    let dir = export.join("dit");
    std::fs::create_dir_all(&dir)?;
    // Wan's layout, so diffusers' `WanTransformer3DModel` runs the same computation; the pooled
    // text path is one small MLP per sample, nothing a timing would see.
    let cfg = dit::Config {
        pooled_text: false,
        ..dit::Config::tiny()
    };
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let train_model = dit::Dit::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    randomise(&varmap, 8)?;
    let weights = dir.join("weights.safetensors");
    save_varmap(&varmap, &weights)?;
    save_json(&cfg, &dir.join("config.json"))?;
    let model = dit::Dit::load(&cfg, &[&weights], &dev)?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (t, h, w) = DIT_LATENT;
    let latents = uniform(&mut rng, &[DIT_BATCH, cfg.in_channels, t, h, w], 1.7)?;
    let target = uniform(&mut rng, &[DIT_BATCH, cfg.out_channels, t, h, w], 1.7)?;
    let text = uniform(&mut rng, &[DIT_BATCH, DIT_TEXT_TOKENS, cfg.text_dim], 1.7)?;
    let timesteps = Tensor::new(&[700f32, 250.], &dev)?;
    let output = model.forward(&latents, &timesteps, &text, None)?;
    let io: HashMap<String, Tensor> = [
        ("latents", &latents),
        ("timesteps", &timesteps),
        ("text", &text),
        ("target", &target),
        ("output", &output),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    save_tensors(&io, &dir.join("io.safetensors"))?;

    let tokens = t * (h / cfg.patch_size[1]) * (w / cfg.patch_size[2]);
    let flops = dit_forward_flops(&cfg, DIT_BATCH, tokens, DIT_TEXT_TOKENS);
    let peak = measured_gemm_peak(runs)?;
    let fwd_ms = median_ms(runs, || {
        model.forward(&latents, &timesteps, &text, None)?;
        Ok(())
    })?;

    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW::default())?;
    let step_ms = median_ms(runs, || {
        let out = train_model.forward(&latents, &timesteps, &text, None)?;
        let loss = (out - &target)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
        Ok(())
    })?;

    let config = format!(
        "dim {}, depth {}, {} heads, ffn {}, B {DIT_BATCH}, L {tokens}, text {DIT_TEXT_TOKENS}",
        cfg.dim(),
        cfg.num_layers,
        cfg.num_attention_heads,
        cfg.ffn_dim
    );
    let gflops = |ms: f64, f: f64| f / (ms * 1e6);
    Ok(vec![
        Row {
            suite: "dit",
            name: "dit forward".into(),
            median_ms: fwd_ms,
            throughput: gflops(fwd_ms, flops),
            unit: "GFLOP/s",
            note: format!(
                "{config}; {:.0}% of measured GEMM peak {peak:.1} GFLOP/s",
                100.0 * gflops(fwd_ms, flops) / peak
            ),
        },
        Row {
            suite: "dit",
            name: "dit train step".into(),
            median_ms: step_ms,
            // Backward is two matmuls per forward one: 3× the forward's FLOPs.
            throughput: gflops(step_ms, 3.0 * flops),
            unit: "GFLOP/s",
            note: format!("{config}; forward+MSE+backward+AdamW, 3× forward FLOPs"),
        },
    ])
}

/// VAE encode (posterior, whole clip in one pass) and decode (latent back to frames, clamped) of
/// `config` (a preset or a config.json) on 33-frame clips; `big_runs` repeats the 256×256 clip (0 skips it).
pub fn vae(runs: usize, config: &str, export: &Path, big_runs: usize) -> Result<Vec<Row>> {
    let cfg = vae::Config::preset_or_file(config)?;
    let dir = export.join("vae");
    std::fs::create_dir_all(&dir)?;
    let dev = Device::Cpu;
    let varmap = vae::init_varmap(&cfg, 7, &dev)?;
    let weights = dir.join("weights.safetensors");
    save_varmap(&varmap, &weights)?;
    save_json(&cfg, &dir.join("config.json"))?;
    let model = vae::AutoencoderKLWan::load(&cfg, &[&weights], DType::F32, &dev)?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let mut rows = Vec::new();
    for (f, h, w) in VAE_CLIPS {
        // The big clip takes seconds per pass: fewer repeats keep the suite usable, none skips it.
        let runs = if h * w > 128 * 128 { big_runs } else { runs };
        if runs == 0 {
            continue;
        }
        let clip = uniform(&mut rng, &[1, 3, f, h, w], 1.0)?;
        let mean = model.encode(&clip)?.mean;
        let decoded = model.decode(&mean)?;
        let io: HashMap<String, Tensor> =
            [("input", &clip), ("mean", &mean), ("decoded", &decoded)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
        save_tensors(&io, &dir.join(format!("io_{f}x{h}x{w}.safetensors")))?;
        let enc_ms = median_ms(runs, || {
            model.encode(&clip)?;
            Ok(())
        })?;
        let dec_ms = median_ms(runs, || {
            model.decode(&mean)?;
            Ok(())
        })?;
        let lat = mean.dims();
        for (what, ms) in [("encode", enc_ms), ("decode", dec_ms)] {
            rows.push(Row {
                suite: "vae",
                name: format!("vae {what} {f}×{h}×{w}"),
                median_ms: ms,
                throughput: f as f64 * 1e3 / ms,
                unit: "frames/s",
                note: format!(
                    "{config}, base_dim {}, latent {:?}, median of {runs}",
                    cfg.base_dim,
                    &lat[1..]
                ),
            });
        }
    }
    Ok(rows)
}

/// Where the suites write what the peer script needs: `--export DIR`, or a fresh temporary folder
/// (kept alive by the returned guard) when no one will read it.
pub fn export_dir(arg: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match arg {
        Some(p) => {
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            Ok((p, None))
        }
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}
