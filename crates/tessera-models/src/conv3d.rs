//! 3D convolution for candle, which has none: a differentiable im2col custom op plus one GEMM.
//!
//! `im2col` unfolds `(C, T, H, W)` into `(C·kt·kh·kw, To·Ho·Wo)` with the zero padding folded
//! into the gather (no padded copy of the input); the convolution is then `W(O, K) @ cols(K, N)`,
//! which lands directly in the channel-first `(B, O, To, Ho, Wo)` layout the model uses, so no
//! permute is needed on the way out. The backward of the unfold is the matching scatter-add
//! (`col2im`); unfold, GEMM and their backward are one custom op. One unfold per layer (instead of
//! one conv2d per temporal tap, each re-unfolding the same frames) is why this is faster than
//! stacking conv2d.
//!
//! Causality lives in the padding: `Conv3dGeometry::pad_t` pads only the past.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::with_slice;

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

fn im2col<T: WithDType>(src: &[T], geom: &Conv3dGeometry, in_dims: [usize; 5]) -> Result<Vec<T>> {
    let [b, c, t, h, w] = in_dims;
    let [to, ho, wo] = geom.out_dims(t, h, w)?;
    let [kt, kh, kw] = geom.kernel;
    let [st, sh, sw] = geom.stride;
    let n = to * ho * wo;
    let k = c * kt * kh * kw;
    let mut dst = vec![T::zero(); b * k * n];
    dst.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
        let bi = row / k;
        let r = row % k;
        let dx = r % kw;
        let dy = (r / kw) % kh;
        let dt = (r / (kw * kh)) % kt;
        let ci = r / (kw * kh * kt);
        let plane = &src[(bi * c + ci) * t * h * w..(bi * c + ci + 1) * t * h * w];
        let (t0, t1) = valid_range(to, t, st, dt, geom.pad_t);
        let (y0, y1) = valid_range(ho, h, sh, dy, geom.pad_h[0]);
        let (x0, x1) = valid_range(wo, w, sw, dx, geom.pad_w[0]);
        for ot in t0..t1 {
            let it = ot * st + dt - geom.pad_t;
            for oy in y0..y1 {
                let iy = oy * sh + dy - geom.pad_h[0];
                let src_row = &plane[(it * h + iy) * w..(it * h + iy + 1) * w];
                let dst_row = &mut out[(ot * ho + oy) * wo..(ot * ho + oy + 1) * wo];
                if sw == 1 {
                    let ix0 = x0 + dx - geom.pad_w[0];
                    dst_row[x0..x1].copy_from_slice(&src_row[ix0..ix0 + (x1 - x0)]);
                } else {
                    for ox in x0..x1 {
                        dst_row[ox] = src_row[ox * sw + dx - geom.pad_w[0]];
                    }
                }
            }
        }
    });
    Ok(dst)
}

fn col2im<T: WithDType>(cols: &[T], geom: &Conv3dGeometry, in_dims: [usize; 5]) -> Result<Vec<T>> {
    let [b, c, t, h, w] = in_dims;
    let [to, ho, wo] = geom.out_dims(t, h, w)?;
    let [kt, kh, kw] = geom.kernel;
    let [st, sh, sw] = geom.stride;
    let n = to * ho * wo;
    let kk = kt * kh * kw;
    let mut dst = vec![T::zero(); b * c * t * h * w];
    // One task per (batch, channel) plane: each plane receives only its own kk rows, so no races.
    dst.par_chunks_mut(t * h * w)
        .enumerate()
        .for_each(|(plane_idx, plane)| {
            for tap in 0..kk {
                let dx = tap % kw;
                let dy = (tap / kw) % kh;
                let dt = tap / (kw * kh);
                let row = &cols[(plane_idx * kk + tap) * n..(plane_idx * kk + tap + 1) * n];
                let (t0, t1) = valid_range(to, t, st, dt, geom.pad_t);
                let (y0, y1) = valid_range(ho, h, sh, dy, geom.pad_h[0]);
                let (x0, x1) = valid_range(wo, w, sw, dx, geom.pad_w[0]);
                for ot in t0..t1 {
                    let it = ot * st + dt - geom.pad_t;
                    for oy in y0..y1 {
                        let iy = oy * sh + dy - geom.pad_h[0];
                        let src_row = &row[(ot * ho + oy) * wo..(ot * ho + oy + 1) * wo];
                        let dst_row = &mut plane[(it * h + iy) * w..(it * h + iy + 1) * w];
                        for ox in x0..x1 {
                            dst_row[ox * sw + dx - geom.pad_w[0]] += src_row[ox];
                        }
                    }
                }
            }
        });
    Ok(dst)
}

fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// The whole convolution as one autograd node, `(x, W (O, K)) → (B, O, To·Ho·Wo)`. Its backward
/// recomputes each sample's columns and returns `dW = Σ dY·colsᵀ` and `dX = col2im(Wᵀ·dY)`
/// directly. Built from separate candle ops (unfold, per-sample matmul, stack), the `(K, N)` column
/// gradient was zero-filled, accumulated and re-stacked for every sample: most of a VAE training
/// step was that memory traffic rather than the GEMMs.
struct Conv3dOp {
    geom: Conv3dGeometry,
    in_dims: [usize; 5],
    out_channels: usize,
}

/// `dst (m, n) = a (m, k) · b (k, n)` (+ `dst` when `accumulate`), each operand given by its
/// (column stride, row stride) so transposes are free.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: WithDType>(
    [m, n, k]: [usize; 3],
    dst: &mut [T],
    accumulate: bool,
    a: &[T],
    [a_cs, a_rs]: [isize; 2],
    b: &[T],
    [b_cs, b_rs]: [isize; 2],
) {
    // SAFETY: the callers size `dst`, `a` and `b` for these shapes and strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

impl Conv3dOp {
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

    fn sample_dims(&self) -> [usize; 5] {
        let [_, c, t, h, w] = self.in_dims;
        [1, c, t, h, w]
    }

    /// One sample's `(K, N)` columns; a pointwise convolution's input already is its own.
    fn columns<'a, T: WithDType>(&self, xb: &'a [T]) -> Result<std::borrow::Cow<'a, [T]>> {
        let g = &self.geom;
        let pointwise = g.kernel == [1, 1, 1]
            && g.stride == [1, 1, 1]
            && g.pad_t == 0
            && g.pad_h == [0, 0]
            && g.pad_w == [0, 0];
        Ok(if pointwise {
            std::borrow::Cow::Borrowed(xb)
        } else {
            std::borrow::Cow::Owned(im2col(xb, g, self.sample_dims())?)
        })
    }

    fn forward<T: WithDType>(&self, x: &[T], wm: &[T]) -> Result<Vec<T>> {
        let (xs, k, n, o) = self.sizes()?;
        let mut y = vec![T::zero(); self.in_dims[0] * o * n];
        for (xb, yb) in x.chunks(xs).zip(y.chunks_mut(o * n)) {
            let cols = self.columns(xb)?;
            gemm_into(
                [o, n, k],
                yb,
                false,
                wm,
                [1, k as isize],
                &cols,
                [1, n as isize],
            );
        }
        Ok(y)
    }

    /// `(dX, dW)` for the output gradient `dy`.
    fn backward<T: WithDType>(&self, x: &[T], wm: &[T], dy: &[T]) -> Result<(Vec<T>, Vec<T>)> {
        let (xs, k, n, o) = self.sizes()?;
        let mut dx = Vec::with_capacity(x.len());
        let mut dw = vec![T::zero(); o * k];
        let mut dcols = vec![T::zero(); k * n];
        for (bi, (xb, dyb)) in x.chunks(xs).zip(dy.chunks(o * n)).enumerate() {
            let cols = self.columns(xb)?;
            // dW (O, K) += dY (O, N) · colsᵀ (N, K)
            let cols_t = [n as isize, 1];
            gemm_into(
                [o, k, n],
                &mut dw,
                bi > 0,
                dyb,
                [1, n as isize],
                &cols,
                cols_t,
            );
            // dcols (K, N) = Wᵀ (K, O) · dY (O, N)
            let w_t = [k as isize, 1];
            gemm_into([k, n, o], &mut dcols, false, wm, w_t, dyb, [1, n as isize]);
            dx.extend(col2im(&dcols, &self.geom, self.sample_dims())?);
        }
        Ok((dx, dw))
    }
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
            )?),
            (CpuStorage::F64(x), CpuStorage::F64(w)) => CpuStorage::F64(self.forward(
                contiguous_slice(x, xl, "conv3d")?,
                contiguous_slice(w, wl, "conv3d")?,
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
    let op = Conv3dOp {
        geom: *geom,
        in_dims: [b, c, t, h, w],
        out_channels: o,
    };
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
        for g in vae_geometries() {
            let dims = [2, 3, 5, 6, 7];
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

    /// `col2im` must be the exact adjoint of `im2col`: <im2col(x), c> == <x, col2im(c)>.
    #[test]
    fn col2im_is_adjoint_of_im2col() -> Result<()> {
        let dev = Device::Cpu;
        let dims = [1, 3, 5, 6, 7];
        for g in vae_geometries() {
            let x: Vec<f64> = Tensor::randn(0f64, 1.0, 3 * 5 * 6 * 7, &dev)?.to_vec1()?;
            let cols = im2col(&x, &g, dims)?;
            let c: Vec<f64> = Tensor::randn(0f64, 1.0, cols.len(), &dev)?.to_vec1()?;
            let back = col2im(&c, &g, dims)?;
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let (lhs, rhs) = (dot(&cols, &c), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
        Ok(())
    }

    /// Autograd gradients of `sum(conv3d(x, w, b) · r)` against central finite differences.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for g in vae_geometries() {
            let (x, w, b) = conv_vars(&g, (2, 2, 5, 5, 6), 3)?;
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
