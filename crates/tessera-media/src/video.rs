use crate::error::{MediaError, Result};

/// Largest width or height accepted anywhere (read or write). Guards allocations sized from
/// file headers; 8192 covers 8K UHD (7680x4320).
pub const MAX_DIM: u32 = 8192;

/// Largest frame rate accepted, in frames per second.
pub const MAX_FPS: f64 = 1000.0;

/// An RGB video held in memory: `frames[i]` is `height * width * 3` bytes, row-major, RGB8.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    pub width: u32,
    pub height: u32,
    /// Frames per second.
    pub fps: f64,
    pub frames: Vec<Vec<u8>>,
}

impl Video {
    pub fn new(width: u32, height: u32, fps: f64) -> Self {
        Self {
            width,
            height,
            fps,
            frames: Vec::new(),
        }
    }

    /// Bytes in one frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Duration in seconds (`frames / fps`).
    pub fn duration(&self) -> f64 {
        self.frames.len() as f64 / self.fps
    }

    /// Checks size, fps and every frame's length; writers and metrics call this first.
    pub fn validate(&self) -> Result<()> {
        check_size(self.width as u64, self.height as u64)?;
        check_fps(self.fps)?;
        let expected = self.frame_len();
        for (index, frame) in self.frames.iter().enumerate() {
            if frame.len() != expected {
                return Err(MediaError::FrameSize {
                    index,
                    width: self.width,
                    height: self.height,
                    expected,
                    got: frame.len(),
                });
            }
        }
        Ok(())
    }
}

/// Rejects 0 and anything above [`MAX_DIM`] per side.
pub fn check_size(width: u64, height: u64) -> Result<()> {
    let ok = |d: u64| (1..=MAX_DIM as u64).contains(&d);
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(MediaError::InvalidSize { width, height })
    }
}

/// Rejects non-finite, non-positive and absurd (> [`MAX_FPS`]) frame rates.
pub fn check_fps(fps: f64) -> Result<()> {
    if fps.is_finite() && fps > 0.0 && fps <= MAX_FPS {
        Ok(())
    } else {
        Err(MediaError::InvalidFps { fps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_shapes() {
        let mut v = Video::new(4, 2, 16.0);
        v.frames.push(vec![0; 24]);
        assert!(v.validate().is_ok());
        v.frames.push(vec![0; 23]);
        assert!(matches!(
            v.validate(),
            Err(MediaError::FrameSize {
                index: 1,
                got: 23,
                ..
            })
        ));
        assert!(matches!(
            check_size(0, 0),
            Err(MediaError::InvalidSize { .. })
        ));
        assert!(matches!(
            check_size(100_000, 100_000),
            Err(MediaError::InvalidSize { .. })
        ));
        assert!(check_size(8192, 1).is_ok());
        assert!(matches!(
            check_fps(f64::NAN),
            Err(MediaError::InvalidFps { .. })
        ));
        assert!(matches!(check_fps(0.0), Err(MediaError::InvalidFps { .. })));
    }
}
