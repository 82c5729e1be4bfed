//! Scaled dot-product attention for the DiT and the text encoder.
//!
//! Two implementations of one function, `softmax(q·kᵀ/√d + mask)·v`:
//! - [`AttentionImpl::Tiled`]: a CPU kernel in the style of FlashAttention (Dao et al. 2022,
//!   <https://arxiv.org/abs/2205.14135>): query and key blocks with an online softmax, so the
//!   `L×L` score matrix never exists and memory stays `O(L·d)`. Its backward pass (exact,
//!   materialising the scores per batch·head) makes it usable for training too.
//! - [`AttentionImpl::Naive`]: matmul + an exp/sum softmax built from differentiable candle ops;
//!   the reference the kernel is tested against and the path on non-CPU devices.
//!
//! Key padding: `key_mask` `(B, Lk)` holds 1 for real tokens and 0 for padding. A query whose keys
//! are all padding (an empty prompt) attends to nothing and gets a zero output, in both paths.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::layers::fast_exp;

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
            q.contiguous()?
                .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
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

/// Query rows per parallel task (and per online-softmax state), a multiple of every `MR`: the
/// score tile (`rows×KB`) and the output accumulator (`rows×D`) together stay near L1 size.
fn query_block(d: usize) -> usize {
    if d <= 64 {
        48
    } else {
        24
    }
}
/// Keys per block, a multiple of every `NR`.
const KB: usize = 128;

struct TiledAttention {
    scale: f32,
    /// `B·Lk` flags, batch-major; `None` = every key valid.
    key_valid: Option<Vec<bool>>,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("tiled attention: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("tiled attention: {what} must be contiguous"),
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
        let q = contiguous_f32(s1, l1, "q")?;
        let k = contiguous_f32(s2, l2, "k")?;
        let v = contiguous_f32(s3, l3, "v")?;
        let (b, h, lq, d) = l1.shape().dims4()?;
        let lk = l2.shape().dims4()?.2;
        let out = tiled_forward(
            q,
            k,
            v,
            b,
            h,
            lq,
            lk,
            d,
            self.scale,
            self.key_valid.as_deref(),
            select_kernel(),
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// Exact gradients from the recomputed probabilities `P` (one `Lq×Lk` matrix per batch·head):
    /// `dV = Pᵀ·dO`, `dS = P∘(dO·Vᵀ − rowsum(dO∘O))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = self.scale as f64;
        // Nothing here needs its own gradient, so the fused (no-backward) softmax is fine.
        let s = (q.matmul(&k.t()?)? * scale)?; // (B, H, Lq, Lk)
        let p = match &self.key_valid {
            Some(valid) => {
                let (b, _, lk, _) = k.dims4()?;
                let m: Vec<f32> = valid.iter().map(|&x| f32::from(u8::from(x))).collect();
                let mask = Tensor::from_vec(m, (b, 1, 1, lk), k.device())?;
                // Padding gets ~0 weight from the bias and exactly 0 from the product, which
                // also zeroes rows whose keys are all padding (their output is constant 0).
                let bias = ((&mask - 1.0)? * 1e9)?;
                candle_nn::ops::softmax_last_dim(&s.broadcast_add(&bias)?)?.broadcast_mul(&mask)?
            }
            None => candle_nn::ops::softmax_last_dim(&s)?,
        };
        let dv = p.t()?.matmul(grad_out)?;
        let dp = grad_out.matmul(&v.t()?)?;
        let delta = (grad_out * out)?.sum_keepdim(D::Minus1)?;
        let ds = (p * dp.broadcast_sub(&delta)?)?;
        let dq = (ds.matmul(k)? * scale)?;
        let dk = (ds.t()?.matmul(q)? * scale)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// `q`,`out`: `(B·H, Lq, D)`, `k`,`v`: `(B·H, Lk, D)`, all row-major.
#[allow(clippy::too_many_arguments)]
fn tiled_forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    b: usize,
    h: usize,
    lq: usize,
    lk: usize,
    d: usize,
    scale: f32,
    key_valid: Option<&[bool]>,
    kernel: Kernel,
) -> Vec<f32> {
    let bh = b * h;
    let mut out = vec![0f32; bh * lq * d];
    if lq == 0 || d == 0 {
        return out;
    }
    // Kᵀ per head in key blocks, `(Lkp/KB, D, KB)`, zero-padded to whole blocks: the score
    // kernel reads keys as short contiguous rows (a full-length `(D, Lk)` transpose would put
    // rows a power-of-two stride apart and thrash cache sets) and never needs a tail case.
    let lkp = round_up(lk.max(1), KB);
    let mut kt = vec![0f32; bh * d * lkp];
    kt.par_chunks_mut(d * lkp)
        .zip(k.par_chunks(lk * d))
        .for_each(|(kt, k)| {
            for (j, row) in k.chunks_exact(d).enumerate() {
                let (blk, jj) = (j / KB, j % KB);
                for (c, &x) in row.iter().enumerate() {
                    kt[(blk * d + c) * KB + jj] = x;
                }
            }
        });
    let qb_rows = query_block(d);
    out.par_chunks_mut(lq * d)
        .enumerate()
        .flat_map_iter(|(head, o)| {
            o.chunks_mut(qb_rows * d)
                .enumerate()
                .map(move |(qb, o)| (head, qb, o))
        })
        .for_each(|(head, qb, o)| {
            let valid = key_valid.map(|kv| &kv[(head / h) * lk..(head / h + 1) * lk]);
            let first = head * lq + qb * qb_rows;
            let rows = (lq - qb * qb_rows).min(qb_rows);
            let q = &q[first * d..(first + rows) * d];
            let task = Task {
                q,
                kt: &kt[head * d * lkp..(head + 1) * d * lkp],
                v: &v[head * lk * d..(head + 1) * lk * d],
                valid,
                lk,
                d,
                scale,
            };
            kernel(&task, o);
        });
    out
}

/// One query block of one head.
struct Task<'a> {
    /// `(rows, D)`.
    q: &'a [f32],
    /// `(Lk/KB rounded up, D, KB)`.
    kt: &'a [f32],
    /// `(lk, D)`.
    v: &'a [f32],
    valid: Option<&'a [bool]>,
    lk: usize,
    d: usize,
    scale: f32,
}

type Kernel = fn(&Task, &mut [f32]);

/// Kernels this CPU can run, widest SIMD first (the binary is built for baseline x86-64, so
/// wider ones are chosen at run time). Register tiles: `MR` query rows × `NR` columns of
/// accumulators, sized to the register file (AVX-512: 8×32 = 16 zmm; AVX2: 6×16 = 12 ymm;
/// SSE2: 4×8 = 8 xmm; NEON: 4×16 = 16 q).
fn available_kernels() -> Vec<(&'static str, Kernel)> {
    let mut ks: Vec<(&'static str, Kernel)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            ks.push(("avx512", |t, o| {
                // SAFETY: listed only when AVX-512F is present.
                unsafe { task_avx512(t, o) }
            }));
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            ks.push(("avx2", |t, o| {
                // SAFETY: listed only when AVX2 and FMA are present.
                unsafe { task_avx2(t, o) }
            }));
        }
        ks.push(("sse2", |t, o| run_task::<false, 4, 8>(t, o)));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // FMA is baseline on aarch64; plain mul_add compiles to it.
        ks.push(("generic", |t, o| run_task::<true, 4, 16>(t, o)));
    }
    ks
}

fn select_kernel() -> Kernel {
    static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| available_kernels()[0].1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn task_avx512(t: &Task, o: &mut [f32]) {
    run_task::<true, 8, 32>(t, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(t: &Task, o: &mut [f32]) {
    run_task::<true, 6, 16>(t, o)
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
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

#[inline(always)]
fn run_task<const FMA: bool, const MR: usize, const NR: usize>(t: &Task, out: &mut [f32]) {
    let d = t.d;
    let rows = t.q.len() / d;
    let rows_p = round_up(rows, MR);
    // Scaled, zero-padded query copy: padded rows compute harmless zeros and are not stored.
    let mut qs = vec![0f32; rows_p * d];
    for (dst, &x) in qs.iter_mut().zip(t.q) {
        *dst = x * t.scale;
    }
    let mut s = vec![0f32; rows_p * KB];
    let mut acc = vec![0f32; rows_p * d];
    let mut m = vec![f32::NEG_INFINITY; rows_p];
    let mut l = vec![0f32; rows_p];
    let mut k0 = 0;
    while k0 < t.lk {
        let kn = (t.lk - k0).min(KB);
        let knp = round_up(kn, NR);
        let kt = &t.kt[k0 * d..(k0 + KB) * d]; // block k0/KB, (D, KB)
        scores::<FMA, MR, NR>(&qs, kt, knp, d, &mut s);
        for i in 0..rows_p {
            let row = &mut s[i * KB..i * KB + knp];
            row[kn..].fill(f32::NEG_INFINITY);
            if let Some(valid) = t.valid {
                for (x, &ok) in row.iter_mut().zip(&valid[k0..k0 + kn]) {
                    if !ok {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let m_new = m[i].max(max_lanes(row));
            if m_new == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            let corr = fast_exp::<FMA>(m[i] - m_new);
            for x in row.iter_mut() {
                *x = fast_exp::<FMA>(*x - m_new);
            }
            l[i] = l[i] * corr + sum_lanes(row);
            if corr != 1.0 {
                for a in &mut acc[i * d..(i + 1) * d] {
                    *a *= corr;
                }
            }
            m[i] = m_new;
        }
        accumulate_pv::<FMA, MR, NR>(&s, &t.v[k0 * d..(k0 + kn) * d], kn, d, &mut acc);
        k0 += kn;
    }
    for i in 0..rows {
        let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
        for (o, &a) in out[i * d..(i + 1) * d]
            .iter_mut()
            .zip(&acc[i * d..(i + 1) * d])
        {
            *o = a * inv;
        }
    }
}

/// `s[i][j] = Σ_c qs[i][c]·kt[c][j]` for `j < knp`, `kt` one `(D, KB)` key block, in MR×NR
/// register tiles.
#[inline(always)]
fn scores<const FMA: bool, const MR: usize, const NR: usize>(
    qs: &[f32],
    kt: &[f32],
    knp: usize,
    d: usize,
    s: &mut [f32],
) {
    let rows_p = qs.len() / d;
    for i0 in (0..rows_p).step_by(MR) {
        let q = &qs[i0 * d..(i0 + MR) * d];
        for j0 in (0..knp).step_by(NR) {
            let mut t = [[0f32; NR]; MR];
            for c in 0..d {
                let base = c * KB + j0;
                let kr: &[f32; NR] = kt[base..base + NR].try_into().expect("NR-wide slice");
                for (r, tr) in t.iter_mut().enumerate() {
                    let qv = q[r * d + c];
                    for (x, &kv) in tr.iter_mut().zip(kr) {
                        *x = fmadd::<FMA>(qv, kv, *x);
                    }
                }
            }
            for (r, tr) in t.iter().enumerate() {
                s[(i0 + r) * KB + j0..(i0 + r) * KB + j0 + NR].copy_from_slice(tr);
            }
        }
    }
}

/// `acc[i] += Σ_j p[i][j]·v[j]` over the block's `kn` keys, MR rows × NR columns at a time.
#[inline(always)]
fn accumulate_pv<const FMA: bool, const MR: usize, const NR: usize>(
    p: &[f32],
    v: &[f32],
    kn: usize,
    d: usize,
    acc: &mut [f32],
) {
    let rows_p = acc.len() / d;
    let dn = d - d % NR;
    for i0 in (0..rows_p).step_by(MR) {
        for c0 in (0..dn).step_by(NR) {
            let mut t = [[0f32; NR]; MR];
            for (r, tr) in t.iter_mut().enumerate() {
                tr.copy_from_slice(&acc[(i0 + r) * d + c0..(i0 + r) * d + c0 + NR]);
            }
            for j in 0..kn {
                let vr: &[f32; NR] = v[j * d + c0..j * d + c0 + NR]
                    .try_into()
                    .expect("NR-wide slice");
                for (r, tr) in t.iter_mut().enumerate() {
                    let pv = p[(i0 + r) * KB + j];
                    for (x, &vv) in tr.iter_mut().zip(vr) {
                        *x = fmadd::<FMA>(pv, vv, *x);
                    }
                }
            }
            for (r, tr) in t.iter().enumerate() {
                acc[(i0 + r) * d + c0..(i0 + r) * d + c0 + NR].copy_from_slice(tr);
            }
        }
        // Head dims that are not a multiple of NR.
        if dn < d {
            for r in 0..MR {
                for j in 0..kn {
                    let pv = p[(i0 + r) * KB + j];
                    for c in dn..d {
                        let a = &mut acc[(i0 + r) * d + c];
                        *a = fmadd::<FMA>(pv, v[j * d + c], *a);
                    }
                }
            }
        }
    }
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
        // Lq, Lk straddle the query/key blocks and register tiles; D = 40 exercises the non-NR
        // tail.
        for &(b, h, lq, lk, d) in &[(2, 3, 45, 300, 40), (1, 2, 7, 5, 64), (1, 1, 129, 129, 16)] {
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

    /// Every SIMD variant this CPU has (not only the one `attention` picks) against the naive path.
    #[test]
    fn every_kernel_variant_matches_naive() -> Result<()> {
        let (b, h, lq, lk, d) = (2, 2, 53, 140, 48);
        let q = (rand(&[b, h, lq, d], 11) * 3.0)?;
        let k = (rand(&[b, h, lk, d], 12) * 3.0)?;
        let v = rand(&[b, h, lk, d], 13);
        let valid: Vec<bool> = (0..b * lk).map(|i| i % 5 != 2).collect();
        let mask = Tensor::from_vec(
            valid
                .iter()
                .map(|&x| f32::from(u8::from(x)))
                .collect::<Vec<_>>(),
            (b, lk),
            &Device::Cpu,
        )?;
        let want = attention(&q, &k, &v, Some(&mask), AttentionImpl::Naive)?;
        let flat = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let (qv, kv, vv) = (flat(&q)?, flat(&k)?, flat(&v)?);
        let scale = 1.0 / (d as f32).sqrt();
        for (name, kernel) in available_kernels() {
            let got = tiled_forward(&qv, &kv, &vv, b, h, lq, lk, d, scale, Some(&valid), kernel);
            let got = Tensor::from_vec(got, (b, h, lq, d), &Device::Cpu)?;
            let e = max_abs(&got, &want);
            assert!(e < 1e-5, "{name}: {e}");
        }
        Ok(())
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
