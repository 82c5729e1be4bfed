//! A keyed ±δ luma pattern on a grid of [`CELL`]×[`CELL`] pixel cells, the same in every frame.
//!
//! Why this shape: a pattern fixed in time lets the detector average all frames first, which
//! cancels most of what a lossy encoder does to it (coding noise differs frame to frame) and
//! the motion of objects; a high-pass over the cell grid (each cell minus its four
//! neighbours) removes the flat colours and smooth gradients that make up most of a frame; and
//! small cells give many of them even in a 64×64 frame (larger cells survive a single frame's
//! quantisation better, but at this size too few of them remain: see the example
//! `watermark_robustness`, which measures every choice here).
//!
//! Detection is a normalised correlation between the key's signs `r` and the high-passed cell
//! means `R` of the frame average: `z = Σ r·R / √(Σ R²)`. For a video without the mark, `r` is
//! independent of `R`, so `z` is a standard normal whatever the content; with it, `z` grows with
//! the square root of the number of cells. [`THRESHOLD`] = 5 puts the false-positive rate
//! near 3·10⁻⁷.
//!
//! A rescaled copy (Tessera's clips are small, so people upscale them to share) moves the mark
//! off the grid; [`Watermark::find`] resamples the frame average back to every size Tessera
//! could have made at that aspect (multiples of 16) and scores each, at a stricter
//! [`SEARCH_THRESHOLD`] that pays for the extra tries.
//!
//! The key is public (this is open source): the mark says "made by Tessera" to anyone who
//! checks, and anyone determined can remove it. It does not survive cropping off the cell grid.

/// Side of a watermark cell in pixels.
pub const CELL: usize = 2;

/// Detection score above which a video is called watermarked.
pub const THRESHOLD: f64 = 5.0;

/// Score a resampled size must pass in [`Watermark::find`]: one-sided 10⁻⁹ per size, so even
/// the hundred-odd sizes of a large frame keep the false-positive rate near [`THRESHOLD`]'s.
pub const SEARCH_THRESHOLD: f64 = 6.0;

/// Key of the pattern: fixed, so every Tessera build writes and finds the same mark.
const KEY: u64 = 0x7465_7373_6572_6121; // "tessera!"

/// Luma change of a cell: 38.6 dB PSNR (the example `watermark_robustness` measures it).
const STRENGTH: i16 = 3;

/// The mark's parameters; embed and detect must agree on them. The pipeline's frame hook
/// applies [`Watermark::default`] to every frame it writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watermark {
    /// Luma change of a cell.
    pub strength: i16,
    /// Cell side in pixels.
    pub cell: usize,
    /// Residuals are clipped to ±`clip` before correlating, so edges and textures (large
    /// residuals, unrelated to the key) cannot drown the flat regions that carry the mark.
    pub clip: f64,
}

impl Default for Watermark {
    fn default() -> Self {
        Self {
            strength: STRENGTH,
            cell: CELL,
            clip: STRENGTH as f64,
        }
    }
}

/// The key's sign (±1) of cell `(cx, cy)`: a SplitMix64 hash, so any frame size has a pattern
/// without a stored table.
fn sign(cx: usize, cy: usize) -> i16 {
    let mut z = KEY ^ ((cx as u64) << 32 | cy as u64);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z & 1 == 0 {
        1
    } else {
        -1
    }
}

impl Watermark {
    /// Adds the pattern to one `width × height` RGB8 frame in place (all three channels move
    /// by the same amount, so only luma changes; values clip at 0 and 255).
    pub fn embed(&self, width: u32, height: u32, rgb: &mut [u8]) {
        let (w, h) = (width as usize, height as usize);
        debug_assert_eq!(rgb.len(), w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let d = self.strength * sign(x / self.cell, y / self.cell);
                let px = &mut rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
                for c in px {
                    *c = (i16::from(*c) + d).clamp(0, 255) as u8;
                }
            }
        }
    }

    /// Looks for the mark in `frames` (each `width × height` RGB8) at their own size.
    pub fn detect(&self, width: u32, height: u32, frames: &[Vec<u8>]) -> Detection {
        let luma = mean_luma(width, height, frames);
        self.score(&luma, width, height, frames.len())
    }

    /// [`Watermark::detect`], and if the mark is not there, the same on the frame average
    /// resampled to each size Tessera could have generated (sides multiples of 16, the same
    /// aspect within 3 %, from an eighth of the frame to twice it): finds the mark in an
    /// upscaled or downscaled copy. The best score wins; [`Detection::size`] says where.
    pub fn find(&self, width: u32, height: u32, frames: &[Vec<u8>]) -> Detection {
        let luma = mean_luma(width, height, frames);
        let native = self.score(&luma, width, height, frames.len());
        if native.detected || width == 0 || height == 0 {
            return native;
        }
        // `image` clamps float pixels to 0–1, so the plane is resampled in those units.
        let unit = luma.iter().map(|l| l / 255.0).collect();
        let plane = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(width, height, unit)
            .expect("one value a pixel");
        let aspect = f64::from(height) / f64::from(width);
        let mut best = native;
        for w in (16..=2 * width).step_by(16).filter(|&w| 8 * w >= width) {
            let h = ((f64::from(w) * aspect / 16.0).round() as u32).max(1) * 16;
            if (f64::from(h) / f64::from(w) / aspect - 1.0).abs() > 0.03
                || (w, h) == (width, height)
            {
                continue;
            }
            let resized =
                image::imageops::resize(&plane, w, h, image::imageops::FilterType::Triangle);
            let levels: Vec<f32> = resized.as_raw().iter().map(|l| l * 255.0).collect();
            let d = self.score(&levels, w, h, frames.len());
            if d.score > best.score {
                best = d;
            }
        }
        best.detected = best.score
            > if best.size == [width, height] {
                THRESHOLD
            } else {
                SEARCH_THRESHOLD
            };
        best
    }

    /// The normalised correlation of a `width × height` frame-average luma plane with the key.
    fn score(&self, luma: &[f32], width: u32, height: u32, frames: usize) -> Detection {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w / self.cell, h / self.cell);
        let mut mean = vec![0f64; cw * ch];
        for y in 0..ch * self.cell {
            for x in 0..cw * self.cell {
                mean[(y / self.cell) * cw + x / self.cell] += f64::from(luma[y * w + x]);
            }
        }
        let per_cell = (self.cell * self.cell) as f64;
        mean.iter_mut().for_each(|m| *m /= per_cell);
        let (mut dot, mut energy, mut cells) = (0f64, 0f64, 0usize);
        for cy in 1..ch.saturating_sub(1) {
            for cx in 1..cw.saturating_sub(1) {
                let at = |x: usize, y: usize| mean[y * cw + x];
                let residual = at(cx, cy)
                    - (at(cx - 1, cy) + at(cx + 1, cy) + at(cx, cy - 1) + at(cx, cy + 1)) / 4.0;
                let g = residual.clamp(-self.clip, self.clip);
                dot += f64::from(sign(cx, cy)) * g;
                energy += g * g;
                cells += 1;
            }
        }
        let score = if energy > 0.0 {
            dot / energy.sqrt()
        } else {
            0.0
        };
        Detection {
            score,
            detected: score > THRESHOLD,
            frames,
            cells,
            size: [width, height],
        }
    }
}

/// Luma of every pixel averaged over `frames` (each `width × height` RGB8).
fn mean_luma(width: u32, height: u32, frames: &[Vec<u8>]) -> Vec<f32> {
    let mut sum = vec![0f64; width as usize * height as usize];
    for f in frames {
        for (s, p) in sum.iter_mut().zip(f.chunks_exact(3)) {
            *s += 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
        }
    }
    let n = frames.len().max(1) as f64;
    sum.into_iter().map(|s| (s / n) as f32).collect()
}

/// What [`Watermark::detect`] found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Detection {
    /// Normalised correlation with the key (a standard normal for unmarked video).
    pub score: f64,
    /// `score > THRESHOLD`.
    pub detected: bool,
    /// Frames and interior cells the score is over.
    pub frames: usize,
    pub cells: usize,
    /// Width and height the frames were scored at: theirs, or the size [`Watermark::find`]
    /// resampled them to (the size Tessera made them at, before someone rescaled them).
    pub size: [u32; 2],
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_media::Video;

    fn world_clip(seed: u64) -> Video {
        let opts = tessera_world::SampleOptions {
            split: tessera_world::Split::Val,
            seed,
            ..Default::default()
        };
        tessera_world::generate_clip(&opts, 0).unwrap().video
    }

    fn marked(v: &Video) -> Video {
        let mut out = v.clone();
        for f in &mut out.frames {
            Watermark::default().embed(v.width, v.height, f);
        }
        out
    }

    #[test]
    fn the_key_is_balanced() {
        let plus = (0..64)
            .flat_map(|y| (0..64).map(move |x| sign(x, y)))
            .filter(|&s| s > 0)
            .count();
        assert!((1948..2148).contains(&plus), "{plus} of 4096");
    }

    #[test]
    fn unmarked_clips_score_like_noise_and_marked_ones_far_above() {
        let mut unmarked = Vec::new();
        for seed in 0..8 {
            let v = world_clip(seed);
            let clean = Watermark::default().detect(v.width, v.height, &v.frames);
            assert!(!clean.detected, "seed {seed}: {clean:?}");
            unmarked.push(clean.score);
            let m = marked(&v);
            let found = Watermark::default().detect(m.width, m.height, &m.frames);
            assert!(found.score > 2.0 * THRESHOLD, "seed {seed}: {found:?}");
            let psnr = tessera_media::psnr(&v, &m).unwrap();
            assert!(psnr > 38.0, "seed {seed}: {psnr} dB");
        }
        assert!(unmarked.iter().all(|s| s.abs() < THRESHOLD), "{unmarked:?}");
    }

    #[test]
    fn the_mark_survives_h264_at_the_writers_quality() {
        for seed in 0..4 {
            let m = marked(&world_clip(seed));
            let bytes = tessera_media::encode_mp4(&m).unwrap();
            let back = tessera_media::decode_bytes(&bytes).unwrap();
            let d = Watermark::default().detect(back.width, back.height, &back.frames);
            assert!(d.detected, "seed {seed}: {d:?}");
        }
    }

    #[test]
    fn rescaled_copies_are_found_at_the_size_they_were_made() {
        for seed in 0..4 {
            let m = marked(&world_clip(seed));
            for side in [128, 160, 200, 48] {
                let r = tessera_media::resize(&m, side, side).unwrap();
                let d = Watermark::default().find(side, side, &r.frames);
                assert!(d.detected, "seed {seed}, {side}×{side}: {d:?}");
                assert_eq!(d.size, [64, 64], "seed {seed}, {side}×{side}");
                // On the rescaled grid itself the mark is gone: the search is what finds it.
                let here = Watermark::default().detect(side, side, &r.frames);
                assert!(
                    here.score < THRESHOLD,
                    "seed {seed}, {side}×{side}: {here:?}"
                );
            }
        }
        // A mark found where it was made is reported at that size, at the plain threshold.
        let m = marked(&world_clip(0));
        assert_eq!(Watermark::default().find(64, 64, &m.frames).size, [64, 64]);
    }

    #[test]
    fn rescaled_clean_clips_are_not_claimed() {
        for seed in 0..8 {
            let v = tessera_media::resize(&world_clip(seed), 160, 160).unwrap();
            let d = Watermark::default().find(160, 160, &v.frames);
            assert!(
                !d.detected && d.score < SEARCH_THRESHOLD,
                "seed {seed}: {d:?}"
            );
        }
    }

    #[test]
    fn one_frame_and_flat_frames_are_handled() {
        let flat = vec![vec![128u8; 64 * 64 * 3]];
        let d = Watermark::default().detect(64, 64, &flat);
        assert_eq!((d.score, d.detected, d.cells), (0.0, false, 30 * 30));
        let mut img = flat.clone();
        Watermark::default().embed(64, 64, &mut img[0]);
        assert!(Watermark::default().detect(64, 64, &img).detected);
        // Fewer than three cells a side: nothing to score, nothing claimed.
        let tiny = Watermark::default().detect(4, 4, &[vec![0u8; 4 * 4 * 3]]);
        assert_eq!((tiny.cells, tiny.detected), (0, false));
    }
}
