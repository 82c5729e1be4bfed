use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera_diffusion::MaskProbs;
use tessera_train::dit::{export_dit, train_dit, DitEvent, DitTrainOptions};
use tessera_train::vae::{export_vae_run, train_vae, VaeTrainOptions};
use tessera_train::Flow;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train the causal video VAE (L1 + edge + KL; AdamW, warmup+cosine, EMA; atomic checkpoints).
    Vae(VaeArgs),
    /// Train the diffusion transformer and text encoder on VAE latents (rectified flow).
    Dit(DitArgs),
    /// Write a VAE run's EMA weights (fp16, with measured latent statistics) as MODEL/vae.
    ExportVae {
        /// The `train vae` run folder.
        run: PathBuf,
        /// Model folder; its vae/ is (over)written.
        model: PathBuf,
    },
    /// Write a DiT run's EMA weights (fp16) as the dit/ and text/ parts of a model folder.
    Export {
        /// The `train dit` run folder.
        run: PathBuf,
        /// Model folder to write (`--model` of `generate`); put the VAE in its vae/.
        model: PathBuf,
    },
}

/// Flags both trainers share.
#[derive(Args)]
pub struct Common {
    /// Dataset folder (videos + captions.jsonl); omitted = shapes world generated in memory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset.
    #[arg(long, default_value = "tiny")]
    config: String,
    /// Run folder: log.jsonl, checkpoints/, samples/.
    #[arg(long, short)]
    out: PathBuf,
    /// Total optimizer steps (the preset's when omitted).
    #[arg(long)]
    steps: Option<usize>,
    /// Peak learning rate (the preset's when omitted).
    #[arg(long)]
    lr: Option<f64>,
    /// Continue from the run folder's latest checkpoint on the same curve.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object per step on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VaeArgs {
    #[command(flatten)]
    common: Common,
    /// Start from an exported VAE folder instead of random weights. A folder with fewer
    /// residual blocks per level grows into the preset (a `tiny` export into `--config small`),
    /// its added blocks starting as identities.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Train only the decoder (with --init-from): the latent space, and so any DiT trained on
    /// it, stays exactly as it was while reconstructions improve.
    #[arg(long, requires = "init_from")]
    decoder_only: bool,
    /// Weight of an MSE term next to the L1 loss (0 = off). Steers a decoder that already
    /// draws the backdrop toward the objects: 4 gained 0.45 dB in 400 decoder-only steps where
    /// L1 alone gained nothing (TRAINING.md).
    #[arg(long, default_value_t = 0.0)]
    mse_weight: f64,
    /// Weight of a cycle term (0 = off): the last decoded frames, encoded again as a clip and
    /// decoded, must come back unchanged, as long videos and loops need (TRAINING.md, session 6).
    #[arg(long, default_value_t = 0.0)]
    cycle_weight: f64,
}

#[derive(Args)]
pub struct DitArgs {
    #[command(flatten)]
    common: Common,
    /// Trained VAE folder (config.json + model.safetensors).
    #[arg(long)]
    vae: PathBuf,
    /// Keep training the text encoder with the DiT (default: frozen once aligned; trained
    /// jointly from a random init it collapsed to a caption-independent output).
    #[arg(long)]
    train_text: bool,
    /// Steps that first align the text encoder to the latents (0 = keep its random init).
    #[arg(long)]
    align_steps: Option<usize>,
    /// Grid side of the latent summary the alignment regresses (2 = quadrants; it must divide
    /// the latent size, i.e. frame size / 8). 4 did no better than 2 here (TRAINING.md).
    #[arg(long)]
    align_grid: Option<usize>,
    /// Start the DiT from an exported model folder's dit/ (fine-tuning; fresh optimizer).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// How often each conditioning task is drawn, e.g. `none=0.25,first=0.15,first_k=0.4,
    /// last_k=0.05,first_last=0.1,random=0.05` (kinds not named: 0). Default: 0.4 none,
    /// 0.2 first, 0.1 each of the rest.
    #[arg(long)]
    masks: Option<MaskProbs>,
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {
        TrainCommand::Vae(a) => {
            let c = a.common;
            let mut o = VaeTrainOptions::tiny(c.out);
            o.data = c.data;
            o.config = c.config;
            o.steps = c.steps.unwrap_or(o.steps);
            o.lr = c.lr.unwrap_or(o.lr);
            o.resume = c.resume;
            o.seed = c.seed;
            o.init_from = a.init_from;
            o.train_encoder = !a.decoder_only;
            o.mse_weight = a.mse_weight;
            o.cycle_weight = a.cycle_weight;
            let bar = super::progress(o.steps as u64, "vae", c.json);
            let summary = train_vae(&o, |r| {
                if c.json {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
                bar.set_position(r.step as u64);
                bar.set_message(format!("loss {:.4} psnr {:.1}", r.loss, r.psnr));
                Flow::Continue
            })?;
            bar.finish_and_clear();
            eprintln!(
                "{} steps; checkpoint {}",
                summary.steps_done,
                summary.checkpoint.display()
            );
        }
        TrainCommand::Dit(a) => {
            let c = a.common;
            let mut o = DitTrainOptions::tiny(c.out);
            o.data = c.data;
            o.vae_dir = Some(a.vae);
            o.freeze_text = !a.train_text;
            o.text_align_steps = a.align_steps.unwrap_or(o.text_align_steps);
            o.text_align_grid = a.align_grid.unwrap_or(o.text_align_grid);
            o.init_from = a.init_from;
            o.masks = a.masks.unwrap_or(o.masks);
            o.config = c.config;
            o.steps = c.steps.unwrap_or(o.steps);
            o.lr = c.lr.unwrap_or(o.lr);
            o.resume = c.resume;
            o.seed = c.seed;
            let bar = super::progress(o.steps as u64, "dit", c.json);
            train_dit(&o, |e| {
                match e {
                    DitEvent::Step(r) => {
                        if c.json {
                            println!("{}", serde_json::to_string(r).unwrap_or_default());
                        }
                        bar.set_position(r.step as u64);
                        bar.set_message(format!("loss {:.4}", r.loss));
                    }
                    DitEvent::Encoding { done, total } => {
                        bar.set_message(format!("caching latents {done}/{total}"))
                    }
                    DitEvent::Latents { items, std, .. } => bar.println(format!(
                        "{items} cached latents (std {std:.2}; near 1 means the VAE's statistics fit)"
                    )),
                    DitEvent::Samples {
                        step,
                        paths,
                        pixel_error,
                    } => bar.println(format!(
                        "step {step}: {} sample clips, mean |Δ| {pixel_error:.1} levels",
                        paths.len()
                    )),
                    DitEvent::Aligning { step, steps, loss } => bar.set_message(format!(
                        "aligning the text encoder {step}/{steps}, loss {loss:.4}"
                    )),
                    DitEvent::TextAligned(r) => bar.println(format!(
                        "text encoder aligned to the latents: {} steps, held-out R² {:.2}",
                        r.steps, r.r2
                    )),
                    DitEvent::Checkpoint { .. } => {}
                }
                ControlFlow::Continue(())
            })?;
            bar.finish_and_clear();
        }
        TrainCommand::ExportVae { run, model } => {
            export_vae_run(&run, &model.join("vae"))?;
            eprintln!("wrote {}/vae", model.display());
        }
        TrainCommand::Export { run, model } => {
            export_dit(&run, &model)?;
            eprintln!("wrote {}/dit and {}/text", model.display(), model.display());
        }
    }
    Ok(())
}
