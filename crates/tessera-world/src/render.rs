//! Anti-aliased software renderer. Coverage of each pixel comes from the shape's signed distance
//! at the pixel centre (`clamp(0.5 - d, 0, 1)`, exact for a straight edge crossing the pixel), and
//! the checkered floor is box-filtered analytically. Objects are composited front to back, which
//! also yields ground truth: each object's visible fraction after occlusion and frame clipping.

use crate::caption::{Background, BackgroundKind, Colour};
use crate::geometry::Placed;

/// The floor starts at this fraction of the frame height.
const HORIZON: f64 = 0.7;
/// Checker tiles per frame height.
const TILES_PER_HEIGHT: f64 = 8.0;
/// Brightness of the darker floor tiles.
const DARK_TILE: f32 = 0.78;

/// One object as drawn in one frame.
#[derive(Debug, Clone, Copy)]
pub struct Sprite {
    pub placed: Placed,
    pub colour: Colour,
    /// Higher is nearer the viewer.
    pub depth: u32,
}

/// Per-object ground truth for one frame, in screen pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectTruth {
    /// Fraction of the object's area that is on screen and not hidden by nearer objects, 0..=1.
    pub visible: f64,
    /// `hidden_by[j]`: fraction of this object's area covered by object `j` (0 unless `j` is
    /// nearer).
    pub hidden_by: Vec<f64>,
}

/// Reusable buffers for rendering frames of one size.
pub struct Renderer {
    width: usize,
    height: usize,
    /// Background of the last static frame, reused while the camera does not move.
    background: Vec<f32>,
    background_key: Option<(Background, u64)>,
    colour: Vec<f32>,
    transmit: Vec<f32>,
    /// Per object (in input order): coverage over the frame and the box it was written in.
    coverage: Vec<(Vec<f32>, [usize; 4])>,
}

impl Renderer {
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        Self {
            width: w,
            height: h,
            background: vec![0.0; w * h * 3],
            background_key: None,
            colour: vec![0.0; w * h * 3],
            transmit: vec![1.0; w * h],
            coverage: Vec::new(),
        }
    }

    fn paint_background(&mut self, bg: &Background, camera_x: f64) {
        let key = (*bg, camera_x.to_bits());
        if self.background_key == Some(key) {
            return;
        }
        self.background_key = Some(key);
        let (w, h) = (self.width, self.height);
        let top = rgb_f32(bg.top.rgb());
        let bottom = rgb_f32(bg.bottom.rgb());
        let tile = h as f64 / TILES_PER_HEIGHT;
        let horizon = HORIZON * h as f64;
        for y in 0..h {
            let row = &mut self.background[y * w * 3..(y + 1) * w * 3];
            match bg.kind {
                BackgroundKind::Solid => fill_row(row, top),
                BackgroundKind::Gradient => {
                    let t = ((y as f32 + 0.5) / h as f32).clamp(0.0, 1.0);
                    fill_row(row, lerp3(top, bottom, t));
                }
                BackgroundKind::Floor => {
                    // Share of this pixel row below the horizon line.
                    let below = ((y + 1) as f64 - horizon).clamp(0.0, 1.0) as f32;
                    if below == 0.0 {
                        fill_row(row, top);
                        continue;
                    }
                    let fy = odd_fraction((y as f64 - horizon) / tile, 1.0 / tile);
                    let dark = [
                        bottom[0] * DARK_TILE,
                        bottom[1] * DARK_TILE,
                        bottom[2] * DARK_TILE,
                    ];
                    for x in 0..w {
                        let fx = odd_fraction((x as f64 + camera_x) / tile, 1.0 / tile);
                        let d = (fx * (1.0 - fy) + fy * (1.0 - fx)) as f32;
                        let floor = lerp3(bottom, dark, d);
                        let px = lerp3(top, floor, below);
                        row[x * 3..x * 3 + 3].copy_from_slice(&px);
                    }
                }
            }
        }
    }

    /// Renders one frame into `out` (RGB8, row-major) and returns each sprite's ground truth
    /// in input order. `camera_x` shifts the floor texture with a camera pan.
    pub fn render(
        &mut self,
        background: &Background,
        camera_x: f64,
        sprites: &[Sprite],
        out: &mut Vec<u8>,
    ) -> Vec<ObjectTruth> {
        let (w, h) = (self.width, self.height);
        self.paint_background(background, camera_x);
        self.colour.iter_mut().for_each(|c| *c = 0.0);
        self.transmit.iter_mut().for_each(|t| *t = 1.0);
        let n = sprites.len();
        while self.coverage.len() < n {
            self.coverage.push((vec![0.0; w * h], [0, 0, 0, 0]));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse((sprites[i].depth, i)));
        let mut truth: Vec<ObjectTruth> = (0..n)
            .map(|_| ObjectTruth {
                visible: 0.0,
                hidden_by: vec![0.0; n],
            })
            .collect();
        for (rank, &i) in order.iter().enumerate() {
            let s = &sprites[i];
            let [x0, y0, x1, y1] = s.placed.bbox();
            let (ix0, iy0) = ((x0 - 1.0).floor() as i64, (y0 - 1.0).floor() as i64);
            let (ix1, iy1) = ((x1 + 1.0).ceil() as i64, (y1 + 1.0).ceil() as i64);
            let col = rgb_f32(s.colour.rgb());
            let (mut full, mut visible) = (0.0f64, 0.0f64);
            let clip = [
                ix0.clamp(0, w as i64) as usize,
                iy0.clamp(0, h as i64) as usize,
                ix1.clamp(0, w as i64) as usize,
                iy1.clamp(0, h as i64) as usize,
            ];
            // Taken out while drawing so nearer objects' buffers can be read alongside it.
            let (mut cov_buf, _) = std::mem::take(&mut self.coverage[i]);
            for py in iy0..iy1 {
                let on_row = py >= 0 && (py as usize) < h;
                for px in ix0..ix1 {
                    let d = s.placed.sdf(px as f64 + 0.5, py as f64 + 0.5);
                    let cov = (0.5 - d).clamp(0.0, 1.0) as f32;
                    full += cov as f64;
                    if !on_row || px < 0 || px as usize >= w {
                        continue;
                    }
                    let idx = py as usize * w + px as usize;
                    cov_buf[idx] = cov;
                    if cov == 0.0 {
                        continue;
                    }
                    let seen = cov * self.transmit[idx];
                    visible += seen as f64;
                    self.transmit[idx] -= seen;
                    let c = &mut self.colour[idx * 3..idx * 3 + 3];
                    c[0] += seen * col[0];
                    c[1] += seen * col[1];
                    c[2] += seen * col[2];
                }
            }
            self.coverage[i] = (cov_buf, clip);
            let cov_buf = &self.coverage[i].0;
            truth[i].visible = if full > 0.0 {
                (visible / full).clamp(0.0, 1.0)
            } else {
                0.0
            };
            // Overlap with every nearer object, over the intersection of the written boxes.
            for &j in &order[..rank] {
                let (other, ob) = &self.coverage[j];
                let bx = [
                    clip[0].max(ob[0]),
                    clip[1].max(ob[1]),
                    clip[2].min(ob[2]),
                    clip[3].min(ob[3]),
                ];
                let mut overlap = 0.0f64;
                for y in bx[1]..bx[3] {
                    for x in bx[0]..bx[2] {
                        let idx = y * w + x;
                        overlap += (cov_buf[idx] * other[idx]) as f64;
                    }
                }
                if full > 0.0 {
                    truth[i].hidden_by[j] = (overlap / full).clamp(0.0, 1.0);
                }
            }
        }
        out.clear();
        out.reserve(w * h * 3);
        for idx in 0..w * h {
            let t = self.transmit[idx];
            for ch in 0..3 {
                let v = self.colour[idx * 3 + ch] + t * self.background[idx * 3 + ch];
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
        // Clear only what was written, so the next frame starts from zero coverage.
        for (buf, b) in self.coverage.iter_mut() {
            for y in b[1]..b[3] {
                buf[y * w + b[0]..y * w + b[2]]
                    .iter_mut()
                    .for_each(|c| *c = 0.0);
            }
            *b = [0, 0, 0, 0];
        }
        truth
    }
}

/// Share of `[u, u + len)` (in tile units) that falls on odd tiles, i.e. the box-filtered
/// square wave that is 1 on `[2k+1, 2k+2)`.
fn odd_fraction(u: f64, len: f64) -> f64 {
    fn integral(u: f64) -> f64 {
        let period = (u / 2.0).floor();
        period + (u - 2.0 * period - 1.0).max(0.0)
    }
    (integral(u + len) - integral(u)) / len
}

fn rgb_f32(c: [u8; 3]) -> [f32; 3] {
    [c[0] as f32, c[1] as f32, c[2] as f32]
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn fill_row(row: &mut [f32], c: [f32; 3]) {
    for px in row.chunks_exact_mut(3) {
        px.copy_from_slice(&c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caption::{BgColour, Shape};

    fn solid() -> Background {
        Background {
            kind: BackgroundKind::Solid,
            top: BgColour::Slate,
            bottom: BgColour::Slate,
        }
    }

    fn sprite(shape: Shape, x: f64, y: f64, radius: f64, colour: Colour, depth: u32) -> Sprite {
        Sprite {
            placed: Placed {
                shape,
                x,
                y,
                radius,
                angle: 0.0,
            },
            colour,
            depth,
        }
    }

    #[test]
    fn odd_fraction_box_filter() {
        assert_eq!(odd_fraction(0.0, 1.0), 0.0);
        assert_eq!(odd_fraction(1.0, 1.0), 1.0);
        assert!((odd_fraction(0.5, 1.0) - 0.5).abs() < 1e-12);
        assert!((odd_fraction(-0.25, 0.5) - 0.5).abs() < 1e-12);
        assert!((odd_fraction(0.0, 4.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn circle_edges_are_antialiased_and_area_is_right() {
        let mut r = Renderer::new(32, 32);
        let mut out = Vec::new();
        let truth = r.render(
            &solid(),
            0.0,
            &[sprite(Shape::Circle, 16.3, 15.8, 8.0, Colour::White, 0)],
            &mut out,
        );
        assert!((truth[0].visible - 1.0).abs() < 1e-9);
        let bg = BgColour::Slate.rgb()[0];
        let mut inside = 0.0;
        let mut partial = 0;
        for px in out.chunks_exact(3) {
            let t = (px[0] as f64 - bg as f64) / (245.0 - bg as f64);
            inside += t;
            if px[0] != bg && px[0] != 245 {
                partial += 1;
            }
        }
        // Coverage sums to the disc area within a pixel's worth of rounding; edges are blended.
        let area = std::f64::consts::PI * 64.0;
        assert!((inside - area).abs() < 1.5, "{inside} vs {area}");
        assert!(partial >= 30, "only {partial} blended edge pixels");
    }

    #[test]
    fn occlusion_and_clipping_reduce_visibility() {
        let mut r = Renderer::new(40, 40);
        let mut out = Vec::new();
        let back = sprite(Shape::Circle, 20.0, 20.0, 4.0, Colour::Red, 0);
        let front = sprite(Shape::Square, 20.0, 20.0, 8.0, Colour::Blue, 1);
        let truth = r.render(&solid(), 0.0, &[back, front], &mut out);
        assert!(truth[0].visible < 1e-6, "{:?}", truth[0]);
        assert!((truth[0].hidden_by[1] - 1.0).abs() < 1e-6);
        assert_eq!(truth[1].hidden_by[0], 0.0);
        // Centre pixel shows the nearer (blue) object.
        let c = (20 * 40 + 20) * 3;
        assert_eq!(&out[c..c + 3], &Colour::Blue.rgb());
        // Half off the left edge: about half visible.
        let truth = r.render(
            &solid(),
            0.0,
            &[sprite(Shape::Square, 0.0, 20.0, 8.0, Colour::Red, 0)],
            &mut out,
        );
        assert!((truth[0].visible - 0.5).abs() < 0.02, "{:?}", truth[0]);
    }

    #[test]
    fn floor_moves_with_the_camera() {
        let bg = Background {
            kind: BackgroundKind::Floor,
            top: BgColour::Sky,
            bottom: BgColour::Beige,
        };
        let mut r = Renderer::new(64, 64);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        r.render(&bg, 0.0, &[], &mut a);
        r.render(&bg, 3.0, &[], &mut b);
        // Above the horizon nothing changes; the floor shifts by exactly 3 pixels.
        assert_eq!(a[..64 * 3 * 40], b[..64 * 3 * 40]);
        assert_ne!(a, b);
        let row = 60 * 64 * 3;
        assert_eq!(a[row + 3 * 3..row + 64 * 3], b[row..row + 61 * 3]);
    }
}
