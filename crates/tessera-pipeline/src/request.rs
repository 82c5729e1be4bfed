//! A validated generation request. Every check runs before any compute, and each error names the
//! nearest valid value instead of rounding silently.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_diffusion::{Guidance, SamplerKind, DEFAULT_ETA, DEFAULT_ETA_UNTIL};
use tessera_media::OutputKind;

/// Why a request was rejected; each message names the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("frame count {got} is not of the form 4k+1; nearest valid counts: {below} or {above}")]
    Frames {
        got: usize,
        below: usize,
        above: usize,
    },
    #[error("size {width}x{height} is not a multiple of 16 in each side; nearest valid size: {nearest_w}x{nearest_h}")]
    Size {
        width: u32,
        height: u32,
        nearest_w: u32,
        nearest_h: u32,
    },
    #[error("steps must be at least 1")]
    Steps,
    #[error("cfg scale must be finite and >= 0, got {0}")]
    Cfg(f64),
    #[error("timestep shift must be finite and > 0 (1 = no shift), got {0}")]
    Shift(f64),
    #[error("eta must be in [0, 1] (0 = plain Euler, 1 = every step's noise fresh), got {0}")]
    Eta(f64),
    #[error(
        "eta_until must be a noise level in [0, 1] (0 = fresh noise to the last step), got {0}"
    )]
    EtaUntil(f64),
    #[error(
        "guidance interval [{0}, {1}] must be noise levels with 0 <= LO < HI <= 1, e.g. [0.3, 0.9]"
    )]
    CfgInterval(f64, f64),
    #[error("fps must be finite and > 0, got {0}")]
    Fps(f64),
    #[error("seconds must be finite and > 0, got {0}")]
    Seconds(f64),
    #[error("output folder {0} does not exist; create it first")]
    MissingFolder(PathBuf),
    #[error("unknown output extension in {0}; use .mp4, .gif, .png or a folder (PNG frames)")]
    Extension(PathBuf),
    #[error(
        "a .png output holds one frame, but {0} frames were asked for; use .mp4/.gif or --frames 1"
    )]
    PngFrames(usize),
    #[error("strength must be in [0, 1], got {0}")]
    Strength(f64),
    #[error("unknown sampler {0:?}; valid samplers: euler, euler-a, heun, unipc")]
    Sampler(String),
    #[error("unknown guidance {0:?}; valid: cfg (classifier-free), apg (adaptive projected)")]
    Guidance(String),
    #[error("{what} must add a multiple of 4 frames (the VAE packs 4 frames per latent), got {got}; nearest valid counts: {below} or {above}")]
    NewFrames {
        what: &'static str,
        got: usize,
        below: usize,
        above: usize,
    },
    #[error("a loop needs at least {min} frames (a base clip plus the stretch that joins its end to its start), got {got}")]
    LoopFrames { got: usize, min: usize },
    #[error("input {0} does not exist; check the path")]
    MissingInput(PathBuf),
    #[error("{path} is not an image (its first bytes are no PNG, JPEG or GIF signature); --image takes a PNG, JPEG or GIF")]
    NotAnImage { path: PathBuf },
    #[error("{mode} writes several frames, so a .png output cannot hold it; use .mp4 or .gif")]
    PngMode { mode: &'static str },
    #[error("window of {0} frames is too short for long-video generation; use 4k+1 frames with k ≥ 2 (e.g. 33)")]
    Window(usize),
    #[error(transparent)]
    Policy(#[from] tessera_safety::Blocked),
}

/// What the known (clean, t = 0) latent frames come from. Every mode is the same sampler run
/// with a different mask; see the crate docs for the frame layout of each.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Nothing known: text → video (or image, with one frame).
    Text,
    /// The first frame is the image.
    Image { image: PathBuf },
    /// The clip's end is joined back to its start, so it plays seamlessly on repeat.
    Loop,
    /// New frames after the input's end (`backward`: before its start).
    Extend { input: PathBuf, backward: bool },
    /// A transition from the end of `a` into the start of `b`.
    Connect { a: PathBuf, b: PathBuf },
    /// SDEdit: the input noised to `strength` and denoised under the prompt.
    Edit { input: PathBuf, strength: f64 },
}

impl Mode {
    /// Short name for summaries and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Text => "text",
            Mode::Image { .. } => "image",
            Mode::Loop => "loop",
            Mode::Extend {
                backward: false, ..
            } => "extend_forward",
            Mode::Extend { backward: true, .. } => "extend_backward",
            Mode::Connect { .. } => "connect",
            Mode::Edit { .. } => "edit",
        }
    }
}

/// Frames per generation window for long videos: the clip length the default model trained on.
pub const DEFAULT_WINDOW_FRAMES: usize = 33;

/// Frames a connect transition adds when none are asked for (one second at 16 fps).
pub const DEFAULT_TRANSITION_FRAMES: usize = 16;

/// Timestep shift of the sampling schedule. The default model trained on noise levels shifted
/// by 3, yet sampling with shift 3 scored no better on 48 held-out prompts (`tessera eval
/// --count 48 --seed 1 --shift 3`: direction and FVD-style better, shape and flicker worse;
/// MODEL_CARD.md), so the schedule stays unshifted.
pub const DEFAULT_SHIFT: f64 = 1.0;

/// Classifier-free guidance scale for a model folder whose `sampling.json` does not set one,
/// used within [`DEFAULT_CFG_INTERVAL`]. Tuned per model (the shipped one carries 5): a sharper
/// decoder turns strong guidance's latent noise into speckle objects (MODEL_CARD.md).
pub const DEFAULT_CFG: f64 = 5.0;

/// Noise levels `[lo, hi]` where classifier-free guidance applies; elsewhere the step takes the
/// conditional prediction alone (one forward instead of two). Guidance matters where layout,
/// colour and shape are decided; above 0.9 strong guidance pushes the first steps off the data
/// (FVD-style 8.4 at scale 8 on every step vs 3.3 within this interval, session-10 model),
/// below 0.3 it sharpens noise into speckles (Kynkäänniemi et al. 2024, "Applying guidance in
/// a limited interval").
pub const DEFAULT_CFG_INTERVAL: (f64, f64) = (0.3, 0.9);

/// Sampling steps of `generate`, `eval` and the benches.
pub const DEFAULT_STEPS: usize = 20;

/// File in a model folder with that model's sampling defaults ([`Sampling`]).
pub const SAMPLING_FILE: &str = "sampling.json";

/// How a model is sampled where no flag says otherwise. A model folder may carry its own in
/// [`SAMPLING_FILE`] (any subset of the fields; the rest are the built-in defaults): guidance
/// tuned to one model's decoder turns another's latent noise into speckles, so the numbers
/// belong with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// `euler`, `euler-a`, `heun` or `unipc`.
    pub sampler: String,
    pub steps: usize,
    /// Classifier-free guidance scale (1 = none, one forward a step).
    pub cfg: f64,
    /// Noise levels `[lo, hi]` where guidance applies.
    pub cfg_interval: (f64, f64),
    /// Timestep shift of the schedule (1 = none).
    pub shift: f64,
    /// Guidance rule: `cfg` or `apg` ([`Guidance`]).
    pub guidance: String,
    /// Share of each `euler-a` step's noise that is fresh (0 = plain Euler, 1 = all of it);
    /// the other samplers ignore it.
    pub eta: f64,
    /// Noise level below which `euler-a` steps take no fresh noise (0 = none): fresh noise late
    /// rounds off the outlines drawn early.
    pub eta_until: f64,
    /// Text→video as text→image and then image→video: the first latent frame is sampled
    /// alone, as a still, and held fixed while the rest is sampled (Emu Video's factorisation;
    /// a causal VAE's first latent frame is the first frame alone).
    pub image_first: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            sampler: SamplerKind::UniPc.name().into(),
            steps: DEFAULT_STEPS,
            cfg: DEFAULT_CFG,
            cfg_interval: DEFAULT_CFG_INTERVAL,
            shift: DEFAULT_SHIFT,
            guidance: Guidance::Cfg.name().into(),
            eta: DEFAULT_ETA,
            eta_until: DEFAULT_ETA_UNTIL,
            image_first: false,
        }
    }
}

impl Sampling {
    /// Checks every field; returns the sampler and the guidance rule it names.
    pub fn check(&self) -> Result<(SamplerKind, Guidance), RequestError> {
        let sampler = self
            .sampler
            .parse()
            .map_err(|_| RequestError::Sampler(self.sampler.clone()))?;
        let guidance = self
            .guidance
            .parse()
            .map_err(|_| RequestError::Guidance(self.guidance.clone()))?;
        if self.steps == 0 {
            return Err(RequestError::Steps);
        }
        if !(self.cfg.is_finite() && self.cfg >= 0.0) {
            return Err(RequestError::Cfg(self.cfg));
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return Err(RequestError::Shift(self.shift));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(RequestError::Eta(self.eta));
        }
        if !(0.0..=1.0).contains(&self.eta_until) {
            return Err(RequestError::EtaUntil(self.eta_until));
        }
        let (lo, hi) = self.cfg_interval;
        if !valid_interval(lo, hi) {
            return Err(RequestError::CfgInterval(lo, hi));
        }
        Ok((sampler, guidance))
    }
}

/// Parses `LO,HI` with `0 ≤ LO < HI ≤ 1`.
pub fn parse_cfg_interval(s: &str) -> Result<(f64, f64), String> {
    let bad = || {
        format!("`{s}` is not a guidance interval: give LO,HI noise levels with 0 <= LO < HI <= 1, e.g. 0.3,1")
    };
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if valid_interval(lo, hi) {
        Ok((lo, hi))
    } else {
        Err(bad())
    }
}

fn valid_interval(lo: f64, hi: f64) -> bool {
    (0.0..hi).contains(&lo) && hi <= 1.0
}

/// A generation request after validation: only `GenerateRequest::new` builds one.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative: String,
    /// Output frames for text/image/loop; frames added for extend and connect; unused by edit
    /// (the input's length is kept).
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub steps: usize,
    pub cfg: f64,
    pub seed: u64,
    pub output: PathBuf,
    #[serde(serialize_with = "kind_name")]
    pub kind: OutputKind,
    #[serde(serialize_with = "sampler_name")]
    pub sampler: SamplerKind,
    pub shift: f64,
    /// Fresh-noise share of an `euler-a` step ([`Sampling::eta`]).
    pub eta: f64,
    /// Where `euler-a` stops drawing fresh noise ([`Sampling::eta_until`]).
    pub eta_until: f64,
    /// Text→video through a still first ([`Sampling::image_first`]).
    pub image_first: bool,
    /// Noise levels where guidance applies ([`DEFAULT_CFG_INTERVAL`]).
    pub cfg_interval: (f64, f64),
    #[serde(serialize_with = "guidance_name")]
    pub guidance: Guidance,
    pub mode: Mode,
    /// Expand the prompt into the dense caption style before encoding.
    pub extend_prompt: bool,
    /// OpenAI-compatible chat endpoint for prompt extension (falls back to the rules).
    pub prompt_endpoint: Option<String>,
    /// Frames per window when the video is longer than one window (4k+1, k ≥ 2).
    pub window_frames: usize,
    /// Add the invisible watermark to generated frames (given frames are written as given).
    pub watermark: bool,
    /// Signs the provenance manifest (set by the caller after validation; never serialised).
    #[serde(skip)]
    pub signing_key: Option<std::sync::Arc<tessera_safety::SigningKey>>,
    /// A command that reviews the finished file before it is published
    /// ([`tessera_safety::review`]); set by the caller after validation.
    pub review: Option<String>,
}

fn kind_name<S: serde::Serializer>(k: &OutputKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match k {
        OutputKind::Mp4 => "mp4",
        OutputKind::Gif => "gif",
        OutputKind::Png => "png",
        OutputKind::PngFolder => "png_folder",
    })
}

fn guidance_name<S: serde::Serializer>(g: &Guidance, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(g.name())
}

fn sampler_name<S: serde::Serializer>(k: &SamplerKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// Unvalidated request fields, as a CLI or HTTP handler collects them.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub prompt: String,
    pub negative: String,
    /// Explicit frame count (4k+1); overrides `seconds`.
    pub frames: Option<usize>,
    /// Duration; rounded up to the next 4k+1 frame count at `fps`.
    pub seconds: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub sampling: Sampling,
    pub seed: u64,
    pub output: PathBuf,
    pub mode: Mode,
    pub extend_prompt: bool,
    pub prompt_endpoint: Option<String>,
    /// Watermark generated frames (`tessera detect` finds it); off only to measure the model.
    pub watermark: bool,
}

impl RequestSpec {
    /// Text → video of `prompt` into `output` with every other field at its default: 64×64 at
    /// 16 fps, the default length, `sampling`'s defaults, seed 0, the prompt extended by the
    /// rules. Callers override fields with struct update syntax.
    pub fn text(prompt: &str, output: &Path) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative: String::new(),
            frames: None,
            seconds: None,
            width: 64,
            height: 64,
            fps: 16.0,
            sampling: Sampling::default(),
            seed: 0,
            output: output.to_path_buf(),
            mode: Mode::Text,
            extend_prompt: true,
            prompt_endpoint: None,
            watermark: true,
        }
    }
}

/// `n` is a valid frame count when it is 4k+1 (the VAE packs 4 frames per latent after the first).
pub fn check_frames(n: usize) -> Result<usize, RequestError> {
    if n % 4 == 1 {
        return Ok(n);
    }
    let below = if n < 1 { 1 } else { (n - 1) / 4 * 4 + 1 };
    Err(RequestError::Frames {
        got: n,
        below,
        above: below + 4,
    })
}

/// Frame count for a duration: the smallest 4k+1 count that covers `seconds` at `fps`.
pub fn frames_for_seconds(seconds: f64, fps: f64) -> Result<usize, RequestError> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(RequestError::Seconds(seconds));
    }
    let n = (seconds * fps).ceil().max(1.0) as usize;
    Ok((n.saturating_sub(1)).div_ceil(4) * 4 + 1)
}

/// Sizes must be multiples of 16: 8× VAE downsampling then 2×2 patches.
pub fn check_size(width: u32, height: u32) -> Result<(u32, u32), RequestError> {
    let nearest = |v: u32| ((v + 8) / 16).max(1) * 16;
    if width == 0 || height == 0 || !width.is_multiple_of(16) || !height.is_multiple_of(16) {
        return Err(RequestError::Size {
            width,
            height,
            nearest_w: nearest(width),
            nearest_h: nearest(height),
        });
    }
    Ok((width, height))
}

/// The output folder must exist and the extension must be known, so no compute is wasted.
pub fn check_output(path: &Path) -> Result<OutputKind, RequestError> {
    let kind =
        OutputKind::from_path(path).map_err(|_| RequestError::Extension(path.to_path_buf()))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(RequestError::MissingFolder(parent.to_path_buf()));
    }
    Ok(kind)
}

impl GenerateRequest {
    pub fn new(spec: RequestSpec) -> Result<Self, RequestError> {
        tessera_safety::check_prompt(&spec.prompt)?;
        if !(spec.fps.is_finite() && spec.fps > 0.0) {
            return Err(RequestError::Fps(spec.fps));
        }
        let kind = check_output(&spec.output)?;
        let (sampler, guidance) = spec.sampling.check()?;
        let frames = match &spec.mode {
            Mode::Extend { .. } | Mode::Connect { .. } => {
                let what = if matches!(spec.mode, Mode::Connect { .. }) {
                    "a connect transition"
                } else {
                    "an extension"
                };
                if kind == OutputKind::Png {
                    return Err(RequestError::PngMode { mode: what });
                }
                match (spec.frames, spec.seconds) {
                    (Some(n), _) => check_new_frames(n, what)?,
                    (None, Some(s)) => (frames_for_seconds(s, spec.fps)? - 1).max(4),
                    (None, None) if matches!(spec.mode, Mode::Connect { .. }) => {
                        DEFAULT_TRANSITION_FRAMES
                    }
                    (None, None) => DEFAULT_WINDOW_FRAMES - 1,
                }
            }
            // The input decides the length.
            Mode::Edit { .. } => 0,
            _ => {
                let frames = match (spec.frames, spec.seconds) {
                    (Some(n), _) => check_frames(n)?,
                    (None, Some(s)) => frames_for_seconds(s, spec.fps)?,
                    (None, None) if kind == OutputKind::Png => 1,
                    (None, None) => DEFAULT_WINDOW_FRAMES,
                };
                if kind == OutputKind::Png && frames != 1 {
                    return Err(RequestError::PngFrames(frames));
                }
                if spec.mode == Mode::Loop && frames < MIN_LOOP_FRAMES {
                    return Err(RequestError::LoopFrames {
                        got: frames,
                        min: MIN_LOOP_FRAMES,
                    });
                }
                frames
            }
        };
        match &spec.mode {
            Mode::Text | Mode::Loop => {}
            Mode::Image { image } => check_image(image)?,
            Mode::Extend { input, .. } => check_input(input)?,
            Mode::Connect { a, b } => {
                check_input(a)?;
                check_input(b)?;
            }
            Mode::Edit { input, strength } => {
                check_input(input)?;
                check_strength(*strength)?;
            }
        }
        let (width, height) = check_size(spec.width, spec.height)?;
        Ok(Self {
            prompt: spec.prompt,
            negative: spec.negative,
            frames,
            width,
            height,
            fps: spec.fps,
            steps: spec.sampling.steps,
            cfg: spec.sampling.cfg,
            seed: spec.seed,
            output: spec.output,
            kind,
            sampler,
            shift: spec.sampling.shift,
            eta: spec.sampling.eta,
            eta_until: spec.sampling.eta_until,
            image_first: spec.sampling.image_first,
            cfg_interval: spec.sampling.cfg_interval,
            guidance,
            mode: spec.mode,
            extend_prompt: spec.extend_prompt,
            prompt_endpoint: spec.prompt_endpoint,
            window_frames: DEFAULT_WINDOW_FRAMES,
            watermark: spec.watermark,
            signing_key: None,
            review: None,
        })
    }
}

/// Shortest loop: a 9-frame base clip (whose end and start condition the joint) plus 4 frames.
pub const MIN_LOOP_FRAMES: usize = 13;

/// Frames added by extend/connect come in whole latents: multiples of 4, at least 4.
pub fn check_new_frames(n: usize, what: &'static str) -> Result<usize, RequestError> {
    if n >= 4 && n.is_multiple_of(4) {
        return Ok(n);
    }
    let below = (n / 4 * 4).max(4);
    Err(RequestError::NewFrames {
        what,
        got: n,
        below,
        above: if n < 4 { 8 } else { below + 4 },
    })
}

/// An input video must exist; its content is read (and resized) later, still before compute.
pub fn check_input(path: &Path) -> Result<(), RequestError> {
    if path.exists() {
        Ok(())
    } else {
        Err(RequestError::MissingInput(path.to_path_buf()))
    }
}

/// `--image` must be a file whose first bytes are an image signature.
pub fn check_image(path: &Path) -> Result<(), RequestError> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|_| RequestError::MissingInput(path.to_path_buf()))?;
    match tessera_media::sniff(&head[..n]) {
        Some(
            tessera_media::Format::Png | tessera_media::Format::Jpeg | tessera_media::Format::Gif,
        ) => Ok(()),
        _ => Err(RequestError::NotAnImage {
            path: path.to_path_buf(),
        }),
    }
}

/// SDEdit strength: 0 keeps the input, 1 ignores it.
pub fn check_strength(s: f64) -> Result<f64, RequestError> {
    if (0.0..=1.0).contains(&s) {
        Ok(s)
    } else {
        Err(RequestError::Strength(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RequestSpec {
        RequestSpec::text("a red ball", &std::env::temp_dir().join("x.mp4"))
    }

    #[test]
    fn frames_must_be_4k_plus_1_and_error_suggests_neighbours() {
        assert_eq!(check_frames(33), Ok(33));
        assert_eq!(check_frames(1), Ok(1));
        assert_eq!(
            check_frames(32),
            Err(RequestError::Frames {
                got: 32,
                below: 29,
                above: 33
            })
        );
        assert_eq!(
            check_frames(0),
            Err(RequestError::Frames {
                got: 0,
                below: 1,
                above: 5
            })
        );
    }

    #[test]
    fn seconds_round_up_to_4k_plus_1() {
        assert_eq!(frames_for_seconds(2.0, 16.0), Ok(33));
        assert_eq!(frames_for_seconds(60.0, 16.0), Ok(961));
        assert_eq!(frames_for_seconds(0.01, 16.0), Ok(1));
        assert!(frames_for_seconds(-1.0, 16.0).is_err());
    }

    #[test]
    fn size_must_be_multiple_of_16_and_names_nearest() {
        assert_eq!(check_size(64, 48), Ok((64, 48)));
        assert_eq!(
            check_size(70, 50),
            Err(RequestError::Size {
                width: 70,
                height: 50,
                nearest_w: 64,
                nearest_h: 48
            })
        );
        assert!(check_size(0, 64).is_err());
    }

    #[test]
    fn bad_fields_are_rejected_before_compute() {
        let mut s = spec();
        s.sampling.steps = 0;
        assert_eq!(GenerateRequest::new(s).unwrap_err(), RequestError::Steps);
        let mut s = spec();
        s.sampling.cfg = -1.0;
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Cfg(-1.0)
        );
        let mut s = spec();
        s.sampling.shift = 0.0;
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Shift(0.0)
        );
        for eta in [-0.5, 1.5, f64::NAN] {
            let mut s = spec();
            s.sampling.eta = eta;
            assert!(matches!(
                GenerateRequest::new(s).unwrap_err(),
                RequestError::Eta(e) if e.to_bits() == eta.to_bits()
            ));
            let mut s = spec();
            s.sampling.eta_until = eta;
            assert!(matches!(
                GenerateRequest::new(s).unwrap_err(),
                RequestError::EtaUntil(e) if e.to_bits() == eta.to_bits()
            ));
        }
        let mut s = spec();
        s.sampling.cfg_interval = (0.9, 0.3);
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::CfgInterval(0.9, 0.3)
        );
        let mut s = spec();
        s.output = PathBuf::from("/definitely/missing/dir/out.mp4");
        assert!(matches!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::MissingFolder(_)
        ));
        let mut s = spec();
        s.output = std::env::temp_dir().join("out.avi");
        assert!(matches!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Extension(_)
        ));
        let mut s = spec();
        s.output = std::env::temp_dir().join("out.png");
        s.frames = Some(33);
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::PngFrames(33)
        );
    }

    #[test]
    fn sampler_modes_and_inputs_are_checked_before_compute() {
        let mut s = spec();
        s.sampling.sampler = "ddim".into();
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Sampler("ddim".into())
        );
        let mut s = spec();
        s.sampling.guidance = "pag".into();
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Guidance("pag".into())
        );
        let mut s = spec();
        s.sampling.guidance = "APG".into();
        assert_eq!(GenerateRequest::new(s).unwrap().guidance, Guidance::Apg);
        let mut s = spec();
        s.mode = Mode::Image {
            image: PathBuf::from("/no/such.png"),
        };
        assert!(matches!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::MissingInput(_)
        ));
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("notes.png");
        std::fs::write(&txt, "hello, not an image").unwrap();
        let mut s = spec();
        s.mode = Mode::Image { image: txt.clone() };
        assert!(matches!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::NotAnImage { .. }
        ));
        let mut s = spec();
        s.mode = Mode::Connect {
            a: txt.clone(),
            b: txt.clone(),
        };
        s.frames = Some(10);
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::NewFrames {
                what: "a connect transition",
                got: 10,
                below: 8,
                above: 12
            }
        );
        let mut s = spec();
        s.mode = Mode::Extend {
            input: txt.clone(),
            backward: false,
        };
        s.seconds = Some(1.0);
        assert_eq!(GenerateRequest::new(s).unwrap().frames, 16);
        let mut s = spec();
        s.mode = Mode::Edit {
            input: txt,
            strength: 1.5,
        };
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Strength(1.5)
        );
        let mut s = spec();
        s.mode = Mode::Loop;
        s.frames = Some(9);
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::LoopFrames { got: 9, min: 13 }
        );
    }

    #[test]
    fn png_defaults_to_one_frame_and_video_to_33() {
        let mut s = spec();
        s.output = std::env::temp_dir().join("still.png");
        assert_eq!(GenerateRequest::new(s).unwrap().frames, 1);
        assert_eq!(GenerateRequest::new(spec()).unwrap().frames, 33);
    }

    #[test]
    fn guidance_interval_parses_and_names_bad_values() {
        assert_eq!(parse_cfg_interval("0.3,1"), Ok((0.3, 1.0)));
        assert_eq!(parse_cfg_interval(" 0 , 0.5"), Ok((0.0, 0.5)));
        for bad in [
            "0.5", "0.6,0.2", "0.5,0.5", "-0.1,1", "0,1.5", "a,b", "0,NaN",
        ] {
            let err = parse_cfg_interval(bad).unwrap_err();
            assert!(err.contains("0 <= LO < HI <= 1"), "{bad}: {err}");
        }
    }
}
