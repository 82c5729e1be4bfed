use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use tessera_diffusion::MaskProbs;
use tessera_models::device::DeviceSpec;
use tessera_pipeline::Model;
use tessera_train::dit::{
    export_dit, export_dit_checkpoint, parse_lr_scale, train_dit, DitEvent, DitTrainOptions,
    TimestepDist,
};
use tessera_train::vae::{export_vae_run, train_vae, VaeTrainOptions};
use tessera_train::Flow;

use super::eval::{eval_model, Prompted};
use super::world::SceneArgs;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train the causal video VAE (L1 + edge + KL; AdamW, warmup+cosine, EMA; atomic checkpoints).
    Vae(VaeArgs),
    /// Train the diffusion transformer and text encoder on VAE latents (rectified flow).
    Dit(Box<DitArgs>),
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
    /// Model preset (VAE: tiny, small, tiny-residual, tiny-patch, wan2.1; DiT: tiny, micro,
    /// wan2.1-1.3b, whose latent channels follow --vae) or a config.json file in the model's own
    /// format.
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
    /// Where the model trains: cpu, or cuda / cuda:N in a CUDA build (README, "GPU"). A run may
    /// resume on another device.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
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
    /// Weight of a `1 − SSIM` term on the luma (0 = off): the structure (checker floors, thin
    /// rings) that MSE blurs away and that the SSIM target scores.
    #[arg(long, default_value_t = 0.0)]
    ssim_weight: f64,
    /// Noise on the latent before decoding (0 = off): per clip up to this many of each
    /// channel's standard deviations. With --decoder-only, a decoder for a DiT's near-miss
    /// latents: 0.5 kept the clean PSNR and made the shipped DiT's clips flicker less
    /// (TRAINING.md, session 14).
    #[arg(long, default_value_t = 0.0)]
    latent_noise: f64,
    /// Pixels in and around the objects' boxes count 1 + this many times in the L1 and MSE
    /// terms (0 = off; shapes world only): small objects otherwise hardly move the loss and
    /// come out blurred past their shape (TRAINING.md, session 16).
    #[arg(long, default_value_t = 0.0)]
    object_weight: f64,
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
    /// With --train-text: the encoder's learning rate as a fraction of --lr (0–1). From a
    /// model the DiT already reads (--init-from), a slow encoder adapts without drifting.
    #[arg(long, requires = "train_text")]
    text_lr_scale: Option<f64>,
    /// Learning-rate multiplier of every parameter whose name starts with PREFIX, e.g.
    /// `dit.pos_embedder.=30` (repeatable): a part grafted on at zero by --init-from is
    /// otherwise taken up too slowly to matter within a run (TRAINING.md, session 12).
    #[arg(long, value_name = "PREFIX=X", value_parser = parse_lr_scale)]
    lr_scale: Vec<(String, f64)>,
    /// Weight the loss toward latent positions that stand out of their frame (0 = plain MSE;
    /// 4 makes an object's position count several times a plain backdrop's): small objects
    /// otherwise hardly move the loss. Alone it made a DiT draw more objects, not ones that
    /// follow the caption; with --train-text the colour words began to move the video
    /// (TRAINING.md, session 14).
    #[arg(long, default_value_t = 0.0)]
    object_weight: f64,
    /// Also train on every world clip's left-right mirror, its caption's sides swapped ("moves
    /// left" ↔ "moves right"): pairs that differ only in those words, so the model must read
    /// them. Encodes a second latent cache; world data only (TRAINING.md, session 16).
    #[arg(long)]
    mirror: bool,
    /// World scenes only of a kind, rendered in memory: `--objects 1 --mirror` trains
    /// one-object scenes with their mirrors, no folder and no MP4 round trip (TRAINING.md,
    /// sessions 32–33). World data only.
    #[command(flatten)]
    scenes: SceneArgs,
    /// Steps that first align the text encoder to the latents (0 = keep its random init).
    #[arg(long)]
    align_steps: Option<usize>,
    /// Grid side of the latent summary the alignment regresses (2 = quadrants; it must divide
    /// the latent size, i.e. frame size / 8). 4 did no better than 2 here (TRAINING.md).
    #[arg(long)]
    align_grid: Option<usize>,
    /// Start from an exported model folder (fine-tuning; fresh optimizer): its dit/ weights
    /// and its text/ encoder and vocabulary, which the DiT learned to read.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// With --init-from: align a new text encoder to this run's latents instead of taking the
    /// folder's (e.g. after changing the VAE; the DiT then relearns how to read it).
    #[arg(long, requires = "init_from")]
    realign_text: bool,
    /// How often each conditioning task is drawn, e.g. `none=0.25,first=0.15,first_k=0.4,
    /// last_k=0.05,first_last=0.1,random=0.05` (kinds not named: 0). Default: 0.4 none,
    /// 0.2 first, 0.1 each of the rest.
    #[arg(long)]
    masks: Option<MaskProbs>,
    /// Noise levels trained on: `uniform[:SHIFT]` (Wan's; the default, shift 3, leans toward
    /// high noise, where the layout is decided) or `logit-normal[:MEAN,STD[,SHIFT]]` (SD3's;
    /// 0,1 spends the steps on the middle levels).
    #[arg(long, value_parser = TimestepDist::parse)]
    timesteps: Option<TimestepDist>,
    /// Noise levels of the items given a frame (image→video, extend, loop, connect), in
    /// --timesteps' form [default: --timesteps]. Where the noisy frames still show the motion
    /// a model copies it from them; `uniform:20` trains image→video where only the caption
    /// can say which way things move (TRAINING.md, sessions 29–30).
    #[arg(long, value_parser = TimestepDist::parse)]
    conditioned_timesteps: Option<TimestepDist>,
    /// Every N steps (a multiple of the checkpoint interval, 250), export the checkpoint's EMA
    /// weights with the VAE, generate from `--select-prompts` held-out captions and score prompt
    /// following above chance (`tessera eval`'s object count, colour, shape and direction,
    /// each minus its chance level, averaged); the best so far is kept as RUN/best, a model
    /// folder, and every score (raw, chance, position, FVD-style) goes to RUN/select.jsonl.
    /// Later steps are not always better (TRAINING.md, session 8). 0 = off.
    #[arg(long, default_value_t = 0)]
    select_every: usize,
    /// Held-out prompts per selection (`tessera eval --count`; ~3 s each with the default
    /// model). 16 were too few: they ranked session 10's checkpoints opposite to 48
    /// (TRAINING.md).
    #[arg(long, default_value_t = 48)]
    select_prompts: usize,
    /// Clips in the training set (shapes world: how many are generated; --data: at most this
    /// many videos) [default: the preset's, 1024 of 33 frames].
    #[arg(long)]
    clips: Option<usize>,
    /// Clips (or images) per step [default: the preset's, 8]. A bigger batch averages away
    /// more gradient noise, where the caption's weak signal at high noise levels hides.
    #[arg(long)]
    batch: Option<usize>,
    /// One-frame images in the training set [default: the preset's, 1024]. An image step costs
    /// about a quarter of a clip step and teaches appearance (colour, shape, place) alone.
    #[arg(long)]
    images: Option<usize>,
    /// Folder of the encoded-latent cache [default: RUN/latents]. Runs on the same data and
    /// VAE can share one (the file is named by a hash of both), so a second run starts
    /// training at once instead of encoding every clip again.
    #[arg(long)]
    latent_cache: Option<PathBuf>,
}

impl DitArgs {
    /// The trainer's options these flags describe (the preset's for every flag left out).
    fn options(&self) -> DitTrainOptions {
        let (a, c) = (self, &self.common);
        let mut o = DitTrainOptions::tiny(c.out.clone());
        o.data = c.data.clone();
        o.vae_dir = Some(a.vae.clone());
        o.latent_cache = a.latent_cache.clone();
        o.freeze_text = !a.train_text;
        o.text_lr_scale = a.text_lr_scale.unwrap_or(o.text_lr_scale);
        o.lr_scales = a.lr_scale.clone();
        o.object_weight = a.object_weight;
        o.mirror = a.mirror;
        o.objects = a.scenes.objects();
        o.heading = a.scenes.heading;
        o.text_align_steps = a.align_steps.unwrap_or(o.text_align_steps);
        o.text_align_grid = a.align_grid.unwrap_or(o.text_align_grid);
        o.init_from = a.init_from.clone();
        o.realign_text = a.realign_text;
        o.masks = a.masks.unwrap_or(o.masks);
        o.timesteps = a.timesteps.unwrap_or(o.timesteps);
        o.conditioned_timesteps = a.conditioned_timesteps.or(o.conditioned_timesteps);
        o.batch = a.batch.unwrap_or(o.batch);
        for b in &mut o.buckets {
            if let Some(n) = if b.frames == 1 { a.images } else { a.clips } {
                b.count = n;
            }
        }
        o.buckets.retain(|b| b.count > 0);
        o.config = c.config.clone();
        o.steps = c.steps.unwrap_or(o.steps);
        o.lr = c.lr.unwrap_or(o.lr);
        o.resume = c.resume;
        o.seed = c.seed;
        o.device = c.device;
        o
    }
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
            o.device = c.device;
            o.init_from = a.init_from;
            o.train_encoder = !a.decoder_only;
            o.mse_weight = a.mse_weight;
            o.cycle_weight = a.cycle_weight;
            o.ssim_weight = a.ssim_weight;
            o.latent_noise = a.latent_noise;
            o.object_weight = a.object_weight;
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
            let o = a.options();
            let json = a.common.json;
            let mut select = match a.select_every {
                0 => None,
                n if n % o.checkpoint_every != 0 => bail!(
                    "--select-every {n} must be a multiple of the checkpoint interval {}",
                    o.checkpoint_every
                ),
                n => Some(Selector::new(
                    &o.out,
                    o.vae_dir.clone().unwrap_or_default(),
                    n,
                    a.select_prompts,
                    o.resume,
                    o.device,
                )?),
            };
            let mut select_error = None;
            let bar = super::progress(o.steps as u64, "dit", json);
            train_dit(&o, |e| {
                match e {
                    DitEvent::Step(r) => {
                        if json {
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
                    DitEvent::LongCaptions {
                        long,
                        of,
                        kept_words,
                    } => bar.println(format!(
                        "{long} of {of} captions are longer than the text encoder's \
                         {kept_words} words; training reads their beginnings"
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
                    DitEvent::Checkpoint { step, path } => {
                        if let Some(sel) = select.as_mut().filter(|s| step % s.every == 0) {
                            bar.set_message(format!("step {step}: scoring"));
                            match sel.consider(*step, path) {
                                Ok(line) => bar.println(line),
                                Err(e) => {
                                    select_error = Some(e);
                                    return ControlFlow::Break(());
                                }
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            })?;
            bar.finish_and_clear();
            if let Some(e) = select_error {
                return Err(e.context("checkpoint selection failed; the run's checkpoints are kept, resume with --resume"));
            }
            if let Some((step, score)) = select.and_then(|s| s.best) {
                eprintln!(
                    "best checkpoint: step {step} (prompt following above chance {score:.3}) in {}",
                    o.out.join("best").display()
                );
            }
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

/// Checkpoint selection by prompt following (`train dit --select-every`).
struct Selector {
    run: PathBuf,
    vae: PathBuf,
    every: usize,
    prompts: usize,
    /// Step and score of RUN/best.
    best: Option<(usize, f64)>,
    device: Device,
}

impl Selector {
    /// On resume the best so far is read back from RUN/select.jsonl.
    fn new(
        run: &Path,
        vae: PathBuf,
        every: usize,
        prompts: usize,
        resume: bool,
        device: DeviceSpec,
    ) -> Result<Self> {
        let mut best = None;
        let log = run.join("select.jsonl");
        if resume && log.exists() {
            for line in std::fs::read_to_string(&log)?.lines() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("{}: bad line `{line}`", log.display()))?;
                // The lift when the line has one (runs before it: the raw score).
                let score = v["lift"].as_f64().or(v["score"].as_f64());
                if let (Some(step), Some(score)) = (v["step"].as_u64(), score) {
                    if best.is_none_or(|(_, b)| score > b) {
                        best = Some((step as usize, score));
                    }
                }
            }
        }
        Ok(Self {
            run: run.to_path_buf(),
            vae,
            every,
            prompts,
            best,
            device: device.open()?,
        })
    }

    /// Exports and scores the checkpoint `ck` of `step`; a new best replaces RUN/best.
    fn consider(&mut self, step: usize, ck: &Path) -> Result<String> {
        let dir = self.run.join("select").join(format!("step-{step:08}"));
        let model_dir = dir.join("model");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        export_dit_checkpoint(ck, &model_dir)?;
        std::fs::create_dir_all(model_dir.join("vae"))?;
        for entry in std::fs::read_dir(&self.vae)? {
            let from = entry?.path();
            if from.is_file() {
                let name = from.file_name().context("VAE file without a name")?;
                std::fs::copy(&from, model_dir.join("vae").join(name))?;
            }
        }
        let model = Model::load(&model_dir, &self.device)?;
        let settings = Prompted::held_out(self.prompts, &model);
        let (report, _) = eval_model(&model, &settings, &dir.join("eval"), false, &mut || {})?;
        // Above chance where the report has a chance level (two or more distinct prompts): a
        // checkpoint that draws more objects matches more colours by chance alone (session 14).
        let raw = report.prompt_following().unwrap_or(0.0);
        let lift = report.prompt_following_lift();
        let score = lift.unwrap_or(raw);
        let mut line =
            serde_json::json!({"step": step, "score": raw, "lift": lift, "fvd": report.fvd});
        for m in ["object_count", "colour", "shape", "direction", "position"] {
            line[m] = report.mean(m).into();
            line[format!("{m}_chance")] = report
                .summary
                .iter()
                .find(|s| s.metric == m)
                .and_then(|s| s.chance)
                .into();
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.join("select.jsonl"))?;
        writeln!(log, "{line}")?;
        let better = self.best.is_none_or(|(_, b)| score > b);
        if better {
            // The new best moves next to the old one first: a stop in between loses neither.
            let (best, incoming) = (self.run.join("best"), self.run.join("best.new"));
            if incoming.exists() {
                std::fs::remove_dir_all(&incoming)?;
            }
            std::fs::rename(&model_dir, &incoming)?;
            if best.exists() {
                std::fs::remove_dir_all(&best)?;
            }
            std::fs::rename(&incoming, &best)?;
            self.best = Some((step, score));
        } else {
            std::fs::remove_dir_all(&model_dir)?;
        }
        Ok(format!(
            "step {step}: prompt following {raw:.3}, above chance {}{} (report {})",
            lift.map_or("-".into(), |l| format!("{l:.3}")),
            if better { ", the best so far" } else { "" },
            dir.join("eval").display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tessera_train::latents::BucketSpec;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        train: TrainCommand,
    }

    fn dit_options(flags: &[&str]) -> DitTrainOptions {
        let argv = ["train", "dit", "--vae", "V", "--out", "RUN"];
        match Cli::try_parse_from(argv.iter().chain(flags)).unwrap().train {
            TrainCommand::Dit(a) => a.options(),
            _ => unreachable!("parsed as `train dit`"),
        }
    }

    /// Flags left out keep the preset's values; the ones given reach the trainer, among them
    /// `--latent-cache` (a folder shared by runs), `--images 0` (no one-frame bucket) and
    /// `--conditioned-timesteps` (its own levels for image→video items, `--timesteps` kept) and
    /// `--objects` and `--heading` (one-object world scenes that move, with `--mirror` their
    /// mirrors too).
    #[test]
    fn dit_flags_become_trainer_options() {
        let preset = DitTrainOptions {
            vae_dir: Some("V".into()),
            ..DitTrainOptions::tiny("RUN".into())
        };
        assert_eq!(dit_options(&[]), preset);
        assert_eq!(preset.latent_cache, None);
        let o = dit_options(&[
            "--latent-cache",
            "shared/latents",
            "--images",
            "0",
            "--clips",
            "64",
            "--batch",
            "4",
            "--steps",
            "10",
            "--train-text",
            "--text-lr-scale",
            "0.3",
            "--conditioned-timesteps",
            "uniform:20",
            "--objects",
            "1",
            "--heading",
            "--mirror",
        ]);
        assert_eq!(o.latent_cache, Some(PathBuf::from("shared/latents")));
        assert_eq!(
            o.buckets,
            vec![BucketSpec {
                frames: 33,
                count: 64
            }]
        );
        assert_eq!((o.batch, o.steps), (4, 10));
        assert_eq!((o.objects, o.mirror, preset.objects), (Some(1), true, None));
        assert!(o.heading && !preset.heading);
        assert!(!o.freeze_text && (o.text_lr_scale - 0.3).abs() < 1e-12);
        assert_eq!(
            (o.timesteps, o.conditioned_timesteps),
            (
                preset.timesteps,
                Some(TimestepDist::ShiftedUniform { shift: 20.0 })
            )
        );
    }

    /// Two checkpoints of a micro DiT scored on one prompt (so by the raw score: no chance level
    /// without a second caption): both scores are logged, RUN/best is
    /// the better one's model (the first on a tie) and loads, the other's export is removed,
    /// and a resumed selector reads the best back.
    #[test]
    fn selection_keeps_the_best_checkpoint_as_a_model() {
        let run = tempfile::tempdir().unwrap();
        let vae = Model::default_dir().join("vae");
        let o = DitTrainOptions {
            config: "micro".into(),
            size: 32,
            buckets: vec![BucketSpec {
                frames: 1,
                count: 2,
            }],
            steps: 2,
            batch: 2,
            warmup: 1,
            text_layers: 1,
            text_max_len: 64,
            checkpoint_every: 1,
            sample_every: 0,
            text_align_steps: 0,
            vae_dir: Some(vae.clone()),
            ..DitTrainOptions::tiny(run.path().to_path_buf())
        };
        let mut sel = Selector::new(run.path(), vae.clone(), 1, 1, false, DeviceSpec::Cpu).unwrap();
        let mut lines = Vec::new();
        train_dit(&o, |e| {
            if let DitEvent::Checkpoint { step, path } = e {
                lines.push(sel.consider(*step, path).unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let logged: Vec<serde_json::Value> =
            std::fs::read_to_string(run.path().join("select.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(logged.len(), 2);
        // One prompt has no other caption to be scored against: no lift, the raw score ranks.
        assert!(logged[0]["lift"].is_null() && logged[0]["colour_chance"].is_null());
        let score = |i: usize| logged[i]["score"].as_f64().unwrap();
        let best_step = if score(1) > score(0) { 2 } else { 1 };
        assert_eq!(sel.best.map(|b| b.0), Some(best_step));
        let dit_cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.path().join("best/dit/config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(dit_cfg["_trained_steps"], best_step);
        Model::load(&run.path().join("best"), &Device::Cpu).unwrap();
        let other = 3 - best_step;
        let other_dir = run.path().join(format!("select/step-{other:08}"));
        assert!(!other_dir.join("model").exists());
        assert!(other_dir.join("eval/report.json").exists());
        let settings: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(other_dir.join("eval/settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["count"], 1);
        assert_eq!(settings["sampling"]["cfg"], tessera_pipeline::DEFAULT_CFG);
        assert_eq!(
            settings["sampling"]["cfg_interval"][1],
            tessera_pipeline::DEFAULT_CFG_INTERVAL.1
        );
        let again = Selector::new(run.path(), vae, 1, 1, true, DeviceSpec::Cpu).unwrap();
        assert_eq!(again.best.map(|b| b.0), Some(best_step));
    }
}
