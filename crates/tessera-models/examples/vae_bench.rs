//! VAE streaming memory and training-step speed (encode/decode timings live in tessera-bench).
//!
//! ```text
//! cargo run --release -p tessera-models --example vae_bench -- stream FRAMES [SIZE [CONFIG]]
//! cargo run --release -p tessera-models --example vae_bench -- train FRAMES [SIZE [CONFIG]]
//! ```
//! CONFIG is a preset name (`tiny` by default; see `vae::PRESETS`) or a diffusers-style
//! `config.json`.
//! `stream` decodes a random latent for `FRAMES` frames one latent frame at a time through
//! [`DecodeStream`], dropping each chunk as a file writer would, and prints the process's peak
//! RSS: run it for 33, 129 and 257 frames to see that memory stays flat.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tessera_models::vae::{init_varmap, AutoencoderKLWan, Config, DecodeStream};

/// Peak resident set size in MiB (Linux `VmHWM`), 0 elsewhere.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("stream");
    let frames: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(33);
    let size: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(64);
    let dev = Device::Cpu;
    let name = args.get(3).map(String::as_str).unwrap_or("tiny");
    let cfg = Config::preset_or_file(name)?;
    cfg.check_video_dims(&[1, 3, frames, size, size])?;
    let vm = init_varmap(&cfg, 0, &dev)?;
    let vae = AutoencoderKLWan::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    match mode {
        "stream" => {
            // Inference weights are plain tensors (as loaded from a file): no autograd graph.
            let plain = vm
                .data()
                .lock()
                .map_err(|_| "varmap poisoned")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect();
            let vae =
                AutoencoderKLWan::new(&cfg, VarBuilder::from_tensors(plain, DType::F32, &dev))?;
            let lat = cfg.latent_frames(frames);
            let s = size / cfg.spatial_factor();
            let z = Tensor::randn(0f32, 1.0, (1, cfg.z_dim, lat, s, s), &dev)?;
            let base = peak_rss_mib();
            let t = Instant::now();
            let mut stream = DecodeStream::new(&vae, None);
            let mut out_frames = 0;
            for i in 0..lat {
                out_frames += stream.push(&z.narrow(2, i, 1)?)?.dim(2)?;
            }
            let out_mib = (out_frames * 3 * size * size * 4) as f64 / (1 << 20) as f64;
            println!(
                "stream decode {out_frames} frames {size}x{size}: {:.2}s, peak RSS {:.1} MiB \
                 (before decode {base:.1} MiB; the whole f32 output would be {out_mib:.1} MiB)",
                t.elapsed().as_secs_f64(),
                peak_rss_mib()
            );
        }
        "train" => {
            let x = Tensor::randn(0f32, 0.5, (1, 3, frames, size, size), &dev)?;
            let t = Instant::now();
            let p = vae.encode(&x)?;
            let y = vae.decode_unclamped(&p.mean)?;
            let loss = (y - &x)?.abs()?.mean_all()?;
            let fwd = t.elapsed().as_secs_f64();
            let grads = loss.backward()?;
            let reached = vm
                .all_vars()
                .iter()
                .filter(|v| grads.get(v).is_some())
                .count();
            println!(
                "train step {frames}x{size}x{size}: forward {fwd:.3}s, forward+backward {:.3}s \
                 (gradients reach {reached}/{} parameters)",
                t.elapsed().as_secs_f64(),
                vm.all_vars().len()
            );
        }
        other => return Err(format!("unknown mode `{other}`; use stream or train").into()),
    }
    Ok(())
}
