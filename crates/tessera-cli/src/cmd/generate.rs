//! `tessera generate | extend | connect | edit`: flags → a validated `GenerateRequest` → the
//! pipeline. Everything is checked before the model loads; Ctrl-C cancels cleanly (the writer
//! removes its temporary file).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tessera_models::device::DeviceSpec;
use tessera_pipeline::{
    generate, GenerateRequest, Mode, Model, NoHook, Progress, RequestSpec, Sampling, Summary,
};

/// Sampling flags of `generate` and `eval`; each one left out takes the model folder's
/// `sampling.json` value, else the built-in default.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Denoising steps [default: the model's, else 20]
    #[arg(long)]
    steps: Option<usize>,
    /// euler | euler-a (fresh noise each step) | heun | unipc [default: the model's, else unipc]
    #[arg(long)]
    sampler: Option<String>,
    /// Classifier-free guidance scale (1 = no guidance, one forward per step) [default: the
    /// model's, else 5]
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f64>,
    /// Timestep shift of the sampling schedule (> 1 spends more steps at high noise, where the
    /// layout is decided) [default: the model's, else 1]
    #[arg(long, value_parser = positive_shift)]
    shift: Option<f64>,
    /// Noise levels LO,HI (0 = clean, 1 = pure noise) where guidance applies; other steps use
    /// the conditional prediction alone, one forward each [default: the model's, else 0.3,0.9]
    #[arg(long, value_name = "LO,HI", value_parser = tessera_pipeline::parse_cfg_interval)]
    cfg_interval: Option<(f64, f64)>,
    /// Guidance rule: cfg (classifier-free) | apg (adaptive projected: drops the part of the
    /// guidance step along the denoised estimate, which over-saturates at high scales)
    /// [default: the model's, else cfg]
    #[arg(long)]
    guidance: Option<String>,
    /// With --sampler euler-a: the share of each step's noise that is fresh, 0..1 (0 = plain
    /// Euler; 1 = all of it: compact objects, less of the prompt's colour) [default: the
    /// model's, else 1]
    #[arg(long)]
    eta: Option<f64>,
    /// With --sampler euler-a: the noise level (0..1) below which steps take no fresh noise,
    /// plain Euler steps instead (0 = fresh noise to the last step) [default: the model's,
    /// else 0]
    #[arg(long, value_name = "SIGMA")]
    eta_until: Option<f64>,
    /// Text→video through a still: sample the first frame alone as an image, then animate it
    /// (`--image-first false` turns a model's default off) [default: the model's, else false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    image_first: Option<bool>,
}

impl SamplingArgs {
    /// These flags over `s`, a model's defaults.
    pub fn over(&self, mut s: Sampling) -> Sampling {
        if let Some(v) = self.steps {
            s.steps = v;
        }
        if let Some(v) = &self.sampler {
            s.sampler = v.clone();
        }
        if let Some(v) = self.cfg {
            s.cfg = v;
        }
        if let Some(v) = self.shift {
            s.shift = v;
        }
        if let Some(v) = self.cfg_interval {
            s.cfg_interval = v;
        }
        if let Some(v) = &self.guidance {
            s.guidance = v.clone();
        }
        if let Some(v) = self.eta {
            s.eta = v;
        }
        if let Some(v) = self.eta_until {
            s.eta_until = v;
        }
        if let Some(v) = self.image_first {
            s.image_first = v;
        }
        s
    }
}

/// Flags shared by every generating subcommand.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Frame size WIDTHxHEIGHT, each a multiple of 16. Inputs of another size are resized.
    #[arg(long, default_value = "64x64", value_parser = parse_size)]
    size: (u32, u32),
    /// Frames per second.
    #[arg(long, default_value_t = 16.0)]
    fps: f64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Seed: the same seed and inputs give the same video.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What to steer away from (the unconditional side of guidance).
    #[arg(long, default_value = "")]
    negative: String,
    /// Model folder (vae/, dit/, text/); default: $TESSERA_MODEL or the shipped tessera-shapes-tiny.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the model runs: cpu, or cuda / cuda:N in a CUDA build (README, "GPU").
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Use the prompt as written instead of expanding it into the dense caption style.
    #[arg(long)]
    no_extend: bool,
    /// OpenAI-compatible chat endpoint (http://HOST:PORT/v1) that expands the prompt; the
    /// built-in expander is used if it fails.
    #[arg(long)]
    prompt_endpoint: Option<String>,
    #[command(flatten)]
    safety: SafetyArgs,
    /// Print a JSON summary on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// Output file: .mp4, .gif or .png (one frame).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to show, e.g. "a red ball bounces".
    prompt: String,
    /// Frames, 4k+1 (1 = an image).
    #[arg(long, conflicts_with = "seconds")]
    frames: Option<usize>,
    /// Duration; rounded up to 4k+1 frames. Longer than 33 frames runs in windows.
    #[arg(long)]
    seconds: Option<f64>,
    /// First frame of the video (resized and centre-cropped to --size).
    #[arg(long, conflicts_with = "loop_")]
    image: Option<PathBuf>,
    /// Join the end back to the start so the clip plays seamlessly on repeat.
    #[arg(long = "loop")]
    loop_: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["forward", "backward"])))]
pub struct ExtendArgs {
    /// Video to extend.
    input: PathBuf,
    #[arg(long)]
    prompt: String,
    /// Add frames after the end.
    #[arg(long)]
    forward: bool,
    /// Add frames before the start.
    #[arg(long)]
    backward: bool,
    /// Seconds to add (rounded up to whole groups of 4 frames).
    #[arg(long, conflicts_with = "frames")]
    seconds: Option<f64>,
    /// Frames to add, a multiple of 4.
    #[arg(long)]
    frames: Option<usize>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The clip that comes first.
    a: PathBuf,
    /// The clip that comes last.
    b: PathBuf,
    #[arg(long)]
    prompt: String,
    /// Transition frames between them, a multiple of 4 (default 16).
    #[arg(long)]
    frames: Option<usize>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    /// Video to edit.
    input: PathBuf,
    #[arg(long)]
    prompt: String,
    /// How much to change: 0 returns the input exactly, 1 ignores it.
    #[arg(long)]
    strength: f64,
    #[command(flatten)]
    common: Common,
}

fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("size {s:?} must look like 64x64"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("size {s:?} must look like 64x64"))
    };
    Ok((num(w)?, num(h)?))
}

fn spec(
    c: &Common,
    prompt: String,
    frames: Option<usize>,
    seconds: Option<f64>,
    mode: Mode,
) -> Result<RequestSpec> {
    Ok(RequestSpec {
        prompt,
        negative: c.negative.clone(),
        frames,
        seconds,
        width: c.size.0,
        height: c.size.1,
        fps: c.fps,
        // The folder's sampling.json only (a few bytes): flags are checked before weights load.
        sampling: c.sampling.over(Sampling::for_model(&model_dir(c))?),
        seed: c.seed,
        output: c.output.clone(),
        mode,
        extend_prompt: !c.no_extend,
        prompt_endpoint: c.prompt_endpoint.clone(),
        watermark: true,
    })
}

fn model_dir(c: &Common) -> PathBuf {
    c.model.clone().unwrap_or_else(Model::default_dir)
}

pub fn run_generate(a: GenerateArgs) -> Result<()> {
    let mode = match (a.image.clone(), a.loop_) {
        (Some(image), _) => Mode::Image { image },
        (None, true) => Mode::Loop,
        (None, false) => Mode::Text,
    };
    let s = spec(&a.common, a.prompt, a.frames, a.seconds, mode)?;
    execute(&a.common, s)
}

pub fn run_extend(a: ExtendArgs) -> Result<()> {
    let mode = Mode::Extend {
        input: a.input,
        backward: a.backward,
    };
    let s = spec(&a.common, a.prompt, a.frames, a.seconds, mode)?;
    execute(&a.common, s)
}

pub fn run_connect(a: ConnectArgs) -> Result<()> {
    let mode = Mode::Connect { a: a.a, b: a.b };
    let s = spec(&a.common, a.prompt, a.frames, None, mode)?;
    execute(&a.common, s)
}

pub fn run_edit(a: EditArgs) -> Result<()> {
    let mode = Mode::Edit {
        input: a.input,
        strength: a.strength,
    };
    let s = spec(&a.common, a.prompt, None, None, mode)?;
    execute(&a.common, s)
}

/// Validates, loads the model, runs the pipeline with a progress bar (or quietly for `--json`)
/// and reports.
fn execute(c: &Common, spec: RequestSpec) -> Result<()> {
    // Every flag and input check happens here, before the model is touched.
    let mut req = GenerateRequest::new(spec)?;
    req.signing_key = c.safety.key()?;
    req.review = c.safety.review_command.clone();
    let dir = model_dir(c);
    let device = c.device.open()?;
    let model = Model::load(&dir, &device)
        .with_context(|| format!("loading the model from {}", dir.display()))?;

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // A second handler cannot be installed (tests, library use): then Ctrl-C just kills the
        // process, and the writer's temporary file is all that can be left.
        let _ = ctrlc::set_handler(move || {
            eprintln!("\ncancelling…");
            cancel.store(true, Ordering::SeqCst);
        });
    }
    let bar = super::progress(1, "denoising", c.json);
    let summary = generate(&model, &req, &mut NoHook, &mut |p| {
        match *p {
            Progress::Step {
                window,
                windows,
                evaluation,
                evaluations,
            } => {
                bar.set_length((windows * evaluations) as u64);
                bar.set_position((window * evaluations + evaluation) as u64);
                bar.set_message(if windows > 1 {
                    format!("window {}/{windows}", window + 1)
                } else {
                    "denoising".to_string()
                });
            }
            Progress::Frames { written, total } => {
                bar.set_message(format!("frame {written}/{total}"));
            }
        }
        if cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    bar.finish_and_clear();
    report(&summary, c.json)
}

fn report(s: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "wrote {} ({} frames, {}x{} at {} fps) in {:.1} s [model {}, seed {}, {} window{}]",
        s.output.display(),
        s.frames,
        s.width,
        s.height,
        s.fps,
        s.timings.total_s,
        s.model,
        s.seed,
        s.windows,
        if s.windows == 1 { "" } else { "s" }
    );
    if s.prompt_used.text != s.prompt {
        println!("prompt used: {}", s.prompt_used.text);
    }
    if !s.prompt_used.unknown_words.is_empty() {
        println!(
            "words the model does not know: {}",
            s.prompt_used.unknown_words.join(", ")
        );
    }
    for n in &s.notes {
        println!("note: {n}");
    }
    Ok(())
}

/// A schedule shift must be a finite number above 0.
pub(crate) fn positive_shift(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a valid shift: give a number > 0 (1 = no shift)"
        )),
    }
}

/// What every video-making command (and `serve`) does to its outputs beyond the watermark.
#[derive(Args, Debug, Clone)]
pub struct SafetyArgs {
    /// Sign the provenance manifest with this key (`tessera keygen FILE` makes one), so readers
    /// can check who made the video and that it is unchanged.
    #[arg(long, env = "TESSERA_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// A command that reviews each finished file before it is published (run as `sh -c 'CMD
    /// FILE'` with the prompt in $TESSERA_PROMPT; a non-zero exit withholds the file and its
    /// first output line says why), e.g. your own NSFW classifier.
    #[arg(long, env = "TESSERA_REVIEW_COMMAND")]
    pub review_command: Option<String>,
}

impl SafetyArgs {
    /// The signing key `--signing-key` names, if any.
    pub fn key(&self) -> Result<Option<Arc<tessera_safety::SigningKey>>> {
        Ok(match &self.signing_key {
            Some(p) => Some(Arc::new(tessera_safety::SigningKey::read(p)?)),
            None => None,
        })
    }
}
