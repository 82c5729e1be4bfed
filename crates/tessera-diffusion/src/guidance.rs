//! Guidance: how a conditional and an unconditional velocity prediction combine into the one a
//! sampler steps with.

use std::str::FromStr;

use candle_core::Tensor;

use crate::error::{DiffusionError, Result};

/// The guidance rule. Both extrapolate from the conditional prediction by `scale − 1` times the
/// difference between the two predictions; they differ in which part of the difference they keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guidance {
    /// Classifier-free guidance (Ho & Salimans 2022): all of it.
    #[default]
    Cfg,
    /// Adaptive projected guidance (Sadat et al. 2024, "Eliminating oversaturation and
    /// artifacts of high guidance scales in diffusion models"), its `η = 0` form: the part of
    /// the difference parallel to the conditional denoised estimate `x − σ·v_cond` is dropped,
    /// per latent frame. That part mostly scales the estimate up (over-saturated colours,
    /// speckles); the orthogonal rest carries what the prompt changes.
    Apg,
}

impl Guidance {
    pub const ALL: [Guidance; 2] = [Guidance::Cfg, Guidance::Apg];

    pub fn name(self) -> &'static str {
        match self {
            Guidance::Cfg => "cfg",
            Guidance::Apg => "apg",
        }
    }

    /// The guided velocity for noisy latents `x` (`(B, C, T, H, W)`) at noise level `sigma`.
    pub fn guide(
        self,
        x: &Tensor,
        v_cond: &Tensor,
        v_uncond: &Tensor,
        sigma: f64,
        scale: f64,
    ) -> Result<Tensor> {
        match self {
            Guidance::Cfg => cfg(v_cond, v_uncond, scale),
            Guidance::Apg => apg(x, v_cond, v_uncond, sigma, scale),
        }
    }

    /// [`Guidance::guide`] on the output of a forward pass over [`cfg_input`].
    pub fn guide_batched(self, x: &Tensor, v: &Tensor, sigma: f64, scale: f64) -> Result<Tensor> {
        let (c, u) = halves(v)?;
        self.guide(x, &c, &u, sigma, scale)
    }
}

impl FromStr for Guidance {
    type Err = DiffusionError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Guidance::ALL
            .into_iter()
            .find(|g| g.name() == lower)
            .ok_or_else(|| DiffusionError::UnknownGuidance {
                name: s.to_string(),
            })
    }
}

fn check_scale(scale: f64) -> Result<()> {
    if !scale.is_finite() || scale < 0.0 {
        return Err(DiffusionError::InvalidCfgScale { scale });
    }
    Ok(())
}

/// Classifier-free guidance: `v_uncond + scale·(v_cond − v_uncond)`. Scale 1 is the
/// conditional prediction alone, 0 the unconditional one.
pub fn cfg(v_cond: &Tensor, v_uncond: &Tensor, scale: f64) -> Result<Tensor> {
    check_scale(scale)?;
    let diff = (v_cond - v_uncond)?;
    Ok((v_uncond + diff.affine(scale, 0.0)?)?)
}

/// `v_cond + (scale − 1)·(Δ − proj_D Δ)` with `Δ = v_cond − v_uncond` and `D = x − σ·v_cond`,
/// projecting per item and latent frame over `(C, H, W)`. In denoised space (`x0 = x − σv`) this
/// is the paper's rule, `D + (scale − 1)·Δ_D⊥`: the `−σ` between the spaces cancels in the
/// projection, so no division by σ is needed and known frames (σ = 0 there) stay finite.
fn apg(x: &Tensor, v_cond: &Tensor, v_uncond: &Tensor, sigma: f64, scale: f64) -> Result<Tensor> {
    check_scale(scale)?;
    if x.rank() != 5 || x.dims() != v_cond.dims() || x.dims() != v_uncond.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what: "adaptive projected guidance inputs",
            expected: "x, v_cond and v_uncond all (B, C, T, H, W)".to_string(),
            got: x.dims().to_vec(),
        });
    }
    let diff = (v_cond - v_uncond)?;
    let denoised = (x - v_cond.affine(sigma, 0.0)?)?;
    let per_frame = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.sum_keepdim(1)?.sum_keepdim(3)?.sum_keepdim(4)
    };
    let dot = per_frame(&(&diff * &denoised)?)?;
    let norm2 = per_frame(&denoised.sqr()?)?.clamp(1e-12f32, f32::MAX)?;
    let parallel = denoised.broadcast_mul(&(dot / norm2)?)?;
    Ok((v_cond + (diff - parallel)?.affine(scale - 1.0, 0.0)?)?)
}

/// The batch of `2B` for one guided forward pass: `x` twice along dim 0. Pair it with text
/// states `[cond; uncond]` in the same order and split the output with [`cfg_batched`] or
/// [`Guidance::guide_batched`].
pub fn cfg_input(x: &Tensor) -> Result<Tensor> {
    Ok(Tensor::cat(&[x, x], 0)?)
}

/// Guides the output of a forward pass on [`cfg_input`]: first half conditional, second half
/// unconditional.
pub fn cfg_batched(v: &Tensor, scale: f64) -> Result<Tensor> {
    let (c, u) = halves(v)?;
    cfg(&c, &u, scale)
}

fn halves(v: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = v.dim(0)?;
    if n % 2 != 0 {
        return Err(DiffusionError::ShapeMismatch {
            what: "guided batch [cond; uncond]",
            expected: "an even batch size 2B".to_string(),
            got: v.dims().to_vec(),
        });
    }
    let half = n / 2;
    Ok((v.narrow(0, 0, half)?, v.narrow(0, half, half)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn cfg_extrapolates_from_uncond() {
        let c = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let u = Tensor::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
        let g = cfg(&c, &u, 5.0).unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![5.0, 6.0]);
        assert_eq!(
            cfg(&c, &u, 1.0).unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 2.0]
        );
        assert!(matches!(
            cfg(&c, &u, -1.0),
            Err(DiffusionError::InvalidCfgScale { .. })
        ));
        let both = cfg_input(&Tensor::cat(&[&c, &u], 0).unwrap().reshape((2, 2)).unwrap())
            .unwrap()
            .narrow(0, 0, 2)
            .unwrap();
        let g2 = cfg_batched(&both, 5.0).unwrap();
        assert_eq!(g2.to_vec2::<f32>().unwrap(), vec![vec![5.0, 6.0]]);
        assert!(cfg_batched(
            &Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap(),
            2.0
        )
        .is_err());
    }

    fn video(seed: f32) -> Tensor {
        let (b, c, t, h, w) = (2, 3, 2, 2, 2);
        let data: Vec<f32> = (0..b * c * t * h * w)
            .map(|i| ((i as f32 + seed) * 0.61).sin())
            .collect();
        Tensor::from_vec(data, (b, c, t, h, w), &Device::Cpu).unwrap()
    }

    fn per_frame_dot(a: &Tensor, b: &Tensor) -> Vec<f32> {
        (a * b)
            .unwrap()
            .sum_keepdim(1)
            .unwrap()
            .sum_keepdim(3)
            .unwrap()
            .sum_keepdim(4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// APG's guidance step is orthogonal, frame by frame, to the conditional denoised estimate;
    /// it adds exactly CFG's step minus the dropped parallel part; scale 1 is `v_cond`.
    #[test]
    fn apg_keeps_only_the_part_orthogonal_to_the_denoised_estimate() {
        let (x, vc, vu, sigma) = (video(0.0), video(5.0), video(9.0), 0.7);
        let g = Guidance::Apg.guide(&x, &vc, &vu, sigma, 4.0).unwrap();
        let step = ((&g - &vc).unwrap() / 3.0).unwrap();
        let d = (&x - (&vc * sigma).unwrap()).unwrap();
        for dot in per_frame_dot(&step, &d) {
            assert!(dot.abs() < 1e-5, "guidance step · D = {dot}");
        }
        // What was dropped is parallel to D: (Δ − step) = k·D per frame.
        let dropped = ((&vc - &vu).unwrap() - &step).unwrap();
        let k = (per_frame_dot(&dropped, &d).iter())
            .zip(per_frame_dot(&d, &d))
            .map(|(a, b)| a / b)
            .collect::<Vec<_>>();
        let rebuilt = d
            .broadcast_mul(&Tensor::from_vec(k, (2, 1, 2, 1, 1), &Device::Cpu).unwrap())
            .unwrap();
        let err = (dropped - rebuilt).and_then(|t| t.abs()?.max_all()?.to_scalar::<f32>());
        let err = err.unwrap();
        assert!(err < 1e-5, "dropped part not parallel to D: {err}");
        let one = Guidance::Apg.guide(&x, &vc, &vu, sigma, 1.0).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vc.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // Batched is the same rule on [cond; uncond].
        let both = Tensor::cat(&[&vc, &vu], 0).unwrap();
        let gb = Guidance::Apg.guide_batched(&x, &both, sigma, 4.0).unwrap();
        assert_eq!(
            gb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(matches!(
            Guidance::Apg.guide(&x, &vc, &vu, sigma, f64::NAN),
            Err(DiffusionError::InvalidCfgScale { .. })
        ));
    }

    #[test]
    fn guidance_parses_names_and_lists_valid_ones() {
        assert_eq!(" APG ".parse::<Guidance>().unwrap(), Guidance::Apg);
        assert_eq!("cfg".parse::<Guidance>().unwrap(), Guidance::Cfg);
        let e = "pag".parse::<Guidance>().unwrap_err().to_string();
        assert!(
            e.contains("\"pag\"") && e.contains("cfg") && e.contains("apg"),
            "{e}"
        );
    }
}
