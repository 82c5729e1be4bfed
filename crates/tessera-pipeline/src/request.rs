//! A validated generation request. Every check runs before any compute, and each error names the
//! nearest valid value instead of rounding silently.

use std::path::{Path, PathBuf};

use serde::Serialize;

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
    #[error("fps must be finite and > 0, got {0}")]
    Fps(f64),
    #[error("seconds must be finite and > 0, got {0}")]
    Seconds(f64),
    #[error("output folder {0} does not exist; create it first")]
    MissingFolder(PathBuf),
    #[error("unknown output extension in {0}; use .mp4, .gif or .png")]
    Extension(PathBuf),
    #[error(
        "a .png output holds one frame, but {0} frames were asked for; use .mp4/.gif or --frames 1"
    )]
    PngFrames(usize),
    #[error("strength must be in [0, 1], got {0}")]
    Strength(f64),
}

/// What the output file holds, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutputKind {
    Mp4,
    Gif,
    Png,
}

impl OutputKind {
    pub fn from_path(path: &Path) -> Result<Self, RequestError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("mp4") => Ok(Self::Mp4),
            Some("gif") => Ok(Self::Gif),
            Some("png") => Ok(Self::Png),
            _ => Err(RequestError::Extension(path.to_path_buf())),
        }
    }
}

/// A generation request after validation: only `GenerateRequest::new` builds one.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative: String,
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub steps: usize,
    pub cfg: f64,
    pub seed: u64,
    pub output: PathBuf,
    pub kind: OutputKind,
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
    pub steps: usize,
    pub cfg: f64,
    pub seed: u64,
    pub output: PathBuf,
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
    if width == 0 || height == 0 || width % 16 != 0 || height % 16 != 0 {
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
    let kind = OutputKind::from_path(path)?;
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
        if !(spec.fps.is_finite() && spec.fps > 0.0) {
            return Err(RequestError::Fps(spec.fps));
        }
        let kind = check_output(&spec.output)?;
        let frames = match (spec.frames, spec.seconds) {
            (Some(n), _) => check_frames(n)?,
            (None, Some(s)) => frames_for_seconds(s, spec.fps)?,
            (None, None) if kind == OutputKind::Png => 1,
            (None, None) => 33,
        };
        if kind == OutputKind::Png && frames != 1 {
            return Err(RequestError::PngFrames(frames));
        }
        let (width, height) = check_size(spec.width, spec.height)?;
        if spec.steps == 0 {
            return Err(RequestError::Steps);
        }
        if !(spec.cfg.is_finite() && spec.cfg >= 0.0) {
            return Err(RequestError::Cfg(spec.cfg));
        }
        Ok(Self {
            prompt: spec.prompt,
            negative: spec.negative,
            frames,
            width,
            height,
            fps: spec.fps,
            steps: spec.steps,
            cfg: spec.cfg,
            seed: spec.seed,
            output: spec.output,
            kind,
        })
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
        RequestSpec {
            prompt: "a red ball".into(),
            negative: String::new(),
            frames: None,
            seconds: None,
            width: 64,
            height: 64,
            fps: 16.0,
            steps: 20,
            cfg: 5.0,
            seed: 0,
            output: std::env::temp_dir().join("x.mp4"),
        }
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
        s.steps = 0;
        assert_eq!(GenerateRequest::new(s).unwrap_err(), RequestError::Steps);
        let mut s = spec();
        s.cfg = -1.0;
        assert_eq!(
            GenerateRequest::new(s).unwrap_err(),
            RequestError::Cfg(-1.0)
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
    fn png_defaults_to_one_frame_and_video_to_33() {
        let mut s = spec();
        s.output = std::env::temp_dir().join("still.png");
        assert_eq!(GenerateRequest::new(s).unwrap().frames, 1);
        assert_eq!(GenerateRequest::new(spec()).unwrap().frames, 33);
    }
}
