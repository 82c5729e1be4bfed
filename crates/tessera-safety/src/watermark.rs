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
//! A rescaled or cropped copy (Tessera's clips are small, so people upscale them to share)
//! moves the mark off the grid; [`Watermark::find`] resamples the frame average back to every
//! size Tessera could have made at that aspect (multiples of 16), and tries the grid shifted
//! by up to [`MAX_CROP`] pixels, at a stricter [`SEARCH_THRESHOLD`] that pays for the tries.
//!
//! The key is public (this is open source): the mark says "made by Tessera" to anyone who
//! checks, and anyone determined can remove it. A copy both cropped and rescaled is not found.

/// Side of a watermark cell in pixels.
pub const CELL: usize = 2;

/// Detection score above which a video is called watermarked.
pub const THRESHOLD: f64 = 5.0;

/// Score an edited copy must pass in [`Watermark::find`]: one-sided 4·10⁻¹¹ per place tried,
/// so the ~1,100 crops and the sizes of a large frame keep the false-positive rate near
/// [`THRESHOLD`]'s (3·10⁻⁷).
pub const SEARCH_THRESHOLD: f64 = 6.5;

/// Pixels the left and top edges of a crop may have lost for [`Watermark::find`] to look.
pub const MAX_CROP: u32 = 32;

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

    /// [`Watermark::detect`], and if the mark is not there, searches for an edited copy: the
    /// frame average resampled to each size Tessera could have generated (sides multiples of
    /// 16, the same aspect within 3 %, from an eighth of the frame to twice it), and the frame
    /// as a crop whose left and top edges lost up to [`MAX_CROP`] pixels. The best score wins;
    /// [`Detection::size`] and [`Detection::offset`] say where it was found.
    pub fn find(&self, width: u32, height: u32, frames: &[Vec<u8>]) -> Detection {
        let luma = mean_luma(width, height, frames);
        let mut best = self.score(&luma, width, height, frames.len());
        if best.detected || width == 0 || height == 0 {
            return best;
        }
        let mut consider = |d: Detection| {
            if d.score > best.score {
                best = d;
            }
        };
        // Cropped: the same grid, entered `offset` pixels in. Residuals depend only on where
        // the cells start (the phase), so they are computed once per phase.
        let c = self.cell;
        let mut phases: Vec<Option<Residuals>> = vec![None; c * c];
        for dy in 0..=MAX_CROP as usize {
            for dx in (0..=MAX_CROP as usize).filter(|&dx| dx + dy > 0) {
                let phase = [(c - dx % c) % c, (c - dy % c) % c];
                let r = phases[phase[1] * c + phase[0]]
                    .get_or_insert_with(|| self.residuals(&luma, width, height, phase));
                let shift = [(phase[0] + dx) / c, (phase[1] + dy) / c];
                let mut d = r.correlate(shift, frames.len(), [width, height]);
                d.offset = [dx as u32, dy as u32];
                consider(d);
            }
        }
        // Rescaled. `image` clamps float pixels to 0–1, so the plane is resampled in those units.
        let unit = luma.iter().map(|l| l / 255.0).collect();
        let plane = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(width, height, unit)
            .expect("one value a pixel");
        let aspect = f64::from(height) / f64::from(width);
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
            consider(self.score(&levels, w, h, frames.len()));
        }
        let searched = best.size != [width, height] || best.offset != [0, 0];
        best.detected = best.score
            > if searched {
                SEARCH_THRESHOLD
            } else {
                THRESHOLD
            };
        best
    }

    /// The normalised correlation of a `width × height` frame-average luma plane with the key.
    fn score(&self, luma: &[f32], width: u32, height: u32, frames: usize) -> Detection {
        self.residuals(luma, width, height, [0, 0])
            .correlate([0, 0], frames, [width, height])
    }

    /// High-passed, clipped means of the cells of `luma` on a grid whose first whole cell
    /// starts `phase` pixels from the left and top.
    fn residuals(&self, luma: &[f32], width: u32, height: u32, phase: [usize; 2]) -> Residuals {
        let (w, h, c) = (width as usize, height as usize, self.cell);
        let cw = w.saturating_sub(phase[0]) / c;
        let ch = h.saturating_sub(phase[1]) / c;
        let mut mean = vec![0f64; cw * ch];
        for y in 0..ch * c {
            for x in 0..cw * c {
                let l = luma[(y + phase[1]) * w + x + phase[0]];
                mean[(y / c) * cw + x / c] += f64::from(l);
            }
        }
        let per_cell = (c * c) as f64;
        mean.iter_mut().for_each(|m| *m /= per_cell);
        let (iw, ih) = (cw.saturating_sub(2), ch.saturating_sub(2));
        let mut g = Vec::with_capacity(iw * ih);
        for cy in 1..=ih {
            for cx in 1..=iw {
                let at = |x: usize, y: usize| mean[y * cw + x];
                let residual = at(cx, cy)
                    - (at(cx - 1, cy) + at(cx + 1, cy) + at(cx, cy - 1) + at(cx, cy + 1)) / 4.0;
                g.push(residual.clamp(-self.clip, self.clip));
            }
        }
        Residuals { g, width: iw }
    }
}

/// The interior cells' residuals of one grid (row-major, `width` a row); cell `(i, j)` is
/// cell `(i + 1, j + 1)` of the grid.
#[derive(Clone)]
struct Residuals {
    g: Vec<f64>,
    width: usize,
}

impl Residuals {
    /// Correlation with the key's cells `shift` cells right of and below this grid's.
    fn correlate(&self, shift: [usize; 2], frames: usize, size: [u32; 2]) -> Detection {
        let (mut dot, mut energy) = (0f64, 0f64);
        for (k, g) in self.g.iter().enumerate() {
            let (i, j) = (k % self.width.max(1), k / self.width.max(1));
            dot += f64::from(sign(i + 1 + shift[0], j + 1 + shift[1])) * g;
            energy += g * g;
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
            cells: self.g.len(),
            size,
            offset: [0, 0],
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
    /// Where the frames' top-left corner sat in the frame as made, in pixels: non-zero for a
    /// crop [`Watermark::find`] found.
    pub offset: [u32; 2],
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

    /// The `w × h` window at `(dx, dy)` of every frame.
    fn crop(v: &Video, [dx, dy]: [u32; 2], w: u32, h: u32) -> Vec<Vec<u8>> {
        let row = |f: &Vec<u8>, y: u32| {
            let start = ((y + dy) * v.width + dx) as usize * 3;
            f[start..start + w as usize * 3].to_vec()
        };
        v.frames
            .iter()
            .map(|f| (0..h).flat_map(|y| row(f, y)).collect())
            .collect()
    }

    #[test]
    fn cropped_copies_are_found_with_their_offset() {
        for (seed, offset) in [(0, [3, 0]), (1, [5, 11]), (2, [MAX_CROP, 3]), (3, [0, 20])] {
            let m = marked(&world_clip(seed));
            let (w, h) = (64 - offset[0] - 3, 64 - offset[1] - 2);
            let d = Watermark::default().find(w, h, &crop(&m, offset, w, h));
            assert!(d.detected, "seed {seed}, {offset:?}: {d:?}");
            assert_eq!((d.offset, d.size), (offset, [w, h]), "seed {seed}");
        }
    }

    #[test]
    fn edited_clean_clips_are_not_claimed() {
        for seed in 0..8 {
            let clip = world_clip(seed);
            let v = tessera_media::resize(&clip, 160, 160).unwrap();
            let d = Watermark::default().find(160, 160, &v.frames);
            assert!(
                !d.detected && d.score < SEARCH_THRESHOLD,
                "seed {seed}: {d:?}"
            );
            let d = Watermark::default().find(64, 64, &clip.frames);
            assert!(
                !d.detected && d.score < SEARCH_THRESHOLD,
                "seed {seed}: {d:?}"
            );
            let d = Watermark::default().find(50, 50, &crop(&clip, [7, 9], 50, 50));
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
