//! Runs the VAE trainer (what `tessera train vae` calls) and exports the EMA weights.
//!
//! ```text
//! train_vae train OUT_DIR STEPS [--resume] [--crop N|--no-crop] [--lr X] [--seed N]
//!     [--frames-per-step N] [--clip-lengths 1,5,9,17,33] [--warmup N] [--eval-every N]
//!     [--init-from MODEL_DIR] [--decoder-only] [--data DIR] [--mse-weight X]
//!     [--cycle-weight X] [--ssim-weight X] [--latent-noise X] [--object-weight X]
//!     [--config tiny|small|tiny-residual|tiny-patch|FILE.json]
//! train_vae eval  OUT_DIR [CLIPS]          # val PSNR/SSIM of the latest checkpoint's EMA
//! train_vae export OUT_DIR MODEL_DIR       # fp16 diffusers-style folder + latent statistics
//! ```

use std::path::PathBuf;

use candle_core::Device;
use tessera_train::data::WorldSource;
use tessera_train::vae::{
    config_by_name, ema_model, eval_vae, export_vae_run, train_vae, VaeTrainOptions,
};
use tessera_train::{checkpoint, TrainError};

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

// Like `tessera` (tessera-cli): freed tensor pages are reused instead of faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_models::kernels::prefer_rayon_over_candle_pool();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    let out = PathBuf::from(
        args.get(1)
            .ok_or("usage: train_vae train|eval|export OUT_DIR …")?,
    );
    match cmd {
        "train" => {
            let mut o = VaeTrainOptions::tiny(out);
            o.steps = args.get(2).ok_or("STEPS missing")?.parse()?;
            o.resume = args.iter().any(|a| a == "--resume");
            if let Some(c) = arg_after(&args, "--crop") {
                o.crop = Some(c.parse()?);
            }
            if args.iter().any(|a| a == "--no-crop") {
                o.crop = None;
            }
            if let Some(v) = arg_after(&args, "--lr") {
                o.lr = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--frames-per-step") {
                o.frames_per_step = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--eval-every") {
                o.eval_every = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--clip-lengths") {
                o.clip_lengths = v.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            if let Some(v) = arg_after(&args, "--data") {
                o.data = Some(PathBuf::from(v));
            }
            if let Some(v) = arg_after(&args, "--config") {
                o.config = v;
            }
            if let Some(v) = arg_after(&args, "--init-from") {
                o.init_from = Some(PathBuf::from(v));
            }
            o.train_encoder = !args.iter().any(|a| a == "--decoder-only");
            if let Some(v) = arg_after(&args, "--mse-weight") {
                o.mse_weight = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--cycle-weight") {
                o.cycle_weight = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--ssim-weight") {
                o.ssim_weight = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--latent-noise") {
                o.latent_noise = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--object-weight") {
                o.object_weight = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--warmup") {
                o.warmup = v.parse()?;
            }
            if let Some(v) = arg_after(&args, "--seed") {
                o.seed = v.parse()?;
            }
            let s = train_vae(&o, |r| {
                eprintln!(
                    "step {:>6} loss {:.4} l1 {:.4} psnr {:5.2} lr {:.2e} |g| {:.3} {:>2}f {:.2} it/s{}",
                    r.step,
                    r.loss,
                    r.l1,
                    r.psnr,
                    r.lr,
                    r.grad_norm,
                    r.frames,
                    r.it_per_s,
                    match (r.val_psnr, r.val_ssim) {
                        (Some(p), Some(s)) => format!("  VAL psnr {p:.2} ssim {s:.4}"),
                        _ => String::new(),
                    }
                );
                tessera_train::Flow::Continue
            })?;
            println!(
                "done {} steps, checkpoint {}",
                s.steps_done,
                s.checkpoint.display()
            );
        }
        "eval" | "export" => {
            let ck = checkpoint::latest(&out.join("checkpoints"))?
                .ok_or_else(|| TrainError::NoCheckpoint(out.clone()))?;
            let meta = checkpoint::load_meta(&ck)?;
            let opts: VaeTrainOptions = serde_json::from_value(meta["options"].clone())?;
            let cfg = config_by_name(&opts.config)?;
            let ema = checkpoint::load_tensors(&ck, "ema")?;
            if cmd == "eval" {
                let n: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(16);
                let w = WorldSource::new(opts.size, 0, tessera_world::Split::Val);
                let clips = (0..n)
                    .map(|i| w.clip(i, 33))
                    .collect::<Result<Vec<_>, _>>()?;
                let vae = ema_model(&cfg, &ema, &Device::Cpu)?;
                let (p, s) = eval_vae(&vae, &clips)?;
                println!(
                    "{}: val {} clips x 33 frames {}x{}: PSNR {p:.2} dB, SSIM {s:.4}",
                    ck.display(),
                    n,
                    opts.size,
                    opts.size
                );
            } else {
                let dir = PathBuf::from(args.get(2).ok_or("MODEL_DIR missing")?);
                let c = export_vae_run(&out, &dir)?;
                println!(
                    "exported {} (latents_mean {:?}, latents_std {:?})",
                    dir.display(),
                    c.latents_mean,
                    c.latents_std
                );
            }
        }
        other => {
            return Err(format!("unknown command `{other}`; use train, eval or export").into())
        }
    }
    Ok(())
}
