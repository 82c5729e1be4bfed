use std::path::PathBuf;

/// What went wrong while evaluating; each variant names the input and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("video {name:?} has no frames: evaluate a video with at least one frame")]
    EmptyVideo { name: String },
    #[error(
        "video {name:?} frame {frame} holds {got} bytes, expected {expected} \
         (width × height × 3 RGB8): rebuild the Video with consistent frames"
    )]
    BadFrame {
        name: String,
        frame: usize,
        expected: usize,
        got: usize,
    },
    #[error(
        "videos differ in shape: {a_width}×{a_height}×{a_frames} vs {b_width}×{b_height}×{b_frames}; \
         resample one to the other first"
    )]
    ShapeMismatch {
        a_width: u32,
        a_height: u32,
        a_frames: usize,
        b_width: u32,
        b_height: u32,
        b_frames: usize,
    },
    #[error("Fréchet distance needs at least 2 clips per set, got {real} real and {generated} generated")]
    TooFewClips { real: usize, generated: usize },
    #[error("cannot read captions file {path}: {source}; pass a captions.jsonl with one {{\"video\", \"caption\"}} object per line")]
    CaptionsRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("captions file {path} line {line}: {message}; each line must be {{\"video\": \"name.mp4\", \"caption\": \"...\"}}")]
    CaptionsLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("reference folder {path} holds {found} videos; the FVD-style distance needs at least 2 real clips: pass a `tessera world sample` folder or a folder of videos")]
    FewReferenceClips { path: PathBuf, found: usize },
    #[error("cannot list videos in {path}: {source}; pass an existing folder of videos")]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the output folder is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode PNG {path}: {message}")]
    Png { path: PathBuf, message: String },
    #[error("video {name:?}: {source}")]
    Media {
        name: String,
        #[source]
        source: tessera_media::MediaError,
    },
}

pub type Result<T> = std::result::Result<T, EvalError>;
