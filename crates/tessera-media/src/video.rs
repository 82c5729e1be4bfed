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
}
