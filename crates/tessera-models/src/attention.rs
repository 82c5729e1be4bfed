//! Scaled dot-product attention for the DiT and the text encoder.
//!
//! Two implementations of one function, `softmax(q·kᵀ/√d + mask)·v`:
//! - [`AttentionImpl::Tiled`]: a CPU kernel in the style of FlashAttention (Dao et al. 2022,
//!   <https://arxiv.org/abs/2205.14135>): query and key blocks with an online softmax, so the
//!   `L×L` score matrix never exists; the block products `Q·Kᵀ` and `P·V` are GEMMs (the `gemm`
//!   crate), the softmax is ours. Its exact backward recomputes the probabilities of 64 query
//!   rows at a time (memory `O(64·Lk)` per task), so training uses it too.
//! - [`AttentionImpl::Naive`]: matmul + an exp/sum softmax built from differentiable candle ops;
//!   the reference the kernel is tested against and the path on non-CPU devices.
//!
//! Key padding: `key_mask` `(B, Lk)` holds 1 for real tokens and 0 for padding. A query whose keys
//! are all padding (an empty prompt) attends to nothing and gets a zero output, in both paths.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::{gemm_into, Mat};
use crate::layers::fast_exp;

/// Every GEMM here runs inside a rayon task.
const NO_PAR: gemm::Parallelism = gemm::Parallelism::None;

/// Which implementation [`attention`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionImpl {
    /// Online-softmax CPU kernel with an exact backward; memory `O(L·d)` in the forward pass.
    #[default]
    Tiled,
    /// Full score matrix from differentiable candle ops (any device).
    Naive,
}

/// Multi-head attention.
///
/// `q`: `(B, H, Lq, D)`, `k`/`v`: `(B, H, Lk, D)`, `key_mask`: `(B, Lk)` with 1 = attend,
/// 0 = padding. Returns `(B, H, Lq, D)`. The softmax scale is `1/√D`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    imp: AttentionImpl,
) -> Result<Tensor> {
    let (b, h, _lq, d) = q.dims4()?;
    let (bk, hk, lk, dk) = k.dims4()?;
    if (bk, hk, dk) != (b, h, d) || v.dims() != k.dims() {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} disagree (want q (B,H,Lq,D), k = v (B,H,Lk,D))",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    if let Some(m) = key_mask {
        if m.dims() != [b, lk] {
            candle_core::bail!("attention: key mask {:?}, expected ({b}, {lk})", m.dims())
        }
    }
    let scale = 1.0 / (d as f64).sqrt();
    let tiled_ok = q.device().is_cpu() && q.dtype() == DType::F32;
    match imp {
        AttentionImpl::Tiled if tiled_ok => {
            let key_valid = match key_mask {
                Some(m) => Some(
                    m.to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .into_iter()
                        .map(|x| x > 0.5)
                        .collect(),
                ),
                None => None,
            };
            let op = TiledAttention {
                scale: scale as f32,
                key_valid,
            };
            unit_last(q)?.apply_op3(&unit_last(k)?, &unit_last(v)?, op)
        }
        _ => naive_attention(q, k, v, key_mask, scale),
    }
}

/// Reference path: every op here has a candle backward.
fn naive_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let s = (q.contiguous()?.matmul(&k.contiguous()?.t()?)? * scale)?; // (B, H, Lq, Lk)
    masked_softmax(&s, key_mask)?.matmul(&v.contiguous()?)
}

/// Softmax over the last dim of `(B, H, Lq, Lk)` scores with a `(B, Lk)` key mask; rows with no
/// valid key become all-zero instead of NaN.
fn masked_softmax(s: &Tensor, key_mask: Option<&Tensor>) -> Result<Tensor> {
    let Some(mask) = key_mask else {
        return candle_nn::ops::softmax(s, D::Minus1);
    };
    let (b, lk) = mask.dims2()?;
    let mask = mask.to_dtype(s.dtype())?.reshape((b, 1, 1, lk))?.detach();
    // Padding must not win the max; the product with `mask` below zeroes it exactly.
    let bias = ((&mask - 1.0)? * 1e9)?;
    let s = s.broadcast_add(&bias)?;
    // The max only stabilises exp; it cancels in the ratio, so no gradient flows through it.
    let m = s.max_keepdim(D::Minus1)?.detach();
    let e = s.broadcast_sub(&m)?.exp()?.broadcast_mul(&mask)?;
    let empty = mask.sum_keepdim(D::Minus1)?.eq(0.0)?.to_dtype(s.dtype())?;
    let z = e.sum_keepdim(D::Minus1)?.broadcast_add(&empty)?;
    e.broadcast_div(&z)
}

/// Query rows per parallel task: `B·H·Lq/QB` tasks keep every core busy at the DiT's sizes.
const QB: usize = 64;
/// Keys per block: the `QB×KB` score tile (128 KiB) stays in L2 between the two GEMMs that
/// write and read it, and each GEMM is large enough to run near the `gemm` crate's peak.
const KB: usize = 512;

struct TiledAttention {
    scale: f32,
    /// `B·Lk` flags, batch-major; `None` = every key valid.
    key_valid: Option<Vec<bool>>,
}

/// A `(B, H, L, D)` operand read in place: any strides, as long as `D` is contiguous (so the
/// DiT's `(B, L, H, D)` projections need no transposed copy).
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    start: usize,
    /// Strides of B, H and L.
    stride: [usize; 3],
}

impl<'a> Strided<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Self> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("tiled attention: {what} must be f32")
        };
        let st = l.stride();
        if st[3] != 1 && l.dims()[3] > 1 {
            candle_core::bail!("tiled attention: {what}'s last dim must be contiguous")
        }
        Ok(Self {
            data,
            start: l.start_offset(),
            stride: [st[0], st[1], st[2]],
        })
    }

    fn index(&self, b: usize, h: usize, l: usize) -> usize {
        self.start + b * self.stride[0] + h * self.stride[1] + l * self.stride[2]
    }

    /// Row `l` of head `h` in batch `b`, `len` floats.
    fn row_slice(&self, b: usize, h: usize, l: usize, len: usize) -> &'a [f32] {
        let i = self.index(b, h, l);
        &self.data[i..i + len]
    }

    /// Pointer to row `l` of head `h` in batch `b`.
    fn row(&self, b: usize, h: usize, l: usize) -> *const f32 {
        self.data[self.index(b, h, l)..].as_ptr()
    }
}

impl CustomOp3 for TiledAttention {
    fn name(&self) -> &'static str {
        "tiled-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = Strided::new(s1, l1, "q")?;
        let k = Strided::new(s2, l2, "k")?;
        let v = Strided::new(s3, l3, "v")?;
        let (b, h, lq, d) = l1.shape().dims4()?;
        let lk = l2.shape().dims4()?.2;
        let dims = Dims { b, h, lq, lk, d };
        let out = tiled_forward(q, k, v, dims, self.scale, self.key_valid.as_deref());
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// Exact gradients, `QB` query rows at a time with their probabilities `P` recomputed:
    /// `dV = Pᵀ·dO`, `dS = P∘(dO·Vᵀ − rowsum(dO∘O))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let go = unit_last(grad_out)?;
        let guards = [q, k, v, out, &go].map(|t| t.storage_and_layout());
        let view = |i: usize, what: &str| -> Result<Strided> {
            match &*guards[i].0 {
                candle_core::Storage::Cpu(c) => Strided::new(c, guards[i].1, what),
                _ => candle_core::bail!("tiled attention: {what} must be on the CPU"),
            }
        };
        let (b, h, lq, d) = q.dims4()?;
        let lk = k.dim(2)?;
        let dims = Dims { b, h, lq, lk, d };
        let [q_, k_, v_, o_, go_] = [
            view(0, "q")?,
            view(1, "k")?,
            view(2, "v")?,
            view(3, "out")?,
            view(4, "grad")?,
        ];
        let (dq, dk, dv) = tiled_backward(
            [q_, k_, v_, o_, go_],
            dims,
            self.scale,
            self.key_valid.as_deref(),
        );
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `t` itself when its last dim is contiguous (what the kernel reads in place), else a copy.
fn unit_last(t: &Tensor) -> Result<Tensor> {
    match t.stride().last() {
        Some(1) => Ok(t.clone()),
        _ => t.contiguous(),
    }
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    lq: usize,
    lk: usize,
    d: usize,
}

/// Returns `(B, H, Lq, D)` row-major. Each task takes `QB` query rows of one head through the
/// keys `KB` at a time: `S = s·Q·Kᵀ` (GEMM), online-softmax update, `O += P·V` (GEMM).
fn tiled_forward(
    q: Strided,
    k: Strided,
    v: Strided,
    n: Dims,
    scale: f32,
    key_valid: Option<&[bool]>,
) -> Vec<f32> {
    let Dims { b, h, lq, lk, d } = n;
    let mut out = vec![0f32; b * h * lq * d];
    if lq == 0 || d == 0 {
        return out;
    }
    out.par_chunks_mut(lq * d)
        .enumerate()
        .flat_map_iter(|(head, o)| {
            o.chunks_mut(QB * d)
                .enumerate()
                .map(move |(i, o)| (head, i, o))
        })
        .for_each_init(Vec::new, |scores, (head, qb, o)| {
            let (bi, hi) = (head / h, head % h);
            let rows = o.len() / d;
            let valid = key_valid.map(|kv| &kv[bi * lk..(bi + 1) * lk]);
            let mut state = RowState::new(rows);
            scores.resize(rows * KB, 0f32);
            for k0 in (0..lk).step_by(KB) {
                let kn = (lk - k0).min(KB);
                let s = &mut scores[..rows * kn];
                let km = Mat::rows(k.row(bi, hi, k0), k.stride[2]);
                // SAFETY: `s` is (rows, kn); q's rows qb·QB.. and k's and v's rows k0..k0+kn of
                // this head exist (strides from their layouts); `o` is (rows, d).
                unsafe {
                    let qm = Mat::rows(q.row(bi, hi, qb * QB), q.stride[2]);
                    gemm_into(
                        [rows, kn, d],
                        s.as_mut_ptr(),
                        kn,
                        false,
                        qm,
                        km.t(),
                        scale,
                        NO_PAR,
                    );
                }
                state.update(s, kn, valid.map(|v| &v[k0..k0 + kn]));
                for (row, &c) in o.chunks_exact_mut(d).zip(&state.corr) {
                    if c != 1.0 {
                        row.iter_mut().for_each(|a| *a *= c);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    let vm = Mat::rows(v.row(bi, hi, k0), v.stride[2]);
                    gemm_into(
                        [rows, d, kn],
                        o.as_mut_ptr(),
                        d,
                        true,
                        Mat::rows(s.as_ptr(), kn),
                        vm,
                        1.0,
                        NO_PAR,
                    );
                }
            }
            state.normalise(o, d);
        });
    out
}

/// Online-softmax state of a block of query rows: running max and sum of exponentials, and
/// the factor each row's output accumulator must be rescaled by after the last update.
struct RowState {
    max: Vec<f32>,
    sum: Vec<f32>,
    corr: Vec<f32>,
}

impl RowState {
    fn new(rows: usize) -> Self {
        Self {
            max: vec![f32::NEG_INFINITY; rows],
            sum: vec![0f32; rows],
            corr: vec![1f32; rows],
        }
    }

    /// Turns the scores `s` `(rows, kn)` into `exp(s − max)` in place (padding keys: 0) and
    /// folds them into the running sums.
    fn update(&mut self, s: &mut [f32], kn: usize, valid: Option<&[bool]>) {
        #[cfg(target_arch = "x86_64")]
        if crate::layers::has_avx2_fma() {
            // SAFETY: AVX2 and FMA presence checked.
            unsafe { self.update_avx2(s, kn, valid) };
            return;
        }
        // FMA is baseline on aarch64; elsewhere mul_add would be a libm call.
        self.update_with::<{ cfg!(target_arch = "aarch64") }>(s, kn, valid)
    }

    /// Divides each row of `rows` (`width` wide) by its running sum; rows that saw no valid key
    /// become zero.
    fn normalise(&self, rows: &mut [f32], width: usize) {
        for (row, &l) in rows.chunks_exact_mut(width).zip(&self.sum) {
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn update_avx2(&mut self, s: &mut [f32], kn: usize, valid: Option<&[bool]>) {
        self.update_with::<true>(s, kn, valid)
    }

    #[inline(always)]
    fn update_with<const FMA: bool>(&mut self, s: &mut [f32], kn: usize, valid: Option<&[bool]>) {
        let state = self.max.iter_mut().zip(&mut self.sum).zip(&mut self.corr);
        for (row, ((m, l), c)) in s.chunks_exact_mut(kn).zip(state) {
            if let Some(valid) = valid {
                for (x, &ok) in row.iter_mut().zip(valid) {
                    if !ok {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let m_new = m.max(max_lanes(row));
            if m_new == f32::NEG_INFINITY {
                row.fill(0.0); // no valid key yet: contributes nothing
                *c = 1.0;
                continue;
            }
            *c = fast_exp::<FMA>(*m - m_new);
            for x in row.iter_mut() {
                *x = fast_exp::<FMA>(*x - m_new);
            }
            *l = *l * *c + sum_lanes(row);
            *m = m_new;
        }
    }
}

/// `(dQ, dK, dV)` row-major for operands `[q, k, v, out, grad_out]`. One task per batch·head
/// (its `dK`, `dV` accumulate over query blocks); per block of `QB` query rows the scores over
/// all keys are recomputed and normalised, then five GEMMs give the gradients.
fn tiled_backward(
    [q, k, v, o, go]: [Strided; 5],
    n: Dims,
    scale: f32,
    key_valid: Option<&[bool]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, h, lq, lk, d } = n;
    let mut dq = vec![0f32; b * h * lq * d];
    let mut dk = vec![0f32; b * h * lk * d];
    let mut dv = vec![0f32; b * h * lk * d];
    if lq == 0 || lk == 0 || d == 0 {
        return (dq, dk, dv);
    }
    dq.par_chunks_mut(lq * d)
        .zip(dk.par_chunks_mut(lk * d))
        .zip(dv.par_chunks_mut(lk * d))
        .enumerate()
        .for_each(|(head, ((dq, dk), dv))| {
            let (bi, hi) = (head / h, head % h);
            let valid = key_valid.map(|kv| &kv[bi * lk..(bi + 1) * lk]);
            let km = Mat::rows(k.row(bi, hi, 0), k.stride[2]);
            let vm = Mat::rows(v.row(bi, hi, 0), v.stride[2]);
            let (mut p, mut ds) = (vec![0f32; QB * lk], vec![0f32; QB * lk]);
            for q0 in (0..lq).step_by(QB) {
                let r = (lq - q0).min(QB);
                let (p, ds) = (&mut p[..r * lk], &mut ds[..r * lk]);
                let qm = Mat::rows(q.row(bi, hi, q0), q.stride[2]);
                let gm = Mat::rows(go.row(bi, hi, q0), go.stride[2]);
                // SAFETY: every operand is a block of rows this head owns (strides from the
                // layouts); p and ds are (r, lk); dq's rows q0..q0+r and dk, dv are (·, d).
                unsafe {
                    gemm_into(
                        [r, lk, d],
                        p.as_mut_ptr(),
                        lk,
                        false,
                        qm,
                        km.t(),
                        scale,
                        NO_PAR,
                    )
                };
                let mut state = RowState::new(r);
                state.update(p, lk, valid);
                state.normalise(p, lk);
                // SAFETY: as above.
                unsafe {
                    let pm = Mat::rows(p.as_ptr(), lk);
                    gemm_into(
                        [lk, d, r],
                        dv.as_mut_ptr(),
                        d,
                        true,
                        pm.t(),
                        gm,
                        1.0,
                        NO_PAR,
                    );
                    gemm_into(
                        [r, lk, d],
                        ds.as_mut_ptr(),
                        lk,
                        false,
                        gm,
                        vm.t(),
                        1.0,
                        NO_PAR,
                    );
                }
                for (i, (dsr, pr)) in ds.chunks_exact_mut(lk).zip(p.chunks_exact(lk)).enumerate() {
                    let (gr, or) = (
                        go.row_slice(bi, hi, q0 + i, d),
                        o.row_slice(bi, hi, q0 + i, d),
                    );
                    let delta: f32 = gr.iter().zip(or).map(|(g, o)| g * o).sum();
                    for (x, &pp) in dsr.iter_mut().zip(pr) {
                        *x = pp * (*x - delta);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    let dsm = Mat::rows(ds.as_ptr(), lk);
                    let dq = dq[q0 * d..].as_mut_ptr();
                    gemm_into([r, d, lk], dq, d, false, dsm, km, scale, NO_PAR);
                    gemm_into(
                        [lk, d, r],
                        dk.as_mut_ptr(),
                        d,
                        true,
                        dsm.t(),
                        qm,
                        scale,
                        NO_PAR,
                    );
                }
            }
        });
    (dq, dk, dv)
}

/// Maximum of a slice in 8 independent lanes (a single running max would serialise).
#[inline(always)]
fn max_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in lanes.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    lanes.iter().fold(tail, |a, &x| a.max(x))
}

/// Sum of a slice in 8 independent lanes.
#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in lanes.iter_mut().zip(c) {
            *a += x;
        }
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // Small LCG: deterministic without a rand dependency.
        let n: usize = shape.iter().product();
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches data")
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|x| x.abs())
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.max(0))
            .and_then(|x| x.to_scalar::<f32>())
            .expect("same shapes")
    }

    #[test]
    fn tiled_matches_naive_with_odd_sizes_and_mask() -> Result<()> {
        // Lq and Lk straddle the query and key blocks (QB = 64, KB = 512).
        for &(b, h, lq, lk, d) in &[(2, 3, 70, 530, 40), (1, 2, 7, 5, 64), (1, 1, 129, 129, 16)] {
            let q = (rand(&[b, h, lq, d], 1) * 3.0)?;
            let k = (rand(&[b, h, lk, d], 2) * 3.0)?;
            let v = rand(&[b, h, lk, d], 3);
            let fast = attention(&q, &k, &v, None, AttentionImpl::Tiled)?;
            let slow = attention(&q, &k, &v, None, AttentionImpl::Naive)?;
            let e = max_abs(&fast, &slow);
            assert!(e < 1e-5, "no mask {b}x{h}x{lq}x{lk}x{d}: {e}");
            let mut mv = vec![1f32; b * lk];
            for (i, x) in mv.iter_mut().enumerate() {
                if i % 3 == 1 || i % lk >= lk - 2 {
                    *x = 0.0;
                }
            }
            let mask = Tensor::from_vec(mv, (b, lk), &Device::Cpu)?;
            let fast = attention(&q, &k, &v, Some(&mask), AttentionImpl::Tiled)?;
            let slow = attention(&q, &k, &v, Some(&mask), AttentionImpl::Naive)?;
            let e = max_abs(&fast, &slow);
            assert!(e < 1e-5, "mask {b}x{h}x{lq}x{lk}x{d}: {e}");
        }
        Ok(())
    }

    /// The DiT hands the kernel `(B, L, H, D)` projections viewed as `(B, H, L, D)`: read in
    /// place through their strides, they must give what contiguous copies give.
    #[test]
    fn strided_views_match_contiguous_inputs() -> Result<()> {
        let (b, h, lq, lk, d) = (2, 2, 53, 140, 48);
        let view = |seed| -> Result<Tensor> { (rand(&[b, lk, h, d], seed) * 3.0)?.transpose(1, 2) };
        let (k, v) = (view(12)?, view(13)?);
        let q = (rand(&[b, lq, h, d], 11) * 3.0)?.transpose(1, 2)?;
        assert!(!q.is_contiguous());
        let mask = Tensor::from_vec(
            (0..b * lk)
                .map(|i| f32::from(u8::from(i % 5 != 2)))
                .collect::<Vec<_>>(),
            (b, lk),
            &Device::Cpu,
        )?;
        let got = attention(&q, &k, &v, Some(&mask), AttentionImpl::Tiled)?;
        let (qc, kc, vc) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        let want = attention(&qc, &kc, &vc, Some(&mask), AttentionImpl::Naive)?;
        let e = max_abs(&got, &want);
        assert!(e < 1e-5, "strided vs naive: {e}");
        Ok(())
    }

    /// The baseline softmax update (no FMA) agrees with the one `attention` runs on this CPU.
    #[test]
    fn softmax_update_variants_agree() {
        let (rows, kn) = (5, 37);
        let scores: Vec<f32> = rand(&[rows, kn], 21)
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("vector");
        let valid: Vec<bool> = (0..kn).map(|i| i % 4 != 1).collect();
        let run = |fma: bool| {
            let mut s: Vec<f32> = scores.iter().map(|x| x * 9.0).collect();
            let mut st = RowState::new(rows);
            st.max.iter_mut().for_each(|m| *m = 2.0); // some rows' maxima move: corr < 1
            if fma {
                st.update_with::<true>(&mut s, kn, Some(&valid));
            } else {
                st.update_with::<false>(&mut s, kn, Some(&valid));
            }
            (s, st.sum, st.corr)
        };
        let (a, b) = (run(false), run(true));
        let all = |r: &(Vec<f32>, Vec<f32>, Vec<f32>)| -> Vec<f32> {
            r.0.iter().chain(&r.1).chain(&r.2).copied().collect()
        };
        for (x, y) in all(&a).into_iter().zip(all(&b)) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
        assert!(a.2.iter().any(|&c| c < 1.0), "no row rescaled");
        let masked = (0..rows * kn).filter(|i| !valid[i % kn]);
        assert!(
            masked.map(|i| a.0[i]).all(|p| p == 0.0),
            "padding got weight"
        );
    }

    #[test]
    fn fully_masked_rows_are_zero() -> Result<()> {
        let q = rand(&[2, 2, 5, 8], 4);
        let k = rand(&[2, 2, 3, 8], 5);
        let v = rand(&[2, 2, 3, 8], 6);
        let mask = Tensor::new(&[[0f32, 0., 0.], [1., 1., 0.]], &Device::Cpu)?;
        for imp in [AttentionImpl::Tiled, AttentionImpl::Naive] {
            let o = attention(&q, &k, &v, Some(&mask), imp)?;
            let first = o.narrow(0, 0, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert_eq!(first, 0.0, "{imp:?}");
            let second = o.narrow(0, 1, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(second > 0.0 && second.is_finite(), "{imp:?}");
        }
        Ok(())
    }

    /// The backward kernel across query blocks, with a mask and the DiT's strided views, against
    /// candle's autograd through the naive path.
    #[test]
    fn tiled_gradients_match_naive_across_blocks() -> Result<()> {
        let (b, h, lq, lk, d) = (2, 2, 70, 90, 24);
        let var = |l, seed| Var::from_tensor(&(rand(&[b, l, h, d], seed) * 2.0)?);
        let (q, k, v) = (var(lq, 31)?, var(lk, 32)?, var(lk, 33)?);
        let w = rand(&[b, h, lq, d], 34);
        let mask = Tensor::from_vec(
            (0..b * lk)
                .map(|i| f32::from(u8::from(i % 7 != 3)))
                .collect::<Vec<_>>(),
            (b, lk),
            &Device::Cpu,
        )?;
        let mut grads = Vec::new();
        for imp in [AttentionImpl::Tiled, AttentionImpl::Naive] {
            let view = |x: &Var| x.as_tensor().transpose(1, 2);
            let o = attention(&view(&q)?, &view(&k)?, &view(&v)?, Some(&mask), imp)?;
            let g = (o * &w)?.sum_all()?.backward()?;
            let get = |x: &Var| g.get(x).cloned().expect("gradient present");
            grads.push([get(&q), get(&k), get(&v)]);
        }
        for (i, (a, b)) in grads[0].iter().zip(&grads[1]).enumerate() {
            let e = max_abs(a, b);
            assert!(e < 1e-5, "tiled vs naive grad {i}: {e}");
        }
        Ok(())
    }

    /// Gradient of `sum(w ∘ attention(q, k, v))` against central differences, and the two
    /// implementations' gradients against each other.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let (b, h, lq, lk, d) = (1, 2, 5, 6, 8);
        let q = Var::from_tensor(&rand(&[b, h, lq, d], 7))?;
        let k = Var::from_tensor(&rand(&[b, h, lk, d], 8))?;
        let v = Var::from_tensor(&rand(&[b, h, lk, d], 9))?;
        let w = rand(&[b, h, lq, d], 10);
        let mask = Tensor::new(&[[1f32, 1., 0., 1., 1., 0.]], &Device::Cpu)?;
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor, imp| -> Result<Tensor> {
            (attention(q, k, v, Some(&mask), imp)? * &w)?.sum_all()
        };
        let mut grads = Vec::new();
        for imp in [AttentionImpl::Tiled, AttentionImpl::Naive] {
            let g = loss(q.as_tensor(), k.as_tensor(), v.as_tensor(), imp)?.backward()?;
            let get = |x: &Var| g.get(x).cloned().expect("gradient present");
            grads.push([get(&q), get(&k), get(&v)]);
        }
        for (i, (a, b)) in grads[0].iter().zip(&grads[1]).enumerate() {
            let e = max_abs(a, b);
            assert!(e < 1e-5, "tiled vs naive grad {i}: {e}");
        }
        // Finite differences in f64 on the naive path for a few coordinates of each input.
        let eps = 1e-3;
        let inputs = [&q, &k, &v];
        for (which, var) in inputs.iter().enumerate() {
            let base: Vec<f32> = var.flatten_all()?.to_vec1()?;
            let analytic: Vec<f32> = grads[0][which].flatten_all()?.to_vec1()?;
            for idx in [0, 3, base.len() / 2, base.len() - 1] {
                let mut plus = base.clone();
                plus[idx] += eps;
                let mut minus = base.clone();
                minus[idx] -= eps;
                let eval = |data: Vec<f32>| -> Result<f32> {
                    let t = Tensor::from_vec(data, var.shape(), &Device::Cpu)?;
                    let mut args = [
                        q.as_tensor().clone(),
                        k.as_tensor().clone(),
                        v.as_tensor().clone(),
                    ];
                    args[which] = t;
                    loss(&args[0], &args[1], &args[2], AttentionImpl::Tiled)?.to_scalar::<f32>()
                };
                let numeric = (eval(plus)? - eval(minus)?) / (2.0 * eps);
                let e = (numeric - analytic[idx]).abs();
                assert!(
                    e < 2e-3,
                    "input {which} idx {idx}: fd {numeric} vs {}",
                    analytic[idx]
                );
            }
        }
        Ok(())
    }
}
