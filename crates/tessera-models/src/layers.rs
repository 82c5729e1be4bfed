//! Differentiable building blocks shared by the VAE and the DiT.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Tensor, D,
};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

/// `y = x·Wᵀ + b` over the last dimension, as one 2-D GEMM whatever the leading dimensions.
/// `candle_nn::Linear` broadcasts `W` over the batch, so its weight gradient is a GEMM per
/// sample followed by a single-threaded strided sum, and its bias gradient another such sum:
/// together ~18 % of a DiT train step on two cores. Parameter names are torch's.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `weight` `(out, in)`, `bias` `(out,)`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// `weight` and `bias` with torch's default init hints.
    pub fn load(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = vb.get_with_hints(
            out_dim,
            "bias",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self::new(weight, Some(bias)))
    }

    /// `weight` only (T5's projections).
    pub fn load_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Self::new(weight, None))
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::kernels::linear(x, &self.weight, self.bias.as_ref())? {
            return Ok(y);
        }
        let mut dims = x.dims().to_vec();
        let in_dim = dims.pop().unwrap_or(1);
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => add_rows(&y, b)?,
            None => y,
        };
        dims.push(self.weight.dim(0)?);
        y.reshape(dims)
    }
}

/// `x + b` with `b` `(D,)` broadcast over every leading dimension of `x` `(…, D)`; the bias
/// gradient is a contiguous column sum instead of candle's strided reduction.
pub fn add_rows(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_add(b);
    }
    x.contiguous()?.apply_op2(&b.contiguous()?, RowOp::Add)
}

/// `x ⊙ w` with `w` `(D,)` broadcast over the leading dimensions (norm gains); see [`add_rows`].
pub fn mul_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return x.broadcast_mul(w);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RowOp::Mul)
}

#[derive(Clone, Copy)]
enum RowOp {
    Add,
    Mul,
    /// Forward only: the `(D,)` column sum of a `(…, D)` tensor (second operand unused).
    ColSum,
}

fn row_op<T: candle_core::WithDType>(op: RowOp, x: &[T], v: &[T]) -> Vec<T> {
    let d = v.len();
    match op {
        RowOp::Add | RowOp::Mul => {
            let mut y = x.to_vec();
            y.par_chunks_mut(d * 64usize.max(4096 / d.max(1)))
                .for_each(|rows| {
                    for row in rows.chunks_mut(d) {
                        for (a, &b) in row.iter_mut().zip(v) {
                            match op {
                                RowOp::Mul => *a *= b,
                                _ => *a += b,
                            }
                        }
                    }
                });
            y
        }
        RowOp::ColSum => {
            let mut acc = vec![T::zero(); d];
            for row in x.chunks(d) {
                for (a, &g) in acc.iter_mut().zip(row) {
                    *a += g;
                }
            }
            acc
        }
    }
}

impl CustomOp2 for RowOp {
    fn name(&self) -> &'static str {
        match self {
            RowOp::Add => "add-rows",
            RowOp::Mul => "mul-rows",
            RowOp::ColSum => "col-sum",
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = vl.shape().elem_count();
        let dims = xl.shape().dims();
        if dims.last() != Some(&d) {
            candle_core::bail!("{}: vector of {d} does not match {:?}", self.name(), dims)
        }
        let shape = match self {
            RowOp::ColSum => Shape::from(d),
            _ => xl.shape().clone(),
        };
        let (Some((xa, xb)), Some((va, vb))) = (xl.contiguous_offsets(), vl.contiguous_offsets())
        else {
            candle_core::bail!("{}: inputs must be contiguous", self.name())
        };
        let out = match (xs, vs) {
            (CpuStorage::F32(x), CpuStorage::F32(v)) => {
                CpuStorage::F32(row_op(*self, &x[xa..xb], &v[va..vb]))
            }
            (CpuStorage::F64(x), CpuStorage::F64(v)) => {
                CpuStorage::F64(row_op(*self, &x[xa..xb], &v[va..vb]))
            }
            _ => candle_core::bail!("{}: f32 or f64 operands of one dtype", self.name()),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let col_sum = |t: &Tensor| t.contiguous()?.apply_op2_no_bwd(v, &RowOp::ColSum);
        match self {
            RowOp::Add => Ok((Some(grad.clone()), Some(col_sum(&grad)?))),
            RowOp::Mul => Ok((
                Some(grad.apply_op2_no_bwd(v, &RowOp::Mul)?),
                Some(col_sum(&(&grad * x)?)?),
            )),
            RowOp::ColSum => Ok((None, None)),
        }
    }
}

/// LayerNorm over the last dimension with a backward pass (candle's fused `ops::layer_norm` has
/// none and would silently stop gradients).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// `(weight, bias)`, each `(dim,)`; `None` for `elementwise_affine=False`.
    affine: Option<(Tensor, Tensor)>,
    eps: f64,
}

impl LayerNorm {
    /// Affine LayerNorm with torch's parameter names `weight` and `bias` (init 1 and 0).
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            affine: Some((weight, bias)),
            eps,
        })
    }

    /// LayerNorm without parameters (adaLN supplies the scale and shift).
    pub fn no_affine(eps: f64) -> Self {
        Self { affine: None, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = normalize(x, NormKind::Layer, self.eps)?;
        match &self.affine {
            Some((w, b)) => add_rows(&mul_rows(&y, w)?, b),
            None => Ok(y),
        }
    }
}

/// RMSNorm over the last dimension with a learned `weight` (init 1) and a backward pass (candle's
/// fused `ops::rms_norm` has none).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        mul_rows(&normalize(x, NormKind::Rms, self.eps)?, &self.weight)
    }
}

// ---------------------------------------------------------------------------------------------
// Fused CPU kernels with fused backward passes. Candle composes these from 7-12 tensor passes
// (each a fresh allocation); here one pass each way. Other devices and dtypes use the
// compositions, which double as the reference in the tests.
// ---------------------------------------------------------------------------------------------

/// GELU with the tanh approximation (`gelu_tanh`/`gelu-approximate` in torch), differentiable.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(GeluTanh)
    } else {
        x.gelu()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NormKind {
    /// `(x − mean)/√(var + eps)`.
    Layer,
    /// `x/√(mean(x²) + eps)`.
    Rms,
}

/// Normalises the last dimension without affine parameters; differentiable.
fn normalize(x: &Tensor, kind: NormKind, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Norm { kind, eps });
    }
    let xc = match kind {
        NormKind::Layer => x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?,
        NormKind::Rms => x.clone(),
    };
    let ms = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(ms + eps)?.sqrt()?)
}

/// `e^x` to ~2 ulp for `x ≤ 0` (Cephes range reduction + degree-6 polynomial) in plain float
/// ops that vectorise even on baseline SSE2; `x < -87` gives exactly 0 (covers `-inf`).
#[inline(always)]
pub(crate) fn fast_exp<const FMA: bool>(x: f32) -> f32 {
    #[inline(always)]
    fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
        if FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }
    // Round to nearest by the 1.5·2²³ trick: `f32::round` is a libm call without SSE4.1.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = fmadd::<FMA>(n, -0.693_359_4, xc);
    let r = fmadd::<FMA>(n, 2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4f32;
    p = fmadd::<FMA>(p, r, 1.398_199_9e-3);
    p = fmadd::<FMA>(p, r, 8.333_452e-3);
    p = fmadd::<FMA>(p, r, 4.166_579_6e-2);
    p = fmadd::<FMA>(p, r, 1.666_666_5e-1);
    p = fmadd::<FMA>(p, r, 5e-1);
    p = fmadd::<FMA>(p * r, r, r) + 1.0;
    let pow2 = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * pow2
    }
}

/// Whether the AVX2+FMA variants may run (checked once).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f(out)` compiled for AVX2+FMA (the closure is inlined into this context).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn in_avx2(out: &mut [f32], f: impl FnOnce(&mut [f32])) {
    f(out)
}

/// Runs `fast(out)` with AVX2+FMA code generation where the CPU has it, else `base(out)`.
#[inline(always)]
fn simd(out: &mut [f32], fast: impl FnOnce(&mut [f32]), base: impl FnOnce(&mut [f32])) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA presence checked.
        unsafe { in_avx2(out, fast) };
        return;
    }
    let _ = fast;
    base(out)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// `tanh(u)` from `fast_exp` of a non-positive argument.
#[inline(always)]
fn fast_tanh<const FMA: bool>(u: f32) -> f32 {
    let e = fast_exp::<FMA>(-2.0 * u.abs());
    ((1.0 - e) / (1.0 + e)).copysign(u)
}

#[inline(always)]
fn gelu_fwd<const FMA: bool>(xs: &[f32], ys: &mut [f32]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        let t = fast_tanh::<FMA>(SQRT_2_OVER_PI * x * (1.0 + GELU_C * x * x));
        *y = 0.5 * x * (1.0 + t);
    }
}

#[inline(always)]
fn gelu_bwd<const FMA: bool>(xs: &[f32], gs: &[f32], ys: &mut [f32]) {
    for ((y, &x), &g) in ys.iter_mut().zip(xs).zip(gs) {
        let t = fast_tanh::<FMA>(SQRT_2_OVER_PI * x * (1.0 + GELU_C * x * x));
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
        *y = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);
    }
}

/// Mean and `1/√(var + eps)` (Layer) or `1/√(mean(x²) + eps)` (Rms) of one row.
#[inline(always)]
fn row_stats(x: &[f32], kind: NormKind, eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = match kind {
        NormKind::Layer => lanes_sum(x.iter().copied()) / n,
        NormKind::Rms => 0.0,
    };
    let var = lanes_sum(x.iter().map(|&v| (v - mean) * (v - mean))) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Sum in 8 independent lanes so it vectorises.
#[inline(always)]
fn lanes_sum(it: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0f32; 8];
    for (i, v) in it.enumerate() {
        lanes[i % 8] += v;
    }
    lanes.iter().sum()
}

#[inline(always)]
fn norm_fwd(x: &[f32], y: &mut [f32], n: usize, kind: NormKind, eps: f32) {
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let (mean, inv) = row_stats(xr, kind, eps);
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - mean) * inv;
        }
    }
}

/// `dx = inv·(g − mean(g) − y·mean(g·y))`, the `mean(g)` term only for LayerNorm.
#[inline(always)]
fn norm_bwd(x: &[f32], g: &[f32], dx: &mut [f32], n: usize, kind: NormKind, eps: f32) {
    let nf = n as f32;
    for ((xr, gr), dr) in x
        .chunks_exact(n)
        .zip(g.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
    {
        let (mean, inv) = row_stats(xr, kind, eps);
        let mg = match kind {
            NormKind::Layer => lanes_sum(gr.iter().copied()) / nf,
            NormKind::Rms => 0.0,
        };
        let mgy = lanes_sum(xr.iter().zip(gr).map(|(&v, &gv)| gv * (v - mean) * inv)) / nf;
        for ((o, &v), &gv) in dr.iter_mut().zip(xr).zip(gr) {
            *o = inv * (gv - mg - (v - mean) * inv * mgy);
        }
    }
}

/// Contiguous f32 data of a custom-op argument.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: expects f32")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// Elements per parallel chunk: big enough to amortise the task, small enough to balance.
const PAR_CHUNK: usize = 1 << 14;

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(y, x)| simd(y, |y| gelu_fwd::<true>(x, y), |y| gelu_fwd::<false>(x, y)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluTanhGrad)?,
        ))
    }
}

/// `(x, dy) → dy·gelu'(x)`.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)))
            .for_each(|(y, (x, g))| {
                simd(
                    y,
                    |y| gelu_bwd::<true>(x, g, y),
                    |y| gelu_bwd::<false>(x, g, y),
                )
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

struct Norm {
    kind: NormKind,
    eps: f64,
}

impl Norm {
    /// Rows per parallel chunk for rows of `n`.
    fn rows_per_chunk(n: usize) -> usize {
        (PAR_CHUNK / n.max(1)).max(1)
    }
}

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        "norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let (kind, eps) = (self.kind, self.eps as f32);
        let chunk = Self::rows_per_chunk(n) * n;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(y, x)| {
                simd(
                    y,
                    |y| norm_fwd(x, y, n, kind, eps),
                    |y| norm_fwd(x, y, n, kind, eps),
                )
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = NormGrad {
            kind: self.kind,
            eps: self.eps,
        };
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// `(x, dy) → dx` of [`Norm`].
struct NormGrad {
    kind: NormKind,
    eps: f64,
}

impl CustomOp2 for NormGrad {
    fn name(&self) -> &'static str {
        "norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let n = l1.dims().last().copied().unwrap_or(1).max(1);
        let (kind, eps) = (self.kind, self.eps as f32);
        let chunk = Norm::rows_per_chunk(n) * n;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(dx, (x, g))| {
                simd(
                    dx,
                    |dx| norm_bwd(x, g, dx, n, kind, eps),
                    |dx| norm_bwd(x, g, dx, n, kind, eps),
                )
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("same shapes")
    }

    /// `Linear` (2-D GEMM + row-broadcast bias) and `mul_rows` match candle's broadcast ops in
    /// value and in every gradient (input, weight, bias, gain), on a 3-D input.
    #[test]
    fn row_ops_and_linear_match_broadcast_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 5, 6), &dev)?;
        let w = Var::randn(0f32, 1., (4, 6), &dev)?;
        let b = Var::randn(0f32, 1., 4, &dev)?;
        let g = Var::randn(0f32, 1., 4, &dev)?;
        let r = Tensor::randn(0f32, 1., (2, 5, 4), &dev)?;
        let ours = mul_rows(
            &Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).forward(&x)?,
            &g,
        )?;
        let theirs = x
            .broadcast_matmul(&w.t()?)?
            .broadcast_add(&b)?
            .broadcast_mul(&g)?;
        assert!(max_abs(&ours, &theirs) < 1e-5);
        let go = (ours * &r)?.sum_all()?.backward()?;
        let gt = (theirs * &r)?.sum_all()?.backward()?;
        for v in [&x, &w, &b, &g] {
            let (a, e) = (go.get(v).expect("ours"), gt.get(v).expect("reference"));
            assert!(
                max_abs(a, e) < 1e-4,
                "gradient differs by {}",
                max_abs(a, e)
            );
        }
        Ok(())
    }

    /// Reference compositions from candle ops (the non-CPU path).
    fn reference(x: &Tensor, which: &str) -> Result<Tensor> {
        match which {
            "gelu" => x.gelu(),
            "layer" => {
                let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
                let v = xc.sqr()?.mean_keepdim(D::Minus1)?;
                xc.broadcast_div(&(v + 1e-6)?.sqrt()?)
            }
            _ => {
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(ms + 1e-6)?.sqrt()?)
            }
        }
    }

    fn fused(x: &Tensor, which: &str) -> Result<Tensor> {
        match which {
            "gelu" => gelu_tanh(x),
            "layer" => normalize(x, NormKind::Layer, 1e-6),
            _ => normalize(x, NormKind::Rms, 1e-6),
        }
    }

    #[test]
    fn fused_ops_match_compositions_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        for which in ["gelu", "layer", "rms"] {
            // 37-wide rows: not a multiple of any SIMD width.
            let x = Var::from_tensor(&(Tensor::randn(0f32, 1., (3, 5, 37), &dev)? * 2.0)?)?;
            let w = Tensor::randn(0f32, 1., (3, 5, 37), &dev)?;
            let f = fused(x.as_tensor(), which)?;
            let r = reference(x.as_tensor(), which)?;
            let e = max_abs(&f, &r);
            assert!(e < 2e-6, "{which} forward: {e}");
            let gf = (f * &w)?.sum_all()?.backward()?;
            let gr = (r * &w)?.sum_all()?.backward()?;
            let (gf, gr) = (
                gf.get(&x).expect("fused grad"),
                gr.get(&x).expect("ref grad"),
            );
            let e = max_abs(gf, gr);
            assert!(e < 2e-5, "{which} backward: {e}");
        }
        Ok(())
    }

    #[test]
    fn fused_gradients_match_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        for which in ["gelu", "layer", "rms"] {
            let base: Vec<f32> = (0..24)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37)
                .collect();
            let w = Tensor::randn(0f32, 1., (3, 8), &dev)?;
            let x = Var::from_vec(base.clone(), (3, 8), &dev)?;
            let g = (fused(x.as_tensor(), which)? * &w)?.sum_all()?.backward()?;
            let g: Vec<f32> = g.get(&x).expect("grad").flatten_all()?.to_vec1()?;
            let loss = |v: Vec<f32>| -> Result<f64> {
                let t = Tensor::from_vec(v, (3, 8), &dev)?;
                let l = (fused(&t, which)? * &w)?.sum_all()?.to_scalar::<f32>()?;
                Ok(f64::from(l))
            };
            let eps = 1e-2f32;
            for idx in [0, 5, 13, 23] {
                let (mut p, mut m) = (base.clone(), base.clone());
                p[idx] += eps;
                m[idx] -= eps;
                let fd = (loss(p)? - loss(m)?) / (2.0 * f64::from(eps));
                let e = (fd - f64::from(g[idx])).abs();
                assert!(e < 2e-3, "{which} idx {idx}: fd {fd} vs {}", g[idx]);
            }
        }
        Ok(())
    }

    #[test]
    fn fast_exp_matches_std() {
        for i in 0..2000 {
            let x = -90.0 + i as f32 * 0.047;
            let want = x.exp();
            for got in [fast_exp::<false>(x), fast_exp::<true>(x)] {
                assert!(
                    (got - want).abs() <= 3e-7 * want.max(1e-30),
                    "x={x} {got} {want}"
                );
            }
        }
        assert_eq!(fast_exp::<true>(f32::NEG_INFINITY), 0.0);
    }
}
