//! Runs the DiT trainer (what `tessera train dit` calls) with every option exposed ([`USAGE`]);
//! `train_dit OUT --export MODEL_DIR` writes the EMA weights as a model folder.
use std::ops::ControlFlow;
use std::path::PathBuf;

use tessera_train::dit::{
    export_dit, parse_lr_scale, train_dit, DitEvent, DitTrainOptions, TimestepDist,
};
use tessera_train::latents::BucketSpec;

// Like `tessera` (tessera-cli): freed tensor pages are reused instead of faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: train_dit OUT [--vae DIR] [--config NAME|FILE.json] [--steps N] \
[--lr X] [--warmup N] [--size PX] [--frames N] [--clips N] [--images N] [--batch N] [--minutes M] [--checkpoint-every N] [--timestep-shift S] [--logit-normal] \
[--align-steps N] [--align-grid G] [--init-from MODEL_DIR [--realign-text]] \
[--masks none=W,first=W,first_k=W,…] \
[--train-text [--text-lr-scale X]] [--lr-scale PREFIX=X]… [--object-weight X] [--text-layers N] [--dropout P] [--sample-every N] \
[--cache FILE] [--resume] | train_dit OUT --export MODEL_DIR";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_models::kernels::prefer_rayon_over_candle_pool();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--help` (or any flag) first is a request for usage, not a run folder named after it.
    let out = match args.first() {
        Some(a) if !a.starts_with('-') => PathBuf::from(a),
        _ => return Err(USAGE.into()),
    };
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dir) = get("--export") {
        export_dit(&out, &PathBuf::from(dir))?;
        return Ok(());
    }
    let mut opts = DitTrainOptions::tiny(out);
    opts.vae_dir = get("--vae").map(PathBuf::from);
    opts.resume = args.iter().any(|a| a == "--resume");
    if let Some(v) = get("--steps") {
        opts.steps = v.parse()?;
    }
    if let Some(v) = get("--batch") {
        opts.batch = v.parse()?;
    }
    if let Some(v) = get("--config") {
        opts.config = v;
    }
    if let Some(v) = get("--lr") {
        opts.lr = v.parse()?;
    }
    if let Some(v) = get("--sample-every") {
        opts.sample_every = v.parse()?;
    }
    if let Some(v) = get("--cache") {
        opts.latent_cache = Some(PathBuf::from(v));
    }
    if let Some(v) = get("--size") {
        opts.size = v.parse()?;
    }
    if let Some(v) = get("--warmup") {
        opts.warmup = v.parse()?;
    }
    if let Some(v) = get("--text-layers") {
        opts.text_layers = v.parse()?;
    }
    if let Some(v) = get("--checkpoint-every") {
        opts.checkpoint_every = v.parse()?;
    }
    // Wall-clock budget: checkpoint and stop cleanly once it is spent.
    let deadline = get("--minutes")
        .map(|v| v.parse::<f64>())
        .transpose()?
        .map(|m| std::time::Instant::now() + std::time::Duration::from_secs_f64(m * 60.0));
    // Noise levels: shifted uniform (the recipe) or `--logit-normal` (SD3's, which rarely
    // draws σ ≈ 1); `--timestep-shift` sets either's shift.
    if args.iter().any(|a| a == "--logit-normal") {
        opts.timesteps = TimestepDist::LogitNormal {
            mean: 0.0,
            std: 1.0,
            shift: 1.0,
        };
    }
    if let Some(v) = get("--timestep-shift") {
        let s = v.parse()?;
        match &mut opts.timesteps {
            TimestepDist::LogitNormal { shift, .. } | TimestepDist::ShiftedUniform { shift } => {
                *shift = s
            }
        }
    }
    // Train the text encoder with the DiT instead of keeping it at its seeded init.
    if args.iter().any(|a| a == "--train-text") {
        opts.freeze_text = false;
    }
    if let Some(v) = get("--text-lr-scale") {
        opts.text_lr_scale = v.parse()?;
    }
    for (i, _) in args.iter().enumerate().filter(|(_, a)| *a == "--lr-scale") {
        let v = args.get(i + 1).ok_or("--lr-scale needs PREFIX=X")?;
        opts.lr_scales.push(parse_lr_scale(v)?);
    }
    if let Some(v) = get("--object-weight") {
        opts.object_weight = v.parse()?;
    }
    if let Some(v) = get("--align-steps") {
        opts.text_align_steps = v.parse()?;
    }
    if let Some(v) = get("--align-grid") {
        opts.text_align_grid = v.parse()?;
    }
    opts.init_from = get("--init-from").map(PathBuf::from);
    opts.realign_text = args.iter().any(|a| a == "--realign-text");
    if let Some(v) = get("--masks") {
        opts.masks = v.parse()?;
    }
    if let Some(v) = get("--dropout") {
        opts.caption_dropout = v.parse()?;
    }
    let frames: usize = get("--frames")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(33);
    let clips: usize = get("--clips")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1024);
    let images: usize = get("--images")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1024);
    opts.buckets = vec![BucketSpec {
        frames,
        count: clips,
    }];
    if images > 0 {
        opts.buckets.push(BucketSpec {
            frames: 1,
            count: images,
        });
    }
    let summary = train_dit(&opts, |e| {
        match e {
            DitEvent::Encoding { done, total } if done % 64 == 0 || done == total => {
                eprintln!("encoding latents {done}/{total}")
            }
            DitEvent::Latents {
                path,
                items,
                buckets,
                mean,
                std,
            } => eprintln!(
                "{items} latents {buckets:?} from {}: mean {mean:.3} std {std:.3}",
                path.display()
            ),
            DitEvent::Step(r) if r.step % 10 == 0 || r.step == r.steps => eprintln!(
                "step {}/{} loss {:.4} lr {:.2e} gnorm {:.3} T'={} {:.2} it/s eta {:.0} s",
                r.step, r.steps, r.loss, r.lr, r.grad_norm, r.latent_frames, r.it_per_s, r.eta_s
            ),
            DitEvent::Aligning { step, steps, loss } if step % 25 == 0 => {
                eprintln!("aligning text {step}/{steps} loss {loss:.4}")
            }
            DitEvent::TextAligned(r) => eprintln!(
                "text aligned: {} steps, loss {:.4}, held-out R² {:.3}",
                r.steps, r.final_loss, r.r2
            ),
            DitEvent::Samples {
                step,
                paths,
                pixel_error,
            } => {
                eprintln!(
                    "samples at {step}: {paths:?} (mean |Δ| vs held-out clip {pixel_error:.1})"
                )
            }
            DitEvent::Checkpoint { step, path } => {
                eprintln!("checkpoint {step}: {}", path.display())
            }
            _ => {}
        }
        match deadline {
            Some(d) if std::time::Instant::now() >= d => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    })?;
    eprintln!(
        "done: step {} in {:.0} s, last {:?}",
        summary.step, summary.wall_s, summary.last
    );
    Ok(())
}
