//! Frame-rate resampling, resizing and cropping: what turns arbitrary input into a model's
//! fixed size and rate.

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::error::{MediaError, Result};
use crate::video::{check_fps, check_size, Video};

/// Resamples to `fps` by picking, for each output time `j / fps`, the source frame nearest in
/// time. Output covers the source's first to last frame time, so `4k+1` frames at 16 fps become
/// `2k+1` at 8 fps.
pub fn resample_fps(video: &Video, fps: f64) -> Result<Video> {
    video.validate()?;
    check_fps(fps)?;
    if video.frames.is_empty() {
        return Err(MediaError::NoFrames);
    }
    let last = video.frames.len() - 1;
    let count = ((last as f64) * fps / video.fps + 1e-9).floor() as usize + 1;
    let frames = (0..count)
        .map(|j| {
            let src = (j as f64 * video.fps / fps + 1e-9).round() as usize;
            video.frames[src.min(last)].clone()
        })
        .collect();
    Ok(Video {
        width: video.width,
        height: video.height,
        fps,
        frames,
    })
}

fn to_image(video: &Video, frame: &[u8]) -> RgbImage {
    // Lengths were validated, so this never fails; an empty image is a safe fallback.
    RgbImage::from_raw(video.width, video.height, frame.to_vec()).unwrap_or_default()
}

/// Resizes every frame to `width x height` (triangle filter: bilinear when enlarging, an area
/// average when shrinking, so no aliasing on downscale). Aspect ratio is not kept.
pub fn resize(video: &Video, width: u32, height: u32) -> Result<Video> {
    video.validate()?;
    check_size(width as u64, height as u64)?;
    if (width, height) == (video.width, video.height) {
        return Ok(video.clone());
    }
    let frames = video
        .frames
        .iter()
        .map(|f| {
            imageops::resize(&to_image(video, f), width, height, FilterType::Triangle).into_raw()
        })
        .collect();
    Ok(Video {
        width,
        height,
        fps: video.fps,
        frames,
    })
}

/// Cuts the centred `width x height` window (must fit inside the frame).
pub fn center_crop(video: &Video, width: u32, height: u32) -> Result<Video> {
    video.validate()?;
    check_size(width as u64, height as u64)?;
    if width > video.width || height > video.height {
        return Err(MediaError::ShapeMismatch {
            a: format!("a {width}x{height} crop"),
            b: format!("a {}x{} video", video.width, video.height),
        });
    }
    let x0 = ((video.width - width) / 2) as usize;
    let y0 = ((video.height - height) / 2) as usize;
    let (sw, w) = (video.width as usize * 3, width as usize * 3);
    let frames = video
        .frames
        .iter()
        .map(|f| {
            (y0..y0 + height as usize)
                .flat_map(|y| &f[y * sw + x0 * 3..y * sw + x0 * 3 + w])
                .copied()
                .collect()
        })
        .collect();
    Ok(Video {
        width,
        height,
        fps: video.fps,
        frames,
    })
}

/// Resamples to `fps`, scales to cover `width x height` keeping aspect ratio, then centre-crops:
/// the standard way to bring any clip to a training size.
pub fn fit(video: &Video, width: u32, height: u32, fps: f64) -> Result<Video> {
    check_size(width as u64, height as u64)?;
    let v = resample_fps(video, fps)?;
    let scale = (width as f64 / v.width as f64).max(height as f64 / v.height as f64);
    let sw = ((v.width as f64 * scale).round() as u32).max(width);
    let sh = ((v.height as f64 * scale).round() as u32).max(height);
    center_crop(&resize(&v, sw, sh)?, width, height)
}

/// Mirrors every frame left to right, for training data whose captions can be mirrored too
/// ("moves left" ↔ "moves right"): the pair differs only in the words that name a side.
pub fn mirror(video: &Video) -> Result<Video> {
    video.validate()?;
    let row = video.width as usize * 3;
    let frames = video
        .frames
        .iter()
        .map(|f| {
            f.chunks_exact(row)
                .flat_map(|r| r.chunks_exact(3).rev().flatten())
                .copied()
                .collect()
        })
        .collect();
    Ok(Video {
        frames,
        ..video.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(n: usize, fps: f64) -> Video {
        Video {
            width: 2,
            height: 2,
            fps,
            frames: (0..n).map(|i| vec![i as u8; 12]).collect(),
        }
    }

    #[test]
    fn resample_picks_nearest_frames() {
        let v = resample_fps(&counter(33, 16.0), 8.0).unwrap();
        assert_eq!(v.frames.len(), 17);
        assert!(v
            .frames
            .iter()
            .enumerate()
            .all(|(j, f)| f[0] as usize == 2 * j));
        let v = resample_fps(&counter(3, 10.0), 20.0).unwrap();
        let idx: Vec<u8> = v.frames.iter().map(|f| f[0]).collect();
        assert_eq!(idx, [0, 1, 1, 2, 2]);
        assert_eq!(
            resample_fps(&counter(5, 16.0), 16.0).unwrap(),
            counter(5, 16.0)
        );
    }

    #[test]
    fn crop_takes_the_centre() {
        let mut v = Video::new(4, 4, 16.0);
        v.frames.push((0..48).map(|i| (i / 3) as u8).collect());
        let c = center_crop(&v, 2, 2).unwrap();
        assert_eq!(c.frames[0], vec![5, 5, 5, 6, 6, 6, 9, 9, 9, 10, 10, 10]);
        assert!(matches!(
            center_crop(&v, 5, 2),
            Err(MediaError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn mirror_reverses_pixels_in_each_row() {
        let mut v = Video::new(3, 2, 16.0);
        v.frames.push((0..18).collect());
        let m = mirror(&v).unwrap();
        assert_eq!(
            m.frames[0],
            [6, 7, 8, 3, 4, 5, 0, 1, 2, 15, 16, 17, 12, 13, 14, 9, 10, 11]
        );
        assert_eq!(mirror(&m).unwrap(), v);
        v.frames.push(vec![0; 5]);
        assert!(matches!(mirror(&v), Err(MediaError::FrameSize { .. })));
    }

    #[test]
    fn fit_gives_exact_size_and_keeps_flat_colour() {
        let mut v = Video::new(64, 36, 30.0);
        v.frames = vec![[10u8, 200, 30].repeat(64 * 36); 31];
        let f = fit(&v, 32, 32, 15.0).unwrap();
        assert_eq!((f.width, f.height, f.frames.len()), (32, 32, 16));
        assert!(f.frames[0].chunks(3).all(|p| p == [10, 200, 30]));
    }
}
