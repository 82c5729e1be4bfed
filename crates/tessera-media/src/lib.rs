//! Video and image I/O for Tessera. No ML here: frames are RGB bytes.

mod video;

pub use video::Video;
