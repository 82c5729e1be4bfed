//! Differentiable building blocks shared by the VAE and the DiT.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

/// LayerNorm over the last dimension, composed from ops that backpropagate (candle's fused
/// `ops::layer_norm` has no backward pass and would silently stop gradients).
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
        let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        match &self.affine {
            Some((w, b)) => y.broadcast_mul(w)?.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// RMSNorm over the last dimension with a learned `weight` (init 1), from differentiable ops
/// (candle's fused `ops::rms_norm` has no backward pass).
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
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)
    }
}
