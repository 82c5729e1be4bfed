//! 3D convolution for candle, which has none: a differentiable custom op built on GEMM.
//!
//! The output is cut into tiles of whole output rows; each rayon task unfolds its tile's inputs
//! into a `(C·kt·kh·kw, rows·Wo)` column buffer (~512 KiB, zero padding folded into the gather,
//! no padded copy of the input) and multiplies `W(O, K) @ cols` into the channel-first
//! `(B, O, To, Ho, Wo)` output while the buffer is in L2. The backward does the same per tile:
//! `dW += dY·colsᵀ`, `dcols = Wᵀ·dY`, then scatters `dcols` back (the adjoint of the gather) into
//! a per-task `dX`. A whole-clip unfold would be a `(C·27, T·H·W)` matrix (30 MB for a 16-channel
//! 17×32×32 training crop, 3.7 GB at 33×256×256) written and read back through DRAM.
//!
//! Causality lives in the padding: `Conv3dGeometry::pad_t` pads only the past. The column
//! matrix is ordered tap-major (`k = ((dt·C + c)·kh + dy)·kw + dx`, the weight permuted to
//! match), so the temporal taps that read only padding for a whole tile — two of three for an
//! image or a clip's first frame — are a prefix of `K` that the tile leaves out of its GEMMs.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::{gemm_into, sum_over_splits, with_slice, Mat, SharedMut};

/// Kernel, stride and zero padding of a 3D convolution. Time is padded only at the front (causal);
/// height and width have separate before/after padding so Wan's `ZeroPad2d((0, 1, 0, 1))` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dGeometry {
    /// `(kt, kh, kw)`.
    pub kernel: [usize; 3],
    /// `(st, sh, sw)`.
    pub stride: [usize; 3],
    /// Zero frames added before the first frame.
    pub pad_t: usize,
    /// Zero rows (top, bottom).
    pub pad_h: [usize; 2],
    /// Zero columns (left, right).
    pub pad_w: [usize; 2],
}

impl Conv3dGeometry {
    /// Output `(To, Ho, Wo)` for an input `(T, H, W)`; an error when the kernel does not fit.
    pub fn out_dims(&self, t: usize, h: usize, w: usize) -> Result<[usize; 3]> {
        let tp = t + self.pad_t;
        let hp = h + self.pad_h[0] + self.pad_h[1];
        let wp = w + self.pad_w[0] + self.pad_w[1];
        let [kt, kh, kw] = self.kernel;
        if tp < kt || hp < kh || wp < kw {
            candle_core::bail!(
                "conv3d: padded input {tp}x{hp}x{wp} (T x H x W) is smaller than the kernel {kt}x{kh}x{kw}"
            )
        }
        Ok([
            (tp - kt) / self.stride[0] + 1,
            (hp - kh) / self.stride[1] + 1,
            (wp - kw) / self.stride[2] + 1,
        ])
    }

    fn k(&self) -> usize {
        self.kernel.iter().product()
    }
}

/// For one kernel tap along one axis: (first output index whose input is inside, one past the last).
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    tap: usize,
    pad_before: usize,
) -> (usize, usize) {
    // input = o*stride + tap - pad_before must lie in [0, in_len)
    let lo = if tap >= pad_before {
        0
    } else {
        (pad_before - tap).div_ceil(stride)
    };
    let hi_excl = if in_len + pad_before <= tap {
        0
    } else {
        ((in_len + pad_before - tap - 1) / stride + 1).min(out_len)
    };
    (lo.min(hi_excl), hi_excl)
}

/// Unfolds output rows `rows` (flattened `(To, Ho)` indices) of one sample `(C, T, H, W)` into
/// `cols` `(K', rows·Wo)`, row `((dt − skip)·C + c)·kh·kw + dy·kw + dx` for the temporal taps
/// `dt ≥ skip`; padding reads as zero.
fn gather_rows<T: WithDType>(
    src: &[T],
    dims: [usize; 4],
    out: [usize; 3],
    geom: &Conv3dGeometry,
    (rows, skip): (std::ops::Range<usize>, usize),
    cols: &mut [T],
) {
    let [_, t, h, w] = dims;
    let wo = out[2];
    let width = rows.len() * wo;
    let sw = geom.stride[2];
    for_each_tap(dims, out, geom, skip, |ci, krow, tap| {
        let plane = &src[ci * t * h * w..(ci + 1) * t * h * w];
        let dst = &mut cols[krow * width..(krow + 1) * width];
        let [x0, x1] = tap.x;
        tap.for_rows(rows.clone(), |j, start| {
            let seg = &mut dst[j * wo..(j + 1) * wo];
            let Some(start) = start else {
                seg.fill(T::zero());
                return;
            };
            seg[..x0].fill(T::zero());
            seg[x1..].fill(T::zero());
            let src_row = &plane[start + tap.ix0..];
            if sw == 1 {
                seg[x0..x1].copy_from_slice(&src_row[..x1 - x0]);
            } else {
                for (v, &x) in seg[x0..x1].iter_mut().zip(src_row.iter().step_by(sw)) {
                    *v = x;
                }
            }
        });
    });
}

/// The adjoint of [`gather_rows`]: adds `cols` `(K, rows·Wo)` back onto the sample `dst`
/// `(C, T, H, W)` at the positions the gather read.
fn scatter_rows<T: WithDType>(
    cols: &[T],
    dims: [usize; 4],
    out: [usize; 3],
    geom: &Conv3dGeometry,
    (rows, skip): (std::ops::Range<usize>, usize),
    dst: &mut [T],
) {
    let [_, t, h, w] = dims;
    let wo = out[2];
    let width = rows.len() * wo;
    let sw = geom.stride[2];
    for_each_tap(dims, out, geom, skip, |ci, krow, tap| {
        let plane = &mut dst[ci * t * h * w..(ci + 1) * t * h * w];
        let src = &cols[krow * width..(krow + 1) * width];
        let [x0, x1] = tap.x;
        tap.for_rows(rows.clone(), |j, start| {
            let Some(start) = start else { return };
            let seg = &src[j * wo + x0..j * wo + x1];
            let dst_row = &mut plane[start + tap.ix0..];
            if sw == 1 {
                for (d, &v) in dst_row[..x1 - x0].iter_mut().zip(seg) {
                    *d += v;
                }
            } else {
                for (d, &v) in dst_row.iter_mut().step_by(sw).zip(seg) {
                    *d += v;
                }
            }
        });
    });
}

/// Where one kernel tap `(dt, dy, dx)` reads: the output frames, rows and columns `[lo, hi)`
/// whose input is inside the clip, and the input column of the first valid output column.
struct Tap {
    t: [usize; 2],
    y: [usize; 2],
    x: [usize; 2],
    ix0: usize,
    /// Input frame and row of output frame 0, row 0 (may be "negative": wrapping, never read).
    it0: usize,
    iy0: usize,
    stride: [usize; 2],
    dims: [usize; 3],
    ho: usize,
}

impl Tap {
    /// Calls `f(j, start)` for the `j`-th output row of `rows`: `start` is the offset of the
    /// input row it reads in a `(T, H, W)` plane, `None` when the tap reads only padding there.
    fn for_rows(&self, rows: std::ops::Range<usize>, mut f: impl FnMut(usize, Option<usize>)) {
        let [_, h, w] = self.dims;
        let (mut ot, mut oy) = (rows.start / self.ho, rows.start % self.ho);
        for j in 0..rows.len() {
            let inside = (self.t[0]..self.t[1]).contains(&ot)
                && (self.y[0]..self.y[1]).contains(&oy)
                && self.x[0] < self.x[1];
            let it = self.it0.wrapping_add(ot * self.stride[0]);
            let iy = self.iy0.wrapping_add(oy * self.stride[1]);
            f(j, inside.then(|| (it * h + iy) * w));
            oy += 1;
            if oy == self.ho {
                (ot, oy) = (ot + 1, 0);
            }
        }
    }
}

/// Calls `f(channel, column-matrix row, tap)` for every channel and kernel tap with `dt ≥ skip`.
fn for_each_tap(
    [c, t, h, w]: [usize; 4],
    [to, ho, wo]: [usize; 3],
    geom: &Conv3dGeometry,
    skip: usize,
    mut f: impl FnMut(usize, usize, &Tap),
) {
    let [kt, kh, kw] = geom.kernel;
    let [st, sh, sw] = geom.stride;
    let range = |(lo, hi): (usize, usize)| [lo, hi];
    for dt in skip..kt {
        for dy in 0..kh {
            for dx in 0..kw {
                let x = range(valid_range(wo, w, sw, dx, geom.pad_w[0]));
                let tap = Tap {
                    t: range(valid_range(to, t, st, dt, geom.pad_t)),
                    y: range(valid_range(ho, h, sh, dy, geom.pad_h[0])),
                    x,
                    ix0: (x[0] * sw + dx).saturating_sub(geom.pad_w[0]),
                    it0: dt.wrapping_sub(geom.pad_t),
                    iy0: dy.wrapping_sub(geom.pad_h[0]),
                    stride: [st, sh],
                    dims: [t, h, w],
                    ho,
                };
                for ci in 0..c {
                    f(ci, (((dt - skip) * c + ci) * kh + dy) * kw + dx, &tap);
                }
            }
        }
    }
}

pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Target size of one column tile, in elements (~512 KiB of f32): it stays in L2 while the GEMMs
/// that fill and read it run.
const TILE_ELEMS: usize = 128 * 1024;

/// The whole convolution as one autograd node, `(x, W (O, K)) → (B, O, To·Ho·Wo)`, in column
/// tiles both ways (module docs). Also the inference kernel's core (`kernels::conv3d`).
pub(crate) struct Conv3dOp {
    geom: Conv3dGeometry,
    in_dims: [usize; 5],
    out_channels: usize,
    /// Column-tile size in elements: [`TILE_ELEMS`]; the tests shrink it to cross tiles.
    tile: usize,
}

impl Conv3dOp {
    pub(crate) fn new(geom: Conv3dGeometry, in_dims: [usize; 5], out_channels: usize) -> Self {
        Self {
            geom,
            in_dims,
            out_channels,
            tile: TILE_ELEMS,
        }
    }

    /// `(sample size, K, N, O)`.
    fn sizes(&self) -> Result<(usize, usize, usize, usize)> {
        let [_, c, t, h, w] = self.in_dims;
        let [to, ho, wo] = self.geom.out_dims(t, h, w)?;
        Ok((
            c * t * h * w,
            c * self.geom.k(),
            to * ho * wo,
            self.out_channels,
        ))
    }

    /// A pointwise convolution's input already is its own column matrix.
    fn pointwise(&self) -> bool {
        let g = &self.geom;
        g.kernel == [1, 1, 1]
            && g.stride == [1, 1, 1]
            && g.pad_t == 0
            && g.pad_h == [0, 0]
            && g.pad_w == [0, 0]
    }

    /// How output rows are cut into tiles: whole output rows (runs of `Wo` columns), so the
    /// gather copies row segments. Output frames that some temporal tap sees only as padding
    /// (the first `pad_t` of a causal convolution) get tiles of their own, which leave those
    /// taps out.
    fn tiling(&self) -> Result<Tiling> {
        let g = &self.geom;
        let [_, c, t, h, w] = self.in_dims;
        let out @ [to, ho, wo] = g.out_dims(t, h, w)?;
        let kt = g.kernel[0];
        let rows = (self.tile / (c * g.k() * wo).max(1)).clamp(1, (to * ho).max(1));
        // First output frame whose input each temporal tap finds inside the clip.
        let first: Vec<usize> = (0..kt)
            .map(|dt| valid_range(to, t, g.stride[0], dt, g.pad_t).0)
            .collect();
        let full = first.iter().copied().max().unwrap_or(0).min(to);
        let mut tiles = Vec::new();
        for frames in (0..full).map(|f| f..f + 1).chain(std::iter::once(full..to)) {
            let end = frames.end * ho;
            for r0 in (frames.start * ho..end).step_by(rows) {
                let r1 = (r0 + rows).min(end);
                let last = (r1 - 1) / ho;
                let skip = first.iter().take_while(|&&f| f > last).count();
                tiles.push((r0..r1, skip.min(kt - 1)));
            }
        }
        Ok(Tiling {
            dims: [c, t, h, w],
            out,
            tiles,
        })
    }

    /// `W (O, K) · x` per sample, plus `bias` (O) when given.
    pub(crate) fn forward<T: WithDType>(
        &self,
        x: &[T],
        wm: &[T],
        bias: Option<&[T]>,
    ) -> Result<Vec<T>> {
        let (xs, k, n, o) = self.sizes()?;
        let b = self.in_dims[0];
        let mut y = vec![T::zero(); b * o * n];
        if n == 0 || o == 0 {
            return Ok(y);
        }
        if self.pointwise() {
            let w_rows = Mat::rows(wm.as_ptr(), k);
            for (xb, yb) in x.chunks(xs).zip(y.chunks_mut(o * n)) {
                let par = gemm::Parallelism::Rayon(0);
                // SAFETY: yb is (O, N), W (O, K) and xb (K, N), all row-major.
                unsafe {
                    let xm = Mat::rows(xb.as_ptr(), n);
                    gemm_into(
                        [o, n, k],
                        yb.as_mut_ptr(),
                        n,
                        false,
                        w_rows,
                        xm,
                        T::one(),
                        par,
                    )
                };
            }
            if let Some(bias) = bias {
                y.par_chunks_mut(n)
                    .enumerate()
                    .for_each(|(row, v)| v.iter_mut().for_each(|v| *v += bias[row % o]));
            }
            return Ok(y);
        }
        let tiling = self.tiling()?;
        let wo = tiling.out[2];
        let wt = self.tap_major(wm);
        let dst = SharedMut(y.as_mut_ptr());
        (0..tiling.jobs(b))
            .into_par_iter()
            .for_each_init(Vec::new, |cols, job| {
                let (bi, rows, skip) = tiling.job(job);
                let (width, off) = (rows.len() * wo, skip * k / self.geom.kernel[0]);
                let kk = k - off;
                cols.resize(kk * width, T::zero());
                let sample = &x[bi * xs..(bi + 1) * xs];
                let cols = &mut cols[..kk * width];
                let (dims, out) = (tiling.dims, tiling.out);
                gather_rows(sample, dims, out, &self.geom, (rows.clone(), skip), cols);
                // The whole Copy wrapper, not its pointer field, moves into the closure.
                let d = dst;
                // SAFETY: this task owns columns rows·wo of every output row of sample `bi`; no
                // other task touches them, and `y` outlives the parallel loop. The weight's
                // columns from `off` on are the taps this tile reads.
                unsafe {
                    let base = d.0.add(bi * o * n + rows.start * wo);
                    let (w_rows, cm) = (
                        Mat::rows(wt.as_ptr().add(off), k),
                        Mat::rows(cols.as_ptr(), width),
                    );
                    let par = gemm::Parallelism::None;
                    gemm_into([o, width, kk], base, n, false, w_rows, cm, T::one(), par);
                    for (oi, &bv) in bias.into_iter().flatten().enumerate() {
                        let row = std::slice::from_raw_parts_mut(base.add(oi * n), width);
                        row.iter_mut().for_each(|v| *v += bv);
                    }
                }
            });
        Ok(y)
    }

    /// `(dX, dW)` for the output gradient `dy`.
    fn backward<T: WithDType>(&self, x: &[T], wm: &[T], dy: &[T]) -> Result<(Vec<T>, Vec<T>)> {
        let (xs, k, n, o) = self.sizes()?;
        let b = self.in_dims[0];
        if self.pointwise() {
            let w_rows = Mat::rows(wm.as_ptr(), k);
            let (mut dx, mut dw) = (vec![T::zero(); x.len()], vec![T::zero(); o * k]);
            let par = gemm::Parallelism::Rayon(0);
            for (bi, (xb, dyb)) in x.chunks(xs).zip(dy.chunks(o * n)).enumerate() {
                let (xm, dym) = (Mat::rows(xb.as_ptr(), n), Mat::rows(dyb.as_ptr(), n));
                let dxb = dx[bi * xs..].as_mut_ptr();
                // SAFETY: dW (O, K) += dY (O, N)·xᵀ; dX (K, N) = Wᵀ (K, O)·dY, all row-major.
                unsafe {
                    gemm_into(
                        [o, k, n],
                        dw.as_mut_ptr(),
                        k,
                        bi > 0,
                        dym,
                        xm.t(),
                        T::one(),
                        par,
                    );
                    gemm_into([k, n, o], dxb, n, false, w_rows.t(), dym, T::one(), par);
                }
            }
            return Ok((dx, dw));
        }
        let tiling = self.tiling()?;
        let wo = tiling.out[2];
        let wt = self.tap_major(wm);
        // Each split has its own dX and dW: tiles of neighbouring rows read overlapping inputs,
        // so their gradients cannot share a buffer.
        let (dx, dw) = sum_over_splits(
            tiling.jobs(b),
            || (vec![T::zero(); x.len()], vec![T::zero(); o * k]),
            |(dx, dw): &mut (Vec<T>, Vec<T>), (cols, dcols): &mut (Vec<T>, Vec<T>), job| {
                let (bi, rows, skip) = tiling.job(job);
                let (width, off) = (rows.len() * wo, skip * k / self.geom.kernel[0]);
                let kk = k - off;
                cols.resize(kk * width, T::zero());
                dcols.resize(kk * width, T::zero());
                let sample = bi * xs..(bi + 1) * xs;
                let (geom, dims, out) = (&self.geom, tiling.dims, tiling.out);
                let tile = (rows.clone(), skip);
                gather_rows(
                    &x[sample.clone()],
                    dims,
                    out,
                    geom,
                    tile.clone(),
                    &mut cols[..kk * width],
                );
                let dym = Mat::rows(dy[bi * o * n + rows.start * wo..].as_ptr(), n);
                let par = gemm::Parallelism::None;
                // SAFETY: dW[:, off..] (O, K') += dY_tile (O, width)·colsᵀ; dcols (K', width) =
                // W[:, off..]ᵀ·dY_tile; dW, W and dY rows are `k` and `n` apart, the rest
                // row-major.
                unsafe {
                    let (w_rows, cm) = (
                        Mat::rows(wt.as_ptr().add(off), k),
                        Mat::rows(cols.as_ptr(), width),
                    );
                    let dwp = dw.as_mut_ptr().add(off);
                    gemm_into([o, kk, width], dwp, k, true, dym, cm.t(), T::one(), par);
                    let dc = dcols.as_mut_ptr();
                    gemm_into(
                        [kk, width, o],
                        dc,
                        width,
                        false,
                        w_rows.t(),
                        dym,
                        T::one(),
                        par,
                    );
                }
                scatter_rows(&dcols[..kk * width], dims, out, geom, tile, &mut dx[sample]);
            },
            |(dx, dw), (dx2, dw2)| {
                dx.iter_mut().zip(dx2).for_each(|(a, b)| *a += b);
                dw.iter_mut().zip(dw2).for_each(|(a, b)| *a += b);
            },
        );
        let [kt, kh, kw] = self.geom.kernel;
        Ok((dx, swap_middle(&dw, [o, kt, self.in_dims[1], kh * kw])))
    }

    /// The `(O, C, kt, kh·kw)` weight in the column matrix's tap-major order.
    fn tap_major<T: Copy>(&self, wm: &[T]) -> Vec<T> {
        let [kt, kh, kw] = self.geom.kernel;
        swap_middle(wm, [self.out_channels, self.in_dims[1], kt, kh * kw])
    }
}

/// Output rows in tiles, the same for every sample; a job is one tile of one sample.
struct Tiling {
    /// Sample `(C, T, H, W)`.
    dims: [usize; 4],
    /// `(To, Ho, Wo)`.
    out: [usize; 3],
    /// Output-row range of each tile and how many leading temporal taps it leaves out.
    tiles: Vec<(std::ops::Range<usize>, usize)>,
}

impl Tiling {
    fn jobs(&self, batch: usize) -> usize {
        batch * self.tiles.len()
    }

    /// Sample index, output-row range and skipped taps of `job`.
    fn job(&self, job: usize) -> (usize, std::ops::Range<usize>, usize) {
        let (rows, skip) = &self.tiles[job % self.tiles.len()];
        (job / self.tiles.len(), rows.clone(), *skip)
    }
}

/// `(O, a, b, S)` → `(O, b, a, S)`: the weight between its `(O, C, kt, kh·kw)` layout and the
/// tap-major one of the column matrix (module docs), either way.
fn swap_middle<T: Copy>(w: &[T], [o, a, b, s]: [usize; 4]) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for oi in 0..o {
        for j in 0..b {
            for i in 0..a {
                let src = ((oi * a + i) * b + j) * s;
                out.extend_from_slice(&w[src..src + s]);
            }
        }
    }
    out
}

impl CustomOp2 for Conv3dOp {
    fn name(&self) -> &'static str {
        "conv3d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, _, n, o) = self.sizes()?;
        let shape = Shape::from((self.in_dims[0], o, n));
        let out = match (xs, ws) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.forward(
                contiguous_slice(x, xl, "conv3d")?,
                contiguous_slice(w, wl, "conv3d")?,
                None,
            )?),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(self.forward(
                contiguous_slice(x, xl, "conv3d")?,
                contiguous_slice(w, wl, "conv3d")?,
                None,
            )?),
            _ => candle_core::bail!(
                "conv3d: input {:?} and weight {:?} must both be f32 or both f64",
                xs.dtype(),
                ws.dtype()
            ),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: WithDType>(
            op: &Conv3dOp,
            x: &Tensor,
            w: &Tensor,
            dy: &Tensor,
        ) -> Result<(Tensor, Tensor)> {
            let (dx, dw) = with_slice::<T, _>(x, |xv| {
                with_slice::<T, _>(w, |wv| {
                    with_slice::<T, _>(dy, |dyv| op.backward(xv, wv, dyv))
                })
            })?;
            Ok((
                Tensor::from_vec(dx, x.shape(), x.device())?,
                Tensor::from_vec(dw, w.shape(), w.device())?,
            ))
        }
        let (dx, dw) = match x.dtype() {
            candle_core::DType::F32 => run::<f32>(self, x, w, dy)?,
            candle_core::DType::F64 => run::<f64>(self, x, w, dy)?,
            d => candle_core::bail!("conv3d: dtype {d:?} unsupported, convert to f32 or f64"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

/// 3D convolution `(B, C, T, H, W)` → `(B, O, To, Ho, Wo)` with weight `(O, C, kt, kh, kw)` and
/// optional bias `(O,)`. Differentiable in input, weight and bias; f32 and f64 on the CPU.
pub fn conv3d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geom: &Conv3dGeometry,
) -> Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let (o, wc, kt, kh, kw) = weight.dims5()?;
    if wc != c || [kt, kh, kw] != geom.kernel {
        candle_core::bail!(
            "conv3d: weight {:?} does not fit input channels {c} and kernel {:?}",
            weight.dims(),
            geom.kernel
        )
    }
    let [to, ho, wo] = geom.out_dims(t, h, w)?;
    if !x.device().is_cpu() {
        return conv3d_composed(x, weight, bias, geom);
    }
    if let Some(y) = crate::kernels::conv3d(x, weight, bias, geom)? {
        return Ok(y); // inference: tiled unfold + GEMM, no whole-clip column matrix
    }
    let w2 = weight.reshape((o, c * kt * kh * kw))?.contiguous()?;
    let op = Conv3dOp::new(*geom, [b, c, t, h, w], o);
    let mut y = x.contiguous()?.apply_op2(&w2, op)?; // (B, O, To·Ho·Wo)
    if let Some(bias) = bias {
        y = y.broadcast_add(&bias.reshape((1, o, 1))?)?;
    }
    y.reshape((b, o, to, ho, wo))
}

/// The same convolution from candle's own differentiable ops, for devices without our CPU op
/// (CUDA, Metal): zero padding, then one `conv2d` per temporal tap over the frames that tap
/// reads, summed. Slower than the unfold on a CPU (each tap re-reads its frames) but needs no
/// kernel of ours.
fn conv3d_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    geom: &Conv3dGeometry,
) -> Result<Tensor> {
    let (b, c, t, h, w) = x.dims5()?;
    let o = weight.dim(0)?;
    let [to, ho, wo] = geom.out_dims(t, h, w)?;
    let [kt, kh, kw] = geom.kernel;
    let [st, sh, sw] = geom.stride;
    if sh != sw {
        candle_core::bail!(
            "conv3d on {:?}: row stride {sh} ≠ column stride {sw} is CPU-only",
            x.device()
        )
    }
    // Cropped to the rows and columns some output reads: candle's conv2d backward cannot give
    // back an input that a strided kernel does not end on.
    let x = x
        .pad_with_zeros(2, geom.pad_t, 0)?
        .pad_with_zeros(3, geom.pad_h[0], geom.pad_h[1])?
        .pad_with_zeros(4, geom.pad_w[0], geom.pad_w[1])?
        .narrow(3, 0, (ho - 1) * sh + kh)?
        .narrow(4, 0, (wo - 1) * sw + kw)?
        .contiguous()?;
    let (hp, wp) = (x.dim(3)?, x.dim(4)?);
    let mut y: Option<Tensor> = None;
    for dt in 0..kt {
        // Frames dt, dt + st, …: one per output frame.
        let idx: Vec<u32> = (0..to).map(|ot| (ot * st + dt) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let frames = x
            .index_select(&idx, 2)? // (B, C, To, Hp, Wp)
            .permute((0, 2, 1, 3, 4))?
            .reshape((b * to, c, hp, wp))?;
        let k = weight.narrow(2, dt, 1)?.squeeze(2)?.contiguous()?; // (O, C, kh, kw)
        let part = frames.conv2d(&k, 0, sh, 1, 1)?;
        y = Some(match y {
            Some(acc) => (acc + part)?,
            None => part,
        });
    }
    let y = y
        .ok_or_else(|| candle_core::Error::Msg("conv3d: empty temporal kernel".into()))?
        .reshape((b, to, o, ho, wo))?
        .permute((0, 2, 1, 3, 4))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1, 1))?),
        None => y.contiguous(),
    }
}

/// Every convolution geometry the VAE uses, for the tests of both convolution paths.
#[cfg(test)]
pub(crate) fn vae_geometries() -> Vec<Conv3dGeometry> {
    let g = |kernel, stride, pad_t, pad_h, pad_w| Conv3dGeometry {
        kernel,
        stride,
        pad_t,
        pad_h,
        pad_w,
    };
    vec![
        // Wan's causal 3×3×3 with padding 1 (2 past frames).
        g([3, 3, 3], [1, 1, 1], 2, [1, 1], [1, 1]),
        // Pointwise (shortcuts, attention projections).
        g([1, 1, 1], [1, 1, 1], 0, [0, 0], [0, 0]),
        // Spatial downsample: ZeroPad2d((0, 1, 0, 1)) then 3×3 stride 2.
        g([1, 3, 3], [1, 2, 2], 0, [0, 1], [0, 1]),
        // Temporal downsample time_conv: 3×1×1 stride 2 in time.
        g([3, 1, 1], [2, 1, 1], 0, [0, 0], [0, 0]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Direct 7-loop convolution used as the reference.
    fn naive(x: &[f64], dims: [usize; 5], wt: &[f64], o: usize, g: &Conv3dGeometry) -> Vec<f64> {
        let [b, c, t, h, w] = dims;
        let [to, ho, wo] = g.out_dims(t, h, w).unwrap();
        let [kt, kh, kw] = g.kernel;
        let mut out = vec![0.0; b * o * to * ho * wo];
        for bi in 0..b {
            for oi in 0..o {
                for ot in 0..to {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut s = 0.0;
                            for ci in 0..c {
                                for dt in 0..kt {
                                    for dy in 0..kh {
                                        for dx in 0..kw {
                                            let it =
                                                (ot * g.stride[0] + dt) as isize - g.pad_t as isize;
                                            let iy = (oy * g.stride[1] + dy) as isize
                                                - g.pad_h[0] as isize;
                                            let ix = (ox * g.stride[2] + dx) as isize
                                                - g.pad_w[0] as isize;
                                            if it < 0
                                                || iy < 0
                                                || ix < 0
                                                || it >= t as isize
                                                || iy >= h as isize
                                                || ix >= w as isize
                                            {
                                                continue;
                                            }
                                            let xi = (((bi * c + ci) * t + it as usize) * h
                                                + iy as usize)
                                                * w
                                                + ix as usize;
                                            let wi =
                                                (((oi * c + ci) * kt + dt) * kh + dy) * kw + dx;
                                            s += x[xi] * wt[wi];
                                        }
                                    }
                                }
                            }
                            out[(((bi * o + oi) * to + ot) * ho + oy) * wo + ox] = s;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_convolution() -> Result<()> {
        let dev = Device::Cpu;
        // One and two frames: every output frame of a causal 3×3×3 skips padding-only taps.
        for (g, t) in vae_geometries()
            .into_iter()
            .flat_map(|g| [(g, 1), (g, 2), (g, 5)])
        {
            if g.out_dims(t, 6, 7).is_err() {
                continue; // the temporal downsample needs 3 frames
            }
            let dims = [2, 3, t, 6, 7];
            let o = 4;
            let x = Tensor::randn(0f64, 1.0, dims.to_vec(), &dev)?;
            let wt = Tensor::randn(
                0f64,
                1.0,
                (o, 3, g.kernel[0], g.kernel[1], g.kernel[2]),
                &dev,
            )?;
            let y = conv3d(&x, &wt, None, &g)?;
            let want = naive(
                &x.flatten_all()?.to_vec1()?,
                dims,
                &wt.flatten_all()?.to_vec1()?,
                o,
                &g,
            );
            let got: Vec<f64> = y.flatten_all()?.to_vec1()?;
            assert_eq!(got.len(), want.len());
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-10, "{g:?}: max err {err}");
        }
        Ok(())
    }

    /// Random f64 input `(B, C, T, H, W)`, weight for `o` outputs under `g`, and bias, as Vars.
    fn conv_vars(
        g: &Conv3dGeometry,
        dims: (usize, usize, usize, usize, usize),
        o: usize,
    ) -> Result<(candle_core::Var, candle_core::Var, candle_core::Var)> {
        let dev = Device::Cpu;
        let [kt, kh, kw] = g.kernel;
        Ok((
            candle_core::Var::randn(0f64, 1.0, dims, &dev)?,
            candle_core::Var::randn(0f64, 0.5, (o, dims.1, kt, kh, kw), &dev)?,
            candle_core::Var::randn(0f64, 0.5, o, &dev)?,
        ))
    }

    /// The composed path other devices take gives the CPU op's values and gradients.
    #[test]
    fn composed_path_matches_the_custom_op() -> Result<()> {
        let dev = Device::Cpu;
        for g in vae_geometries() {
            let (x, w, b) = conv_vars(&g, (2, 3, 5, 6, 7), 4)?;
            let ours = conv3d(&x, &w, Some(&b), &g)?;
            let composed = conv3d_composed(&x, &w, Some(&b), &g)?;
            assert_eq!(ours.dims(), composed.dims());
            let r = Tensor::randn(0f64, 1.0, ours.shape(), &dev)?;
            let ga = (&ours * &r)?.sum_all()?.backward()?;
            let gb = (&composed * &r)?.sum_all()?.backward()?;
            let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()
            };
            assert!(diff(&ours, &composed)? < 1e-10, "{g:?}: values differ");
            for v in [&x, &w, &b] {
                let d = diff(ga.get(v).expect("grad"), gb.get(v).expect("grad"))?;
                assert!(d < 1e-10, "{g:?}: gradients differ by {d}");
            }
        }
        Ok(())
    }

    /// `scatter_rows` must be the exact adjoint of `gather_rows`:
    /// <gather(x), c> == <x, scatter(c)>, for a tile of rows inside the output.
    #[test]
    fn scatter_is_adjoint_of_gather() -> Result<()> {
        let dev = Device::Cpu;
        let dims = [3, 5, 6, 7];
        for g in vae_geometries() {
            let out @ [to, ho, wo] = g.out_dims(5, 6, 7)?;
            let rows = 1..(to * ho).min(4);
            for skip in 0..g.kernel[0] {
                let len = g.k() / g.kernel[0] * (g.kernel[0] - skip) * 3 * rows.len() * wo;
                let x: Vec<f64> = Tensor::randn(0f64, 1.0, 3 * 5 * 6 * 7, &dev)?.to_vec1()?;
                let mut cols = vec![f64::NAN; len]; // every element must be written
                gather_rows(&x, dims, out, &g, (rows.clone(), skip), &mut cols);
                let c: Vec<f64> = Tensor::randn(0f64, 1.0, len, &dev)?.to_vec1()?;
                let mut back = vec![0f64; x.len()];
                scatter_rows(&c, dims, out, &g, (rows.clone(), skip), &mut back);
                let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
                let (lhs, rhs) = (dot(&cols, &c), dot(&x, &back));
                assert!(
                    (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
                    "{g:?}, skip {skip}: {lhs} vs {rhs}"
                );
            }
        }
        Ok(())
    }

    /// One output row per tile (many tiles, per-task gradient buffers summed) gives what one
    /// tile per sample gives, forward and backward.
    #[test]
    fn tiling_does_not_change_values_or_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (in_dims, o) = ([2, 3, 5, 6, 7], 4);
        for g in vae_geometries() {
            let x: Vec<f64> = Tensor::randn(0f64, 1.0, 2 * 3 * 5 * 6 * 7, &dev)?.to_vec1()?;
            let wm: Vec<f64> = Tensor::randn(0f64, 1.0, o * 3 * g.k(), &dev)?.to_vec1()?;
            let whole = Conv3dOp::new(g, in_dims, o);
            let tiny = Conv3dOp {
                tile: 1,
                ..Conv3dOp::new(g, in_dims, o)
            };
            assert!(
                g == vae_geometries()[1] || tiny.tiling()?.tiles.len() > 1,
                "{g:?}: one tile"
            );
            let y = whole.forward(&x, &wm, None)?;
            let dy: Vec<f64> = Tensor::randn(0f64, 1.0, y.len(), &dev)?.to_vec1()?;
            let max_diff = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max)
            };
            assert!(max_diff(&y, &tiny.forward(&x, &wm, None)?) < 1e-12, "{g:?}");
            let (dx, dw) = whole.backward(&x, &wm, &dy)?;
            let (dx2, dw2) = tiny.backward(&x, &wm, &dy)?;
            assert!(
                max_diff(&dx, &dx2) < 1e-12 && max_diff(&dw, &dw2) < 1e-12,
                "{g:?}"
            );
        }
        Ok(())
    }

    /// Autograd gradients of `sum(conv3d(x, w, b) · r)` against central finite differences.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for (g, t) in vae_geometries().into_iter().flat_map(|g| [(g, 1), (g, 5)]) {
            if g.out_dims(t, 5, 6).is_err() {
                continue;
            }
            let (x, w, b) = conv_vars(&g, (2, 2, t, 5, 6), 3)?;
            let y0 = conv3d(&x, &w, Some(&b), &g)?;
            let r = Tensor::randn(0f64, 1.0, y0.shape(), &dev)?;
            let f = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
                (conv3d(x, w, Some(b), &g)? * &r)?
                    .sum_all()?
                    .to_scalar::<f64>()
            };
            let grads = (conv3d(&x, &w, Some(&b), &g)? * &r)?
                .sum_all()?
                .backward()?;
            let mut worst = 0f64;
            for (var, which) in [(&x, 0), (&w, 1), (&b, 2)] {
                let grad: Vec<f64> = grads.get(var).expect("gradient").flatten_all()?.to_vec1()?;
                let base: Vec<f64> = var.flatten_all()?.to_vec1()?;
                for i in (0..base.len()).step_by(base.len().div_ceil(12)) {
                    let h = 1e-5;
                    let mut plus = base.clone();
                    plus[i] += h;
                    let mut minus = base.clone();
                    minus[i] -= h;
                    let mk = |v: Vec<f64>| Tensor::from_vec(v, var.shape(), &dev);
                    let (fp, fm) = match which {
                        0 => (f(&mk(plus)?, &w, &b)?, f(&mk(minus)?, &w, &b)?),
                        1 => (f(&x, &mk(plus)?, &b)?, f(&x, &mk(minus)?, &b)?),
                        _ => (f(&x, &w, &mk(plus)?)?, f(&x, &w, &mk(minus)?)?),
                    };
                    let fd = (fp - fm) / (2.0 * h);
                    worst = worst.max((fd - grad[i]).abs() / fd.abs().max(1.0));
                }
            }
            assert!(
                worst < 1e-7,
                "{g:?}: worst relative gradient error {worst:.2e}"
            );
        }
        Ok(())
    }
}
