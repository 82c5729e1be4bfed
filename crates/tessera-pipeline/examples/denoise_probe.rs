//! Per-latent-frame denoising error of a model on cached training latents: noise a clean latent
//! to σ, predict the velocity, recover `x̂0 = x_σ − σ·v` and report the relative error of each
//! latent frame (against predicting zero, the normalised latents' mean).
//!
//! ```text
//! cargo run --release -p tessera-pipeline --example denoise_probe -- MODEL_DIR LATENTS.safetensors [N]
//! ```
//!
//! `CAPTION=other` conditions each latent on another item's caption and `CAPTION=empty` on the
//! empty prompt: if the errors barely change, the model ignores its text. `STILLS=1` probes the
//! cache's one-frame images instead of its clips.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tessera_pipeline::Model;

/// Squared error of `x` on the spatial structure of `x0` (objects, floor: both minus `x0`'s
/// per-frame, per-channel spatial mean, which the backdrop dominates), and that structure's power.
fn structure(x0: &Tensor, x: &Tensor) -> candle_core::Result<(f64, f64)> {
    let m0 = x0.mean_keepdim(4)?.mean_keepdim(3)?;
    let s0 = x0.broadcast_sub(&m0)?;
    let err = (&s0 - x.broadcast_sub(&m0)?)?.sqr()?.mean_all()?;
    Ok((
        err.to_scalar::<f32>()? as f64,
        s0.sqr()?.mean_all()?.to_scalar::<f32>()? as f64,
    ))
}

/// Euler over `schedule` from `x`, conditioned on `caption`, no guidance.
fn euler(
    m: &Model,
    x: Tensor,
    schedule: &tessera_diffusion::Schedule,
    caption: &str,
) -> Result<Tensor, Box<dyn std::error::Error>> {
    let e = m.text.encode(&[caption])?;
    tessera_diffusion::sample(
        tessera_diffusion::SamplerKind::Euler.build(0).as_mut(),
        x,
        schedule,
        None,
        |x, ev| -> Result<Tensor, Box<dyn std::error::Error>> {
            Ok(m.dit
                .forward(x, &ev.frame_timesteps, &e.states, Some(&e.mask))?)
        },
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, cache, ..] = args.as_slice() else {
        return Err("usage: denoise_probe MODEL_DIR LATENTS.safetensors [N]".into());
    };
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let dev = Device::Cpu;
    let m = Model::load(std::path::Path::new(dir), &dev)?;
    let set = tessera_train::latents::read_cache(std::path::Path::new(cache))?;
    // Clips (more than one latent frame) by default, one-frame images with STILLS=1.
    let stills = std::env::var("STILLS").is_ok_and(|v| v == "1");
    let items: Vec<_> = set
        .items
        .iter()
        .filter(|it| it.latent.dim(1).is_ok_and(|t| (t == 1) == stills))
        .collect();
    let items = &items;
    for sigma in [0.1f64, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0] {
        let (mut serr, mut spow) = (0f64, 0f64);
        let (mut oerr, mut opow) = (0f64, 0f64);
        let mut err: Vec<f64> = Vec::new();
        let mut base: Vec<f64> = Vec::new();
        let mut count = 0;
        for (i, item) in items.iter().enumerate() {
            let (x0, caption) = (&item.latent, &item.caption);
            let x0 = x0.unsqueeze(0)?;
            let eps = tessera_diffusion::randn(
                &mut ChaCha8Rng::seed_from_u64(i as u64),
                x0.shape(),
                &dev,
            )?;
            let xt = ((&x0 * (1.0 - sigma))? + (&eps * sigma)?)?;
            let other = match std::env::var("CAPTION").as_deref() {
                Ok("empty") => "",
                Ok("other") => items[(i + 7) % items.len()].caption.as_str(),
                _ => caption.as_str(),
            };
            let e = m.text.encode(&[other])?;
            let t = Tensor::new(&[(sigma * 1000.0) as f32], &dev)?;
            let v = m.dit.forward(&xt, &t, &e.states, Some(&e.mask))?;
            let x0_hat = (&xt - (v * sigma)?)?;
            if sigma > 0.98 && sigma < 1.0 && count < 4 {
                // Position-blind? Spatial spread of x̂0 vs x0's, and the error left after
                // matching only per-channel, per-frame means (what a position-blind model can do).
                let spread = |x: &Tensor| -> candle_core::Result<f32> {
                    let m = x.mean_keepdim(4)?.mean_keepdim(3)?;
                    x.broadcast_sub(&m)?.sqr()?.mean_all()?.to_scalar::<f32>()
                };
                let m0 = x0.mean_keepdim(4)?.mean_keepdim(3)?;
                let mh = x0_hat.mean_keepdim(4)?.mean_keepdim(3)?;
                let mean_err = (&m0 - &mh)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
                let mean_pow = m0.sqr()?.mean_all()?.to_scalar::<f32>()?;
                println!(
                    "  item {i}: spatial spread x̂0 {:.3} vs x0 {:.3}; channel-mean error {:.3} of power {:.3}",
                    spread(&x0_hat)?,
                    spread(&x0)?,
                    mean_err,
                    mean_pow
                );
            }
            let (e, p) = structure(&x0, &x0_hat)?;
            (serr, spow) = (serr + e, spow + p);
            // Objects alone: each side minus its own row means (backdrops are constant along a
            // row: plain, vertical gradient, floor band).
            let o0 = x0.broadcast_sub(&x0.mean_keepdim(4)?)?;
            let oh = x0_hat.broadcast_sub(&x0_hat.mean_keepdim(4)?)?;
            oerr += (&o0 - oh)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
            opow += o0.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
            let frames = x0.dim(2)?;
            err.resize(frames, 0.0);
            base.resize(frames, 0.0);
            for f in 0..frames {
                let a = x0.narrow(2, f, 1)?;
                let d = (&a - x0_hat.narrow(2, f, 1)?)?;
                err[f] += d.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
                base[f] += a.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
            }
            count += 1;
            if count == n {
                break;
            }
        }
        let rel: Vec<String> = err
            .iter()
            .zip(&base)
            .map(|(e, b)| format!("{:.2}", e / b))
            .collect();
        println!(
            "σ {sigma}: x̂0 error / latent power per frame: {}; error / spatial-structure power {:.2}; along rows (objects) {:.2}",
            rel.join(" "),
            serr / spow,
            oerr / opow
        );
    }
    // What the caption can explain at best: latents grouped by their caption's first sentence
    // (the backdrop), per-group mean; residual power over total power.
    let mut groups: std::collections::HashMap<String, Vec<Tensor>> = Default::default();
    for item in items {
        let key = item.caption.split('.').next().unwrap_or("").to_string();
        groups.entry(key).or_default().push(item.latent.clone());
    }
    let (mut resid, mut total) = (0f64, 0f64);
    for xs in groups.values() {
        let mean = (Tensor::stack(xs, 0)?.sum(0)? / xs.len() as f64)?;
        for x in xs {
            resid += (x - &mean)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            total += x.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    println!(
        "{} backdrop groups: residual / total latent power {:.3}",
        groups.len(),
        resid / total
    );
    // DUMP=DIR: the first N cached items decoded, with their cached captions, for
    // `tessera eval videos DIR --captions DIR/captions.jsonl` (are latents and captions paired?).
    if let Ok(dump) = std::env::var("DUMP") {
        let dir = std::path::Path::new(&dump);
        std::fs::create_dir_all(dir.join("videos"))?;
        let mut lines = String::new();
        for (i, item) in items.iter().enumerate().take(n) {
            let (z, caption) = (item.latent.unsqueeze(0)?, &item.caption);
            let video = tessera_models::vae::tensor_to_video(&m.vae.decode_latents(&z)?, 16.0)?;
            let name = format!("videos/{i:04}.mp4");
            tessera_media::write_video(dir.join(&name), &video)?;
            lines += &serde_json::json!({"video": name, "caption": caption}).to_string();
            lines.push('\n');
        }
        std::fs::write(dir.join("captions.jsonl"), lines)?;
    }
    // The sampler's path from a noised real latent (SDEdit, Euler 20 steps, no guidance): the
    // result's structure error next to the one-step x̂0's above. Much worse than one step from
    // the same level means the trajectory, not the single prediction, goes wrong.
    for strength in [0.5f64, 0.7, 0.9] {
        let (mut serr, mut spow) = (0f64, 0f64);
        let schedule = tessera_diffusion::SamplerKind::Euler
            .schedule(20, 1.0)?
            .sdedit(strength)?;
        for (i, item) in items.iter().take(n).enumerate() {
            let x0 = item.latent.unsqueeze(0)?;
            let eps = tessera_diffusion::randn(
                &mut ChaCha8Rng::seed_from_u64(i as u64),
                x0.shape(),
                &dev,
            )?;
            let start = tessera_diffusion::sdedit_start(&x0, &eps, &schedule)?;
            let z = euler(&m, start, &schedule, &item.caption)?;
            let (e, p) = structure(&x0, &z)?;
            (serr, spow) = (serr + e, spow + p);
        }
        println!(
            "sampled from σ {strength}: error / spatial-structure power {:.2}",
            serr / spow
        );
    }
    // Sampling from noise (Euler, 30 steps, no guidance) for the first clips' captions:
    // per-frame standard deviation of the result next to the real latents'.
    let real = items[0].latent.unsqueeze(0)?;
    let schedule = tessera_diffusion::SamplerKind::Euler.schedule(30, 1.0)?;
    let noise = tessera_diffusion::randn(&mut ChaCha8Rng::seed_from_u64(99), real.shape(), &dev)?;
    let z = euler(&m, noise, &schedule, &items[0].caption)?;
    let std = |x: &Tensor| -> candle_core::Result<String> {
        let mut s = Vec::new();
        for f in 0..x.dim(2)? {
            let a = x.narrow(2, f, 1)?;
            let mean = a.mean_all()?.to_scalar::<f32>()?;
            s.push(format!(
                "{:.2}",
                (a.sqr()?.mean_all()?.to_scalar::<f32>()? - mean * mean).sqrt()
            ));
        }
        Ok(s.join(" "))
    };
    println!("per-frame std, sampled: {}", std(&z)?);
    println!("per-frame std, real:    {}", std(&real)?);
    let whole = m.vae.decode_latents(&real)?;
    let zr = m.vae.denormalize_latents(&real)?;
    let mut stream = tessera_models::vae::DecodeStream::new(
        &m.vae,
        Some(tessera_models::vae::Tiling::wan_default()),
    );
    let mut parts = Vec::new();
    for f in 0..zr.dim(2)? {
        parts.push(stream.push(&zr.narrow(2, f, 1)?)?);
    }
    let streamed = Tensor::cat(&parts, 2)?;
    println!(
        "whole {:?} vs streamed {:?}: max |diff| {}",
        whole.dims(),
        streamed.dims(),
        (&whole - &streamed)?.abs()?.max_all()?.to_scalar::<f32>()?
    );
    Ok(())
}
