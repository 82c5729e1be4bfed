//! Image quality metrics on 8-bit RGB, used for codec tests and VAE evaluation.
//!
//! - PSNR: over all pixels and all three channels, peak 255; a video's PSNR pools the squared
//!   error of every frame (it is not the mean of per-frame PSNRs). Identical inputs give +inf.
//! - SSIM: Wang et al. 2004 on luma (BT.601 `Y = 0.299 R + 0.587 G + 0.114 B`, 0..255) with an
//!   11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, over "valid" windows only (no
//!   padding), as in the authors' reference code. Frames smaller than 11 px use a window of the
//!   smaller side. A video's SSIM is the mean over frames.

use crate::error::{MediaError, Result};
use crate::video::Video;

fn same_shape(a: &Video, b: &Video) -> Result<()> {
    a.validate()?;
    b.validate()?;
    if (a.width, a.height, a.frames.len()) != (b.width, b.height, b.frames.len()) {
        let d = |v: &Video| format!("{} frames of {}x{}", v.frames.len(), v.width, v.height);
        return Err(MediaError::ShapeMismatch { a: d(a), b: d(b) });
    }
    if a.frames.is_empty() {
        return Err(MediaError::NoFrames);
    }
    Ok(())
}

fn sum_squared_error(a: &[u8], b: &[u8]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as i64 - y as i64;
            (d * d) as u64
        })
        .sum()
}

fn psnr_from(sse: u64, n: usize) -> f64 {
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / n as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// PSNR in dB between two RGB8 frames of equal length.
pub fn psnr_frame(a: &[u8], b: &[u8]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        return Err(MediaError::ShapeMismatch {
            a: format!("a {}-byte frame", a.len()),
            b: format!("a {}-byte frame", b.len()),
        });
    }
    Ok(psnr_from(sum_squared_error(a, b), a.len()))
}

/// PSNR in dB between two videos of the same size and length (pooled over all frames).
pub fn psnr(a: &Video, b: &Video) -> Result<f64> {
    same_shape(a, b)?;
    let sse = a
        .frames
        .iter()
        .zip(&b.frames)
        .map(|(x, y)| sum_squared_error(x, y))
        .sum();
    Ok(psnr_from(sse, a.frame_len() * a.frames.len()))
}

/// Mean SSIM over frames, in [-1, 1] (1 = identical).
pub fn ssim(a: &Video, b: &Video) -> Result<f64> {
    same_shape(a, b)?;
    let (w, h) = (a.width as usize, a.height as usize);
    let total: f64 = a
        .frames
        .iter()
        .zip(&b.frames)
        .map(|(x, y)| ssim_luma(x, y, w, h))
        .sum();
    Ok(total / a.frames.len() as f64)
}

/// SSIM between two RGB8 frames of `width x height`.
pub fn ssim_frame(a: &[u8], b: &[u8], width: u32, height: u32) -> Result<f64> {
    let n = width as usize * height as usize * 3;
    if a.len() != n || b.len() != n || n == 0 {
        return Err(MediaError::ShapeMismatch {
            a: format!("a {}-byte frame", a.len()),
            b: format!(
                "a {width}x{height} RGB frame ({n} bytes, other is {})",
                b.len()
            ),
        });
    }
    Ok(ssim_luma(a, b, width as usize, height as usize))
}

/// BT.601 luma weights of R, G, B: what SSIM (and anything scored like it) reads.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

fn luma(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks_exact(3)
        .map(|p| LUMA[0] * p[0] as f64 + LUMA[1] * p[1] as f64 + LUMA[2] * p[2] as f64)
        .collect()
}

/// Separable "valid" Gaussian filter: output is `(w - k + 1) x (h - k + 1)`.
fn filter_valid(img: &[f64], w: usize, h: usize, kernel: &[f64]) -> Vec<f64> {
    let k = kernel.len();
    let (ow, oh) = (w - k + 1, h - k + 1);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = (0..k).map(|i| kernel[i] * img[y * w + x + i]).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..k).map(|i| kernel[i] * rows[(y + i) * ow + x]).sum();
        }
    }
    out
}

/// SSIM's stabilising constants as fractions of the value range: `C1 = (K1·L)²`, `C2 = (K2·L)²`.
pub const SSIM_K: (f64, f64) = (0.01, 0.03);

/// The normalised 1-D Gaussian window SSIM uses on a `w × h` frame (11 taps, σ = 1.5, fewer on
/// frames smaller than that); a training loss built on the same window scores what this does.
pub fn ssim_window(w: usize, h: usize) -> Vec<f64> {
    let k = 11.min(w).min(h);
    let sigma = 1.5f64;
    let c = (k as f64 - 1.0) / 2.0;
    let mut kernel: Vec<f64> = (0..k)
        .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|v| *v /= s);
    kernel
}

fn ssim_luma(a: &[u8], b: &[u8], w: usize, h: usize) -> f64 {
    let kernel = ssim_window(w, h);
    let (x, y) = (luma(a), luma(b));
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let f = |img: &[f64]| filter_valid(img, w, h, &kernel);
    let (mx, my, sxx, syy, sxy) = (f(&x), f(&y), f(&xx), f(&yy), f(&xy));
    let (c1, c2) = ((SSIM_K.0 * 255.0).powi(2), (SSIM_K.1 * 255.0).powi(2));
    let n = mx.len();
    (0..n)
        .map(|i| {
            let (mx, my) = (mx[i], my[i]);
            let vx = sxx[i] - mx * mx;
            let vy = syy[i] - my * my;
            let cov = sxy[i] - mx * my;
            ((2.0 * mx * my + c1) * (2.0 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        })
        .sum::<f64>()
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn psnr_known_values() {
        assert_eq!(psnr_frame(&[1, 2, 3], &[1, 2, 3]).unwrap(), f64::INFINITY);
        // Every byte off by 1 -> MSE 1 -> 20 log10(255) = 48.1308 dB.
        let p = psnr_frame(&[10; 30], &[11; 30]).unwrap();
        assert!((p - 48.130_803_6).abs() < 1e-6, "{p}");
        assert!(psnr_frame(&[1], &[1, 2]).is_err());
    }

    #[test]
    fn ssim_invariants() {
        let (w, h) = (32u32, 24u32);
        let a = noise((w * h * 3) as usize, 1);
        assert!((ssim_frame(&a, &a, w, h).unwrap() - 1.0).abs() < 1e-12);
        let b: Vec<u8> = a.iter().map(|&v| v.saturating_add(40)).collect();
        let c = noise(a.len(), 2);
        let s_ab = ssim_frame(&a, &b, w, h).unwrap();
        let s_ba = ssim_frame(&b, &a, w, h).unwrap();
        let s_ac = ssim_frame(&a, &c, w, h).unwrap();
        assert!((s_ab - s_ba).abs() < 1e-12, "symmetric");
        assert!(s_ac < 0.1 && s_ab > s_ac, "{s_ab} {s_ac}");
        // Tiny frames still work (window shrinks).
        assert!((ssim_frame(&[7; 12], &[7; 12], 2, 2).unwrap() - 1.0).abs() < 1e-12);
    }
}
