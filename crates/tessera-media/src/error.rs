//! One error type for the crate: every variant names the input that failed and how to fix it.

use std::path::PathBuf;

use crate::video::{MAX_DIM, MAX_FPS};

/// Formats read without ffmpeg, listed in errors so the user knows what to convert to.
pub const NATIVE_FORMATS: &str =
    "MP4/MOV with H.264 (Baseline/Main/High, 8-bit 4:2:0, progressive), \
fragmented MP4, GIF, PNG, JPEG, a directory of PNG/JPEG frames";

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{path}: no such file or directory; check the path")]
    NotFound { path: PathBuf },

    #[error("{path}: I/O error while {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: the file is empty (0 bytes); the program that wrote it probably failed, re-export it")]
    EmptyFile { path: PathBuf },

    #[error("{path}: this is a text file, not a video or image (it starts with {start:?}); pass {NATIVE_FORMATS}")]
    TextFile { path: PathBuf, start: String },

    #[error("{path}: unrecognised format (first bytes {magic}); natively supported: {NATIVE_FORMATS}; install ffmpeg (on PATH) to read anything else")]
    UnsupportedFormat { path: PathBuf, magic: String },

    #[error("{path}: video codec {codec} is not supported natively (only 8-bit 4:2:0 progressive H.264); install ffmpeg (on PATH) to read it, or re-encode with `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`")]
    UnsupportedCodec { path: PathBuf, codec: String },

    #[error(
        "{path}: MP4 is truncated ({detail}); the file was cut short, copy or download it again"
    )]
    TruncatedMp4 { path: PathBuf, detail: String },

    #[error("{path}: MP4 is corrupt ({detail}); re-export it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`")]
    CorruptMp4 { path: PathBuf, detail: String },

    #[error("{path}: the MP4 has no video track; pass a file with H.264 video")]
    NoVideoTrack { path: PathBuf },

    #[error("{path}: H.264 decoding failed at sample {sample}: {detail}; the stream is damaged, re-encode it")]
    Decode {
        path: PathBuf,
        sample: usize,
        detail: String,
    },

    #[error("{path}: image or GIF could not be decoded: {detail}")]
    Image { path: PathBuf, detail: String },

    #[error("{path}: ffmpeg cannot read it ({detail}); a video that ffmpeg cannot read is damaged or unfinished: re-export it")]
    Ffmpeg { path: PathBuf, detail: String },

    #[error("size {width}x{height} is not supported: each side must be in 1..={MAX_DIM}; resize the input")]
    InvalidSize { width: u64, height: u64 },

    #[error("{path}: decoding needs {bytes} bytes of frames, over the {limit}-byte limit; read a shorter clip or a smaller size")]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },

    #[error("H.264 with yuv420p needs even width and height, got {width}x{height}; resize to an even size first (e.g. `fit(&video, {even_w}, {even_h}, fps)`)")]
    OddSize {
        width: u32,
        height: u32,
        even_w: u32,
        even_h: u32,
    },

    #[error("frame {index} has {got} bytes but a {width}x{height} RGB frame has {expected}; pass width*height*3 bytes per frame")]
    FrameSize {
        index: usize,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },

    #[error("fps {fps} is invalid; it must be finite and in (0, {MAX_FPS}]")]
    InvalidFps { fps: f64 },

    #[error("the video has no frames; push at least one frame before writing")]
    NoFrames,

    #[error("{path}: a PNG holds one frame but the video has {frames}; write .mp4 or .gif, or pass a directory for PNG frames")]
    PngMultiFrame { path: PathBuf, frames: usize },

    #[error("{path}: cannot tell the output format; use a .mp4, .gif or .png extension, or an existing directory for PNG frames")]
    UnsupportedOutput { path: PathBuf },

    #[error("{path}: no PNG/JPEG frames in the directory; put frame_00000.png, frame_00001.png, ... in it")]
    EmptyFolder { path: PathBuf },

    #[error("{path}: frame is {got_w}x{got_h} but earlier frames are {width}x{height}; all frames of a video must have one size")]
    MixedFrameSizes {
        path: PathBuf,
        width: u32,
        height: u32,
        got_w: u32,
        got_h: u32,
    },

    #[error("cannot compare {a} with {b}; metrics need the same size and frame count")]
    ShapeMismatch { a: String, b: String },

    #[error("H.264 encoding failed at frame {frame}: {detail}")]
    Encode { frame: usize, detail: String },
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;

impl MediaError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            MediaError::NotFound { path }
        } else {
            MediaError::Io {
                path,
                action,
                source,
            }
        }
    }
}
