//! RGB8 <-> YUV 4:2:0 (I420) conversion.
//!
//! We write BT.601 limited range and say so in the SPS VUI, the convention ffmpeg and browsers
//! assume for untagged SD video. Reading honours the stream's VUI (BT.601/BT.709, limited/full).
//! Chroma is the mean of each 2x2 block on the way in and bilinearly interpolated on the way out,
//! both with the sample centred in its block, so a round trip does not shift colour edges.

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

/// RGB8 (`w*h*3` bytes) to BT.601 limited-range I420.
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
    I420 {
        y,
        u,
        v,
    }
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

/// I420 planes (`width x height` visible, chroma sited at 2x2 block centres) to RGB8.
/// `out` must be `width*height*3` bytes; the planes must cover the visible area (caller checks).
pub fn i420_to_rgb(p: &Planes, width: usize, height: usize, cs: ColorSpace, out: &mut [u8]) {
    let c = Coeffs::new(cs);
    let (cw, ch) = I420::chroma_dims(width, height);
    // Horizontal chroma taps for each luma column: (left index, right index, right weight /4).
    let taps_x: Vec<(usize, usize, i32)> = (0..width).map(|x| taps(x, cw)).collect();
    let mut ur = vec![0i32; cw];
    let mut vr = vec![0i32; cw];
    for yy in 0..height {
        let (j0, j1, wj) = taps(yy, ch);
        // Vertically interpolated chroma row, x4.
        for i in 0..cw {
            let a = p.u[j0 * p.uv_stride + i] as i32;
            let b = p.u[j1 * p.uv_stride + i] as i32;
            ur[i] = a * (4 - wj) + b * wj;
            let a = p.v[j0 * p.uv_stride + i] as i32;
            let b = p.v[j1 * p.uv_stride + i] as i32;
            vr[i] = a * (4 - wj) + b * wj;
        }
        let row = &mut out[yy * width * 3..(yy + 1) * width * 3];
        let yrow = &p.y[yy * p.y_stride..yy * p.y_stride + width];
        for (x, (px, &yv)) in row.chunks_exact_mut(3).zip(yrow).enumerate() {
            let (i0, i1, wi) = taps_x[x];
            // x16 -> centred, then to 2^14 fixed point via c_mul.
            let u16 = ur[i0] * (4 - wi) + ur[i1] * wi - 128 * 16;
            let v16 = vr[i0] * (4 - wi) + vr[i1] * wi - 128 * 16;
            let cu = (u16 as i64 * c.c_mul as i64 / 16) as i32; // 2^14 fixed
            let cv = (v16 as i64 * c.c_mul as i64 / 16) as i32;
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

/// Bilinear taps for luma coordinate `x` over `n` chroma samples centred at `2i + 0.5`:
/// the chroma position is `(x - 0.5) / 2`, so weights are 1/4 or 3/4.
fn taps(x: usize, n: usize) -> (usize, usize, i32) {
    let last = n.saturating_sub(1);
    if x % 2 == 0 {
        // Between chroma x/2 - 1 (weight 1/4) and x/2 (3/4).
        let i1 = (x / 2).min(last);
        let i0 = (x / 2).saturating_sub(1).min(last);
        (i0, i1, 3)
    } else {
        // Between chroma x/2 (3/4) and x/2 + 1 (1/4).
        let i0 = (x / 2).min(last);
        let i1 = (x / 2 + 1).min(last);
        (i0, i1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
        let yuv = rgb_to_i420(rgb, w, h);
        let (cw, _) = I420::chroma_dims(w, h);
        let planes = Planes {
            y: &yuv.y,
            u: &yuv.u,
            v: &yuv.v,
            y_stride: w,
            uv_stride: cw,
        };
        let mut out = vec![0; w * h * 3];
        i420_to_rgb(&planes, w, h, ColorSpace::default(), &mut out);
        out
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
