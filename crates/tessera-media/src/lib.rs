//! Video and image I/O for Tessera. No ML here: frames are RGB bytes.
//!
//! - [`read_video`]: MP4/MOV (H.264, plain or fragmented), GIF, PNG/JPEG, a frame directory;
//!   anything else through `ffmpeg` when it is on PATH.
//! - [`write_video`] / [`VideoWriter`]: MP4 (H.264 yuv420p, faststart), GIF, PNG, PNG frames.
//! - [`fit`], [`resample_fps`], [`resize`], [`center_crop`]; [`psnr`] and [`ssim`].
//!
//! H.264 uses openh264 compiled from source, so no system library is needed. MP4 output needs
//! even width and height (yuv420p); odd sizes are refused with [`MediaError::OddSize`] rather
//! than padded, so what is read back always has the size that was written. Frames come back in
//! presentation order (B-frames reordered). Reads hold the whole decoded clip in memory, bounded
//! by [`MAX_DECODED_BYTES`]; writes stream (MP4 keeps only the compressed samples until
//! `finish`).

mod color;
mod error;
mod h264;
mod metrics;
mod mp4;
mod read;
mod transform;
mod video;
mod write;

pub use color::{yuv420_round_trip, Upsampling};
pub use error::{MediaError, Result, NATIVE_FORMATS};
pub use metrics::{psnr, psnr_frame, ssim, ssim_frame, ssim_window, LUMA, SSIM_K};
pub use read::{
    decode_bytes, ffmpeg_available, read_provenance, read_video, read_video_native,
    read_with_ffmpeg, sniff, Format, Provenance, FOLDER_FPS, MAX_DECODED_BYTES,
};
pub use transform::{center_crop, fit, mirror, resample_fps, resize};
pub use video::{check_fps, check_size, Video, MAX_DIM, MAX_FPS};
pub use write::{encode_mp4, temp_file_beside, write_video, OutputKind, VideoWriter};
