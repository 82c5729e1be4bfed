//! CPU kernels (f32) for the VAE and the DiT, and the GEMM helper they share. Each entry point
//! returns `None` when it does not apply (another device or dtype; for `conv3d` and `linear` also
//! an input that needs gradients), and the caller then composes candle ops, which is also the
//! reference the tests compare against.
//!
//! - [`conv3d`]: inference entry to the tiled unfold + GEMM of `conv3d.rs` (each rayon task
//!   unfolds ~0.5 MB of columns into a reused buffer and multiplies it while it is in L2), with
//!   the bias added in place.
//! - [`linear`]: `x·Wᵀ + b` accumulated by one GEMM into bias-prefilled rows.
//! - [`channel_rms_norm`]: Wan's `F.normalize(x, dim=1)·√C·γ` (optionally followed by SiLU) in
//!   one pass over channel-first data, instead of candle's strided reduction plus five
//!   elementwise passes (each a fresh 100+ MB tensor at 256×256); an autograd op with its own
//!   backward (two passes), so VAE training uses it too.
//!
//! All use rayon (work stealing) rather than candle's spinning barrier pool, which stalls when
//! the machine is shared.

use candle_core::{DType, Result, Tensor, WithDType};
use rayon::prelude::*;

use crate::conv3d::{contiguous_slice, Conv3dGeometry, Conv3dOp};

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

/// Whether a tensor can take the inference path: f32 on the CPU and outside any autograd graph.
fn inference_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
}

/// Contiguous f32 data of `t` (copied only when strided).
fn f32_data(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Runs `f(accumulator, scratch, job)` for every job in `0..jobs`, in a few splits per thread
/// that each own an accumulator from `zero()` (and reusable scratch), and returns the splits'
/// sum under `add`. For gradients that overlapping jobs add into, so cannot share one buffer.
pub(crate) fn sum_over_splits<A: Send, S: Default + Send>(
    jobs: usize,
    zero: impl Fn() -> A + Sync + Send,
    f: impl Fn(&mut A, &mut S, usize) + Sync + Send,
    add: impl Fn(&mut A, A) + Sync + Send,
) -> A {
    let per_split = jobs.div_ceil(2 * rayon::current_num_threads().max(1));
    (0..jobs)
        .into_par_iter()
        .with_min_len(per_split.max(1))
        .fold(
            || (zero(), S::default()),
            |(mut acc, mut scratch), job| {
                f(&mut acc, &mut scratch, job);
                (acc, scratch)
            },
        )
        .map(|(acc, _)| acc)
        .reduce_with(|mut a, b| {
            add(&mut a, b);
            a
        })
        .unwrap_or_else(&zero)
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
pub(crate) struct SharedMut<T>(pub(crate) *mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: every task writes a disjoint set of indices (argued at each use).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

/// A GEMM operand: a pointer and its column and row strides (a transpose is a stride swap).
pub(crate) struct Mat<T> {
    pub(crate) ptr: *const T,
    pub(crate) cs: usize,
    pub(crate) rs: usize,
}
impl<T> Clone for Mat<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Mat<T> {}

impl<T> Mat<T> {
    /// Row-major rows `rs` elements apart.
    pub(crate) fn rows(ptr: *const T, rs: usize) -> Self {
        Self { ptr, cs: 1, rs }
    }

    pub(crate) fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            cs: self.rs,
            rs: self.cs,
        }
    }
}

/// `dst (m×n, rows dst_rs apart) = [dst +] beta·a·b` through the `gemm` crate (candle's own).
///
/// # Safety
/// `dst` must be valid for writes and `a` (`m×k`), `b` (`k×n`) for reads at every index their
/// strides reach, and `dst` must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into<T: WithDType>(
    [m, n, k]: [usize; 3],
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    a: Mat<T>,
    b: Mat<T>,
    beta: T,
    parallelism: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.ptr,
        a.cs as isize,
        a.rs as isize,
        b.ptr,
        b.cs as isize,
        b.rs as isize,
        T::one(),
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

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
                    let (xm, wm) = (Mat::rows(xs.as_ptr(), k), Mat::rows(ws.as_ptr(), k));
                    let par = gemm::Parallelism::Rayon(0);
                    gemm_into([m, n, k], out.as_mut_ptr(), n, true, xm, wm.t(), 1f32, par)
                };
                Ok(())
            })
        })?;
    }
    dims.push(n);
    Ok(Some(Tensor::from_vec(out, dims, x.device())?))
}

/// 3D convolution `(B, C, T, H, W)` with weight `(O, C, kt, kh, kw)` → `(B, O, To, Ho, Wo)`, same
/// semantics as [`crate::conv3d::conv3d`]; `None` when the inference path does not apply. The
/// same tiled unfold + GEMM as the training op, with the bias added while each tile is in cache.
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
    let wmat = f32_data(weight)?; // (O, K)
    let bias = bias.map(f32_data).transpose()?;
    let op = Conv3dOp::new(*geom, [b, c, t, h, w], o);
    let out = with_slice(x, |src: &[f32]| op.forward(src, &wmat, bias.as_deref()))?;
    Ok(Some(Tensor::from_vec(out, (b, o, to, ho, wo), x.device())?))
}

/// Wan's channel RMS norm of `(B, C, S…)` with gain `gamma` (`C` elements, any shape):
/// `x / √(mean_c(x²) + eps) · γ`, then SiLU when `silu`, as one autograd op with its own
/// backward. `None` off the CPU or for other dtypes than f32 (the caller composes candle ops).
pub fn channel_rms_norm(
    x: &Tensor,
    gamma: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !f32_cpu(x) || !f32_cpu(gamma) || x.rank() < 2 || gamma.elem_count() != x.dim(1)? {
        return Ok(None);
    }
    let op = ChannelRmsNorm {
        eps: eps as f32,
        silu,
    };
    Ok(Some(x.contiguous()?.apply_op2(&gamma.contiguous()?, op)?))
}

struct ChannelRmsNorm {
    eps: f32,
    silu: bool,
}

/// Positions per task: each task reads `C` strided rows of this many floats.
const NORM_BLOCK: usize = 1024;

impl ChannelRmsNorm {
    /// `(B, C, S)` from a `(B, C, S…)` shape.
    fn dims(shape: &candle_core::Shape) -> (usize, usize, usize) {
        let d = shape.dims();
        (d[0], d[1], d[2..].iter().product())
    }

    /// `1/√(mean_c(x²) + eps)` of positions `p0..p0+r.len()` of sample `bi`, into `r`.
    fn inv_rms(&self, x: &[f32], (bi, c, s): (usize, usize, usize), p0: usize, r: &mut [f32]) {
        r.fill(0.0);
        for ci in 0..c {
            let row = &x[(bi * c + ci) * s + p0..][..r.len()];
            r.iter_mut().zip(row).for_each(|(a, &v)| *a += v * v);
        }
        let inv_c = 1.0 / c as f32;
        r.iter_mut()
            .for_each(|a| *a = 1.0 / (*a * inv_c + self.eps).sqrt());
    }
}

fn sigmoid(y: f32) -> f32 {
    1.0 / (1.0 + (-y).exp())
}

impl candle_core::CustomOp2 for ChannelRmsNorm {
    fn name(&self) -> &'static str {
        "channel-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
        gs: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (x, g) = (cpu_f32(xs, xl)?, cpu_f32(gs, gl)?);
        let (b, c, s) = Self::dims(xl.shape());
        let mut out = vec![0f32; x.len()];
        let blocks = s.div_ceil(NORM_BLOCK);
        let dst = SharedMut(out.as_mut_ptr());
        (0..b * blocks)
            .into_par_iter()
            .for_each_init(Vec::new, |r: &mut Vec<f32>, job| {
                let (bi, p0) = (job / blocks, job % blocks * NORM_BLOCK);
                r.resize((s - p0).min(NORM_BLOCK), 0.0);
                self.inv_rms(x, (bi, c, s), p0, r);
                let d = dst;
                for (ci, &gv) in g.iter().enumerate() {
                    let off = (bi * c + ci) * s + p0;
                    // SAFETY: positions p0..p0+len of sample `bi` belong to this task alone.
                    let out = unsafe { std::slice::from_raw_parts_mut(d.0.add(off), r.len()) };
                    for ((o, &v), &ri) in out.iter_mut().zip(&x[off..]).zip(r.iter()) {
                        let y = v * ri * gv;
                        *o = if self.silu { y * sigmoid(y) } else { y };
                    }
                }
            });
        Ok((candle_core::CpuStorage::F32(out), xl.shape().clone()))
    }

    /// With `y = x·r·γ` (`r` the inverse RMS over channels) and `gy` the gradient at `y` (through
    /// SiLU when fused): `dγ_c = Σ gy·x·r`, `dx = r·γ·gy − x·r³·Σ_c(γ·gy·x)/C`.
    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = Self::dims(x.shape());
        let (dx, dg) = with_slice(x, |x: &[f32]| {
            with_slice(gamma, |g: &[f32]| {
                with_slice(grad, |dy: &[f32]| Ok(self.backward(x, g, dy, dims)))
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dg, gamma.shape(), gamma.device())?),
        ))
    }
}

impl ChannelRmsNorm {
    /// `(dx, dγ)` for the output gradient `dy`, position blocks in parallel (`dγ` summed over
    /// the splits).
    fn backward(
        &self,
        x: &[f32],
        g: &[f32],
        dy: &[f32],
        (b, c, s): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let blocks = s.div_ceil(NORM_BLOCK);
        let mut dx = vec![0f32; b * c * s];
        let dst = SharedMut(dx.as_mut_ptr());
        let dg = sum_over_splits(
            b * blocks,
            || vec![0f32; c],
            |dg: &mut Vec<f32>, (r, dot): &mut (Vec<f32>, Vec<f32>), job| {
                let (bi, p0) = (job / blocks, job % blocks * NORM_BLOCK);
                let len = (s - p0).min(NORM_BLOCK);
                r.resize(len, 0.0);
                self.inv_rms(x, (bi, c, s), p0, r);
                dot.clear();
                dot.resize(len, 0.0);
                let d = dst;
                // gy into dx's rows first, then the full gradient in place.
                for (ci, &gv) in g.iter().enumerate() {
                    let off = (bi * c + ci) * s + p0;
                    // SAFETY: positions p0..p0+len of sample `bi` are this task's.
                    let gy = unsafe { std::slice::from_raw_parts_mut(d.0.add(off), len) };
                    let mut dgc = 0f32;
                    for (((gyi, &v), &ri), (&dyi, di)) in gy
                        .iter_mut()
                        .zip(&x[off..])
                        .zip(r.iter())
                        .zip(dy[off..].iter().zip(dot.iter_mut()))
                    {
                        let xr = v * ri;
                        let mut gi = dyi;
                        if self.silu {
                            let y = xr * gv;
                            let sg = sigmoid(y);
                            gi *= sg * (1.0 + y * (1.0 - sg));
                        }
                        *gyi = gi;
                        dgc += gi * xr;
                        *di += gv * gi * v;
                    }
                    dg[ci] += dgc;
                }
                let inv_c = 1.0 / c as f32;
                for (ci, &gv) in g.iter().enumerate() {
                    let off = (bi * c + ci) * s + p0;
                    // SAFETY: as above.
                    let gy = unsafe { std::slice::from_raw_parts_mut(d.0.add(off), len) };
                    for (((o, &v), &ri), &dt) in
                        gy.iter_mut().zip(&x[off..]).zip(r.iter()).zip(dot.iter())
                    {
                        *o = ri * gv * *o - v * ri * ri * ri * dt * inv_c;
                    }
                }
            },
            |a, b| a.iter_mut().zip(b).for_each(|(p, q)| *p += q),
        );
        (dx, dg)
    }
}

/// The contiguous f32 data of a CPU storage.
fn cpu_f32<'a>(s: &'a candle_core::CpuStorage, l: &candle_core::Layout) -> Result<&'a [f32]> {
    match s {
        candle_core::CpuStorage::F32(d) => contiguous_slice(d, l, "channel rms norm"),
        _ => candle_core::bail!("channel rms norm: expects f32"),
    }
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

    /// The op's own backward (several position blocks, split `dγ` sums) against candle's
    /// autograd through the composed ops, with and without the fused SiLU.
    #[test]
    fn channel_norm_gradients_match_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 2.0, (2, 5, 3, 7, 130), &dev)?;
        let gamma = Var::randn(1f32, 0.2, (5, 1, 1, 1), &dev)?;
        let r = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
        let eps = 1e-12;
        for silu in [false, true] {
            let ms = x.sqr()?.mean_keepdim(1)?;
            let want = x
                .broadcast_div(&(ms + eps)?.sqrt()?)?
                .broadcast_mul(&gamma.reshape((1, 5, 1, 1, 1))?)?;
            let want = if silu { want.silu()? } else { want };
            let got = channel_rms_norm(&x, &gamma, eps, silu)?.expect("applies");
            let gw = (want * &r)?.sum_all()?.backward()?;
            let gg = (got * &r)?.sum_all()?.backward()?;
            for v in [&x, &gamma] {
                let (a, b) = (gg.get(v).expect("grad"), gw.get(v).expect("grad"));
                let scale = b.abs()?.max_keepdim(0)?.max_all()?.to_scalar::<f32>()?;
                let e = max_diff(a, b);
                assert!(
                    e < 1e-5 * scale.max(1.0),
                    "silu {silu}: {e} (scale {scale})"
                );
            }
        }
        Ok(())
    }
}
