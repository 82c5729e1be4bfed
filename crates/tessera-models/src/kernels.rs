//! Inference kernels for the CPU (f32): the VAE's convolution and channel norm without their
//! memory traffic. Each returns `None` when it does not apply (another device or dtype, or an
//! input that needs gradients), and the caller then runs the differentiable candle path, which is
//! also the reference the tests compare against.
//!
//! - [`conv3d`]: im2col + GEMM in column tiles. The whole-clip im2col of `conv3d.rs` builds a
//!   `(C·27, T·H·W)` matrix (3.7 GB for 16 channels at 33×256×256) that goes through DRAM twice;
//!   here each rayon task unfolds ~0.5 MB of columns into a reused buffer, multiplies it while it
//!   is still in L2 and adds the bias in place.
//! - [`channel_rms_norm`]: Wan's `F.normalize(x, dim=1)·√C·γ` (optionally followed by SiLU) in
//!   one pass over channel-first data, instead of candle's strided reduction plus five
//!   elementwise passes (each a fresh 100+ MB tensor at 256×256).
//!
//! Both use rayon (work stealing) rather than candle's spinning barrier pool, which stalls when
//! the machine is shared.

use candle_core::{DType, Result, Tensor, WithDType};
use rayon::prelude::*;

use crate::conv3d::{valid_range, Conv3dGeometry};

/// Call at the start of `main`, before any tensor op: runs candle's own elementwise ops on the
/// calling thread (`CANDLE_NUM_THREADS=1`) unless the user chose a count. Candle splits them
/// statically over a barrier pool whose threads spin while they wait; when the cores are shared
/// (other processes, or our rayon GEMM and kernels) a descheduled worker stalls the whole op.
/// Measured on 2 shared cores: DiT train step 1.7× faster (docs/PERFORMANCE.md). GEMM, attention
/// and the kernels here keep every core through rayon.
///
/// It also pins `RAYON_NUM_THREADS` (to the available cores) when unset: candle asks for the
/// thread count on every matmul and, without the variable, re-parses `/proc/cpuinfo` each time
/// on Linux machines without a preferred-core list (~5 % of a VAE train step in `perf`).
pub fn prefer_rayon_over_candle_pool() {
    // Only read by candle and rayon when first used, i.e. after this call.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Target size of one unfolded column tile, in floats (~512 KiB: stays in L2 with the weights).
const TILE_FLOATS: usize = 128 * 1024;

/// Whether a tensor can take the inference path: f32 on the CPU and outside any autograd graph.
fn inference_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

/// Contiguous f32 data of `t` (copied only when strided).
fn f32_data(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Runs `f` on the contiguous CPU slice of `t` without copying it out of the tensor (a strided
/// tensor is made contiguous first).
pub(crate) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(cpu), Some((a, b))) => f(&cpu.as_slice::<T>()?[a..b]),
        _ => candle_core::bail!("kernels: expected a contiguous CPU tensor"),
    }
}

/// A pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a disjoint set of indices (argued at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// `x (…, K) · Wᵀ + b` with `W` `(N, K)`, same semantics as [`crate::layers::Linear`]; `None` when
/// the inference path does not apply. The output starts as the bias rows and the GEMM adds into
/// it, reading `x` and `W` in place: no zero fill, no copy of the product for the bias add.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !inference_f32(x) || !inference_f32(weight) || !bias.is_none_or(inference_f32) {
        return Ok(None);
    }
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    let (n, wk) = weight.dims2()?;
    if wk != k || bias.is_some_and(|b| b.dims() != [n]) {
        return Ok(None); // the reference path reports the mismatch
    }
    let m = x.elem_count() / k.max(1);
    let mut out = match bias {
        Some(b) => with_slice(b, |b: &[f32]| Ok(b.repeat(m)))?,
        None => vec![0f32; m * n],
    };
    if m > 0 && n > 0 && k > 0 {
        with_slice(x, |xs: &[f32]| {
            with_slice(weight, |ws: &[f32]| {
                // SAFETY: `out` is (m, n) row-major, `xs` (m, k) row-major and `ws` (n, k)
                // row-major read as its transpose (k, n) through the strides.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        true,
                        xs.as_ptr(),
                        1,
                        k as isize,
                        ws.as_ptr(),
                        k as isize,
                        1,
                        1f32,
                        1f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(0),
                    )
                };
                Ok(())
            })
        })?;
    }
    dims.push(n);
    Ok(Some(Tensor::from_vec(out, dims, x.device())?))
}

/// 3D convolution `(B, C, T, H, W)` with weight `(O, C, kt, kh, kw)` → `(B, O, To, Ho, Wo)`, same
/// semantics as [`crate::conv3d::conv3d`]; `None` when the inference path does not apply.
pub fn conv3d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geom: &Conv3dGeometry,
) -> Result<Option<Tensor>> {
    if !inference_f32(x) || !inference_f32(weight) || !bias.is_none_or(inference_f32) {
        return Ok(None);
    }
    let (b, c, t, h, w) = x.dims5()?;
    let (o, wc, kt, kh, kw) = weight.dims5()?;
    if wc != c || [kt, kh, kw] != geom.kernel {
        return Ok(None); // the reference path reports the mismatch
    }
    let [to, ho, wo] = geom.out_dims(t, h, w)?;
    let n = to * ho * wo;
    let k = c * kt * kh * kw;
    let wmat = f32_data(weight)?; // (O, K)
    let bias = bias.map(f32_data).transpose()?;
    let mut out = vec![0f32; b * o * n];
    if n == 0 || o == 0 {
        return Ok(Some(Tensor::from_vec(out, (b, o, to, ho, wo), x.device())?));
    }
    // Tiles of whole output rows (runs of `wo` columns), so the gather copies row segments.
    let out_rows = to * ho;
    let rows_per_tile = (TILE_FLOATS / (k * wo).max(1)).clamp(1, out_rows);
    let tiles = out_rows.div_ceil(rows_per_tile);
    let dst = SharedMut(out.as_mut_ptr());
    with_slice(x, |src: &[f32]| {
        (0..b * tiles)
            .into_par_iter()
            .for_each_init(Vec::new, |cols, job| {
                let (bi, tile) = (job / tiles, job % tiles);
                let r0 = tile * rows_per_tile;
                let r1 = (r0 + rows_per_tile).min(out_rows);
                let width = (r1 - r0) * wo;
                cols.clear();
                cols.resize(k * width, 0f32);
                let sample = &src[bi * c * t * h * w..(bi + 1) * c * t * h * w];
                gather_tile(sample, [c, t, h, w], [to, ho, wo], geom, r0..r1, cols);
                let d = dst; // capture the whole Copy wrapper, not its raw-pointer field
                             // SAFETY: this task owns columns r0·wo..r1·wo of every output row of sample `bi`;
                             // no other task touches them, and the buffer outlives the parallel loop.
                unsafe {
                    let base = d.0.add(bi * o * n + r0 * wo);
                    gemm::gemm(
                        o,
                        width,
                        k,
                        base,
                        1,
                        n as isize,
                        false,
                        wmat.as_ptr(),
                        1,
                        k as isize,
                        cols.as_ptr(),
                        1,
                        width as isize,
                        0f32,
                        1f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    if let Some(bias) = &bias {
                        for (oi, &bv) in bias.iter().enumerate() {
                            let row = std::slice::from_raw_parts_mut(base.add(oi * n), width);
                            row.iter_mut().for_each(|v| *v += bv);
                        }
                    }
                }
            });
        Ok(())
    })?;
    Ok(Some(Tensor::from_vec(out, (b, o, to, ho, wo), x.device())?))
}

/// Unfolds output rows `rows` (flattened `(To, Ho)` indices) of one sample `(C, T, H, W)` into
/// `cols` `(K, rows·Wo)`, row `k = ((c·kt + dt)·kh + dy)·kw + dx`; padding reads as zero.
fn gather_tile(
    src: &[f32],
    [c, t, h, w]: [usize; 4],
    [to, ho, wo]: [usize; 3],
    geom: &Conv3dGeometry,
    rows: std::ops::Range<usize>,
    cols: &mut [f32],
) {
    let [kt, kh, kw] = geom.kernel;
    let [st, sh, sw] = geom.stride;
    let width = rows.len() * wo;
    for ci in 0..c {
        let plane = &src[ci * t * h * w..(ci + 1) * t * h * w];
        for dt in 0..kt {
            let (t0, t1) = valid_range(to, t, st, dt, geom.pad_t);
            for dy in 0..kh {
                let (y0, y1) = valid_range(ho, h, sh, dy, geom.pad_h[0]);
                for dx in 0..kw {
                    let (x0, x1) = valid_range(wo, w, sw, dx, geom.pad_w[0]);
                    let krow = ((ci * kt + dt) * kh + dy) * kw + dx;
                    let dst = &mut cols[krow * width..(krow + 1) * width];
                    for (j, r) in rows.clone().enumerate() {
                        let (ot, oy) = (r / ho, r % ho);
                        let seg = &mut dst[j * wo..(j + 1) * wo];
                        if ot < t0 || ot >= t1 || oy < y0 || oy >= y1 || x0 >= x1 {
                            seg.fill(0.0);
                            continue;
                        }
                        let it = ot * st + dt - geom.pad_t;
                        let iy = oy * sh + dy - geom.pad_h[0];
                        let src_row = &plane[(it * h + iy) * w..(it * h + iy + 1) * w];
                        seg[..x0].fill(0.0);
                        seg[x1..].fill(0.0);
                        if sw == 1 {
                            let ix0 = x0 + dx - geom.pad_w[0];
                            seg[x0..x1].copy_from_slice(&src_row[ix0..ix0 + (x1 - x0)]);
                        } else {
                            for (ox, v) in seg[x0..x1].iter_mut().enumerate() {
                                *v = src_row[(x0 + ox) * sw + dx - geom.pad_w[0]];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Wan's channel RMS norm of `(B, C, S…)` with gain `gamma` (`C` elements, any shape):
/// `x / √(mean_c(x²) + eps) · γ`, then SiLU when `silu`. `None` when the inference path does not
/// apply.
pub fn channel_rms_norm(
    x: &Tensor,
    gamma: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !inference_f32(x) || !inference_f32(gamma) || x.rank() < 2 {
        return Ok(None);
    }
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    if gamma.elem_count() != c {
        return Ok(None);
    }
    let g = f32_data(gamma)?;
    let mut out = vec![0f32; b * c * s];
    // Column blocks of positions: each task reads C strided rows of `blk` floats.
    const BLK: usize = 1024;
    let blocks = s.div_ceil(BLK);
    let dst = SharedMut(out.as_mut_ptr());
    with_slice(x, |src: &[f32]| {
        (0..b * blocks)
            .into_par_iter()
            .for_each_init(Vec::new, |acc: &mut Vec<f32>, job| {
                let (bi, blk) = (job / blocks, job % blocks);
                let p0 = blk * BLK;
                let len = (s - p0).min(BLK);
                acc.clear();
                acc.resize(len, 0.0);
                for ci in 0..c {
                    let row = &src[(bi * c + ci) * s + p0..(bi * c + ci) * s + p0 + len];
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v * v);
                }
                let inv_c = 1.0 / c as f32;
                acc.iter_mut()
                    .for_each(|a| *a = 1.0 / (*a * inv_c + eps as f32).sqrt());
                let d = dst;
                for (ci, &gv) in g.iter().enumerate() {
                    let off = (bi * c + ci) * s + p0;
                    let row = &src[off..off + len];
                    // SAFETY: positions p0..p0+len of sample `bi` belong to this task alone.
                    let out = unsafe { std::slice::from_raw_parts_mut(d.0.add(off), len) };
                    for ((o, &v), &r) in out.iter_mut().zip(row).zip(acc.iter()) {
                        let y = v * r * gv;
                        *o = if silu { y / (1.0 + (-y).exp()) } else { y };
                    }
                }
            });
        Ok(())
    })?;
    Ok(Some(Tensor::from_vec(out, dims, x.device())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("same shapes")
    }

    /// Every geometry the VAE uses, at sizes where tiles split rows and frames unevenly.
    #[test]
    fn tiled_conv_matches_the_differentiable_conv() -> Result<()> {
        let dev = Device::Cpu;
        for g in crate::conv3d::vae_geometries() {
            for (b, c, o, t, h, w) in [(1, 3, 5, 5, 9, 7), (2, 16, 8, 6, 16, 12)] {
                let x = Tensor::randn(0f32, 1.0, (b, c, t, h, w), &dev)?;
                let wt = Tensor::randn(
                    0f32,
                    0.3,
                    (o, c, g.kernel[0], g.kernel[1], g.kernel[2]),
                    &dev,
                )?;
                let bias = Tensor::randn(0f32, 0.3, o, &dev)?;
                let fast = conv3d(&x, &wt, Some(&bias), &g)?.expect("inference path applies");
                // A Var input forces the reference path.
                let xv = Var::from_tensor(&x)?;
                let want = crate::conv3d::conv3d(xv.as_tensor(), &wt, Some(&bias), &g)?;
                assert_eq!(fast.dims(), want.dims());
                let d = max_diff(&fast, &want);
                assert!(d < 1e-4, "{g:?} {:?}: max diff {d}", x.dims());
            }
        }
        Ok(())
    }

    #[test]
    fn tracked_inputs_take_the_differentiable_path() -> Result<()> {
        let dev = Device::Cpu;
        let g = Conv3dGeometry {
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            pad_t: 0,
            pad_h: [0, 0],
            pad_w: [0, 0],
        };
        let x = Var::randn(0f32, 1.0, (1, 2, 1, 2, 2), &dev)?;
        let w = Tensor::ones((3, 2, 1, 1, 1), DType::F32, &dev)?;
        assert!(conv3d(x.as_tensor(), &w, None, &g)?.is_none());
        assert!(linear(
            x.as_tensor(),
            &Tensor::ones((3, 2), DType::F32, &dev)?,
            None
        )?
        .is_none());
        assert!(channel_rms_norm(
            x.as_tensor(),
            &Tensor::ones(2, DType::F32, &dev)?,
            1e-6,
            false
        )?
        .is_none());
        Ok(())
    }

    /// Leading dimensions flatten, the bias (if any) broadcasts, and a strided input is read right.
    #[test]
    fn linear_matches_the_differentiable_linear() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.3, (7, 5), &dev)?;
        let b = Tensor::randn(0f32, 0.3, 7, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 5), &dev)?;
        let strided = Tensor::randn(0f32, 1.0, (2, 5, 3), &dev)?.transpose(1, 2)?;
        for x in [&x, &strided] {
            for bias in [Some(&b), None] {
                let fast = linear(x, &w, bias)?.expect("inference path applies");
                let want = x.broadcast_matmul(&w.t()?)?;
                let want = match bias {
                    Some(b) => want.broadcast_add(b)?,
                    None => want,
                };
                assert_eq!(fast.dims(), [2, 3, 7]);
                assert!(max_diff(&fast, &want) < 1e-5);
            }
        }
        Ok(())
    }

    #[test]
    fn channel_norm_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2.0, (2, 5, 3, 7, 130), &dev)?;
        let gamma = Tensor::randn(1f32, 0.2, (5, 1, 1, 1), &dev)?;
        let eps = 1e-12;
        let ms = x.sqr()?.mean_keepdim(1)?;
        let want = x
            .broadcast_div(&(ms + eps)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape((1, 5, 1, 1, 1))?)?;
        let got = channel_rms_norm(&x, &gamma, eps, false)?.expect("applies");
        assert!(max_diff(&got, &want) < 1e-5);
        let got = channel_rms_norm(&x, &gamma, eps, true)?.expect("applies");
        assert!(max_diff(&got, &want.silu()?) < 1e-5);
        Ok(())
    }
}
