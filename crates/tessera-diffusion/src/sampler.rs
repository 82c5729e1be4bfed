//! Samplers: integrate `dx/dσ = v(x, σ)` from noise to data, one step at a time.
//!
//! A sampler only ever sees tensors and the two noise levels of the step it takes. Multistep
//! history lives inside it, in the order steps were taken: nothing is looked up by value.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DiffusionError, Result};
use crate::noise::randn;
use crate::schedule::Schedule;

/// One integration step at a time from `sigma` to `sigma_next < sigma`.
pub trait Sampler {
    /// Given the sample `x` at `sigma` and the model's velocity `v` there, returns the sample at
    /// `sigma_next`, or, while [`Sampler::pending_eval`] then says so, an intermediate point the
    /// model must be evaluated at before the same step is called again to finish.
    fn step(&mut self, x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor>;

    /// `Some(σ)` when the tensor last returned by [`Sampler::step`] is an intermediate point:
    /// evaluate the model there at noise level σ and call `step` again with the same
    /// `sigma, sigma_next`. Only multi-stage samplers (Heun) ever return `Some`.
    fn pending_eval(&self) -> Option<f64> {
        None
    }

    /// Forgets all history, ready for a new trajectory.
    fn reset(&mut self);

    /// Model evaluations a whole schedule costs (for progress bars and fair comparisons).
    fn evaluations(&self, schedule: &Schedule) -> usize {
        schedule.num_steps()
    }
}

/// `a·x + b·y` in the tensors' dtype.
fn lin2(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// First-order step `x + (σ_next − σ)·v`, as diffusers' `FlowMatchEulerDiscreteScheduler`.
#[derive(Debug, Clone, Default)]
pub struct Euler;

impl Sampler for Euler {
    fn step(&mut self, x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        Ok((x + v.affine(sigma_next - sigma, 0.0)?)?)
    }

    fn reset(&mut self) {}
}

/// η of [`SamplerKind::EulerAncestral`] unless a caller picks another: every step's noise fresh.
pub const DEFAULT_ETA: f64 = 1.0;

/// Noise level below which [`SamplerKind::EulerAncestral`] stops drawing fresh noise unless a
/// caller picks another: 0, fresh noise down to the last step.
pub const DEFAULT_ETA_UNTIL: f64 = 0.0;

/// Euler with fresh noise (ancestral sampling): each step predicts the clean sample
/// `x0 = x − σ·v` and the noise `ε = x + (1 − σ)·v`, then lands at `σ_next` on
/// `(1 − σ_next)·x0 + σ_next·(√(1 − η²)·ε + η·z)` with new noise `z`. Every choice of η keeps
/// the noise level of the path; η = 0 is [`Euler`], η = 1 (the default) is diffusers'
/// `stochastic_sampling`. The fresh noise lets later steps undo an imperfect model's mistakes
/// instead of carrying them along: a small model's ragged fragments come out as compact objects.
///
/// Steps that land below the noise level `until` take no fresh noise (plain Euler). Measured
/// on the default model it keeps no more shape: from pure noise the object is a blob before
/// level 0.6, and an edit's given outline is rounded off by the first two noisy steps
/// (TRAINING.md, session 33).
#[derive(Debug, Clone)]
pub struct EulerAncestral {
    eta: f64,
    until: f64,
    seed: u64,
    rng: ChaCha8Rng,
}

impl EulerAncestral {
    /// η and `until` in `[0, 1]`; the fresh noise is drawn from a generator seeded with
    /// `seed`, restarted by [`Sampler::reset`] so a reused sampler repeats its trajectory.
    pub fn new(eta: f64, until: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(DiffusionError::InvalidEta { eta });
        }
        if !(0.0..=1.0).contains(&until) {
            return Err(DiffusionError::InvalidEtaUntil { until });
        }
        Ok(Self::with_eta(eta, until, seed))
    }

    fn with_eta(eta: f64, until: f64, seed: u64) -> Self {
        Self {
            eta,
            until,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Sampler for EulerAncestral {
    fn step(&mut self, x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        let x0 = lin2(x, 1.0, v, -sigma)?;
        if sigma_next == 0.0 {
            return Ok(x0);
        }
        if sigma_next < self.until {
            return Euler.step(x, v, sigma, sigma_next);
        }
        let eps = lin2(x, 1.0, v, 1.0 - sigma)?;
        let z = randn(&mut self.rng, x.shape(), x.device())?.to_dtype(x.dtype())?;
        let noise = lin2(&eps, (1.0 - self.eta * self.eta).sqrt(), &z, self.eta)?;
        lin2(&x0, 1.0 - sigma_next, &noise, sigma_next)
    }

    fn reset(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(self.seed);
    }
}

/// Heun's second-order method (trapezoid rule with an Euler predictor), as diffusers'
/// `FlowMatchHeunDiscreteScheduler`: two evaluations per step, except the last step to σ = 0,
/// which is a plain Euler step (the corrector would evaluate the model at clean data, where it
/// was never trained to be useful), so a schedule of `n` steps costs `2n − 1` evaluations.
#[derive(Debug, Clone, Default)]
pub struct Heun {
    stage: Option<HeunStage>,
}

#[derive(Debug, Clone)]
struct HeunStage {
    x: Tensor,
    v: Tensor,
    sigma: f64,
    sigma_next: f64,
}

impl Sampler for Heun {
    fn step(&mut self, x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        match self.stage.take() {
            None if sigma_next == 0.0 => Euler.step(x, v, sigma, sigma_next),
            None => {
                let predicted = Euler.step(x, v, sigma, sigma_next)?;
                self.stage = Some(HeunStage {
                    x: x.clone(),
                    v: v.clone(),
                    sigma,
                    sigma_next,
                });
                Ok(predicted)
            }
            Some(stage) => {
                if stage.sigma != sigma || stage.sigma_next != sigma_next {
                    return Err(DiffusionError::SamplerState {
                        reason: format!(
                            "Heun's second stage was called for {sigma}→{sigma_next} but its first \
                             stage was {}→{}",
                            stage.sigma, stage.sigma_next
                        ),
                    });
                }
                // Average of the slopes at both ends of the step.
                let dt = sigma_next - sigma;
                let slope = lin2(&stage.v, 0.5, v, 0.5)?;
                Ok((stage.x + slope.affine(dt, 0.0)?)?)
            }
        }
    }

    fn pending_eval(&self) -> Option<f64> {
        self.stage.as_ref().map(|s| s.sigma_next)
    }

    fn reset(&mut self) {
        self.stage = None;
    }

    fn evaluations(&self, schedule: &Schedule) -> usize {
        let n = schedule.num_steps();
        (2 * n).saturating_sub(1)
    }
}

/// Highest UniPC order this implementation runs (Wan samples with order 2).
const UNIPC_ORDER: usize = 2;

/// The largest sigma UniPC works at: `λ(σ) = log(1 − σ) − log σ` is −∞ at σ = 1. diffusers pulls
/// its first sigma down by the same 1e-6 in the schedule; doing it here keeps other schedules
/// (which start at exactly 1) usable too. The value is the f32 rounding diffusers ends up with.
const UNIPC_MAX_SIGMA: f64 = (1.0f32 - 1e-6f32) as f64;

/// Half-log signal-to-noise ratio of the flow path `x = (1 − σ)·x0 + σ·ε`.
fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

/// UniPC (Zhao et al. 2023, <https://arxiv.org/abs/2302.04867>), flow-prediction form, B(h) =
/// expm1(−h) ("bh2"), order 2: as diffusers' `UniPCMultistepScheduler(prediction_type=
/// "flow_prediction", use_flow_sigmas=True, solver_type="bh2")` that Wan uses.
///
/// Each step first corrects the sample it is given (UniC, using the new model output at no
/// extra cost), then predicts the next one (UniP). The first step and the last step (to σ = 0)
/// are first order, as in the reference with `lower_order_final`: a second-order step into
/// σ = 0 divides by an infinite log-SNR gap.
#[derive(Debug, Clone, Default)]
pub struct UniPc {
    /// Data predictions `x0 = x − σ·v` with their sigmas, oldest first, at most `UNIPC_ORDER`.
    history: Vec<(f64, Tensor)>,
    /// Sample the last predictor started from (after correction), and its target sigma.
    last_sample: Option<Tensor>,
    last_sigma_next: f64,
    /// Order the last predictor used; the corrector of the next step uses the same.
    last_order: usize,
}

impl UniPc {
    /// UniC: recomputes the last predictor's step from `last` to `sigma_t`, now also using the
    /// model's data prediction `m_t` at the predicted sample (the uncorrected sample itself
    /// enters only through `m_t`).
    fn correct(&self, m_t: &Tensor, sigma_t: f64, last: &Tensor) -> Result<Tensor> {
        let order = self.last_order;
        let (sigma_s0, m0) = &self.history[self.history.len() - 1];
        let (alpha_t, lambda_t) = (1.0 - sigma_t, lambda(sigma_t));
        let lambda_s0 = lambda(*sigma_s0);
        let h = lambda_t - lambda_s0;
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        // x_t_ = σ_t/σ_s0 · x_last − α_t·hφ1·m0
        let base = lin2(last, sigma_t / sigma_s0, m0, -alpha_t * h_phi_1)?;
        let d1_t = (m_t - m0)?;
        let corr = if order == 1 {
            d1_t.affine(0.5, 0.0)?
        } else {
            // Order 2: solve [[1, 1], [r, 1]]·ρ = b for the weights of D1 and D1_t.
            let (sigma_s1, m1) = &self.history[self.history.len() - 2];
            let r = (lambda(*sigma_s1) - lambda_s0) / h;
            let b1 = (h_phi_1 / hh - 1.0) / b_h;
            let h_phi_2 = (h_phi_1 / hh - 1.0) / hh - 0.5;
            let b2 = h_phi_2 * 2.0 / b_h;
            let rho0 = (b1 - b2) / (1.0 - r);
            let rho1 = b1 - rho0;
            let d1 = (m1 - m0)?;
            lin2(&d1, rho0 / r, &d1_t, rho1)?
        };
        Ok((base - corr.affine(alpha_t * b_h, 0.0)?)?)
    }

    /// UniP: predicts the sample at `sigma_t` from `x` at the newest history entry's sigma.
    fn predict(&self, x: &Tensor, sigma_t: f64, order: usize) -> Result<Tensor> {
        let (sigma_s0, m0) = &self.history[self.history.len() - 1];
        let alpha_t = 1.0 - sigma_t;
        let lambda_s0 = lambda(*sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = hh.exp_m1();
        let base = lin2(x, sigma_t / sigma_s0, m0, -alpha_t * h_phi_1)?;
        if order == 1 {
            return Ok(base);
        }
        // Order 2: ρ = 1/2 on the first difference D1 = (m1 − m0)/r.
        let (sigma_s1, m1) = &self.history[self.history.len() - 2];
        let r = (lambda(*sigma_s1) - lambda_s0) / h;
        let d1 = (m1 - m0)?;
        Ok((base - d1.affine(alpha_t * b_h * 0.5 / r, 0.0)?)?)
    }
}

impl Sampler for UniPc {
    fn step(&mut self, x: &Tensor, v: &Tensor, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        let sigma = sigma.min(UNIPC_MAX_SIGMA);
        // Data prediction at the uncorrected sample, where the model was evaluated.
        let m = (x - v.affine(sigma, 0.0)?)?;
        let x = match &self.last_sample {
            Some(last) => {
                if sigma != self.last_sigma_next.min(UNIPC_MAX_SIGMA) {
                    return Err(DiffusionError::SamplerState {
                        reason: format!(
                            "UniPC step starts at sigma {sigma} but the previous step ended at {}",
                            self.last_sigma_next
                        ),
                    });
                }
                self.correct(&m, sigma, last)?
            }
            None => x.clone(),
        };
        if self.history.len() == UNIPC_ORDER {
            self.history.remove(0);
        }
        self.history.push((sigma, m));
        let order = if sigma_next == 0.0 {
            1
        } else {
            self.history.len().min(UNIPC_ORDER)
        };
        let next = self.predict(&x, sigma_next, order)?;
        self.last_sample = Some(x);
        self.last_sigma_next = sigma_next;
        self.last_order = order;
        Ok(next)
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The samplers a user can pick by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerKind {
    Euler,
    /// [`EulerAncestral`]: the default model's sampler, whose clips it makes compact.
    EulerAncestral,
    Heun,
    /// Wan's default.
    #[default]
    UniPc,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 4] = [
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::UniPc,
    ];

    /// The samplers that solve the sampling ODE: deterministic given the starting noise, so
    /// their trajectories can be checked against diffusers' and against exact solutions.
    pub const ODE: [SamplerKind; 3] = [SamplerKind::Euler, SamplerKind::Heun, SamplerKind::UniPc];

    /// The name accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::Heun => "heun",
            SamplerKind::UniPc => "unipc",
        }
    }

    /// A fresh sampler of this kind; `seed` seeds the fresh noise of a stochastic one (the
    /// others ignore it), so the same seed gives the same trajectory. The ancestral sampler
    /// runs with η = [`DEFAULT_ETA`] down to [`DEFAULT_ETA_UNTIL`].
    pub fn build(self, seed: u64) -> Box<dyn Sampler + Send> {
        match self {
            SamplerKind::Euler => Box::new(Euler),
            SamplerKind::EulerAncestral => Box::new(EulerAncestral::with_eta(
                DEFAULT_ETA,
                DEFAULT_ETA_UNTIL,
                seed,
            )),
            SamplerKind::Heun => Box::new(Heun::default()),
            SamplerKind::UniPc => Box::new(UniPc::default()),
        }
    }

    /// As [`SamplerKind::build`], with the ancestral sampler's η and the noise level it stops
    /// drawing fresh noise below (the others ignore both).
    pub fn build_with_eta(
        self,
        seed: u64,
        eta: f64,
        until: f64,
    ) -> Result<Box<dyn Sampler + Send>> {
        match self {
            SamplerKind::EulerAncestral => Ok(Box::new(EulerAncestral::new(eta, until, seed)?)),
            kind => Ok(kind.build(seed)),
        }
    }

    /// The schedule the reference pairs with this sampler.
    pub fn schedule(self, num_steps: usize, shift: f64) -> Result<Schedule> {
        match self {
            SamplerKind::Euler | SamplerKind::EulerAncestral | SamplerKind::Heun => {
                Schedule::flow_match(num_steps, shift)
            }
            SamplerKind::UniPc => Schedule::unipc_flow(num_steps, shift),
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = DiffusionError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        SamplerKind::ALL
            .into_iter()
            .find(|k| k.name() == lower)
            .ok_or_else(|| DiffusionError::UnknownSampler {
                name: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kind_parses_names_and_lists_valid_ones() {
        for k in SamplerKind::ALL {
            assert_eq!(k.name().parse::<SamplerKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!("UniPC".parse::<SamplerKind>().unwrap(), SamplerKind::UniPc);
        let err = "ddim".parse::<SamplerKind>().unwrap_err();
        assert!(matches!(err, DiffusionError::UnknownSampler { ref name } if name == "ddim"));
        assert!(err.to_string().contains("euler, euler-a, heun, unipc"));
    }

    #[test]
    fn heun_rejects_a_mismatched_second_stage() {
        let x = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut h = Heun::default();
        let mid = h.step(&x, &x, 1.0, 0.5).unwrap();
        assert_eq!(h.pending_eval(), Some(0.5));
        assert!(matches!(
            h.step(&mid, &x, 0.9, 0.5),
            Err(DiffusionError::SamplerState { .. })
        ));
    }

    #[test]
    fn unipc_rejects_a_broken_chain() {
        let x = Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut u = UniPc::default();
        u.step(&x, &x, 0.9, 0.6).unwrap();
        assert!(matches!(
            u.step(&x, &x, 0.5, 0.3),
            Err(DiffusionError::SamplerState { .. })
        ));
        u.reset();
        u.step(&x, &x, 0.5, 0.3).unwrap();
    }

    #[test]
    fn heun_costs_two_evaluations_per_step_but_the_last() {
        let s = Schedule::flow_match(10, 3.0).unwrap();
        assert_eq!(Heun::default().evaluations(&s), 19);
        assert_eq!(UniPc::default().evaluations(&s), 10);
        assert_eq!(Euler.evaluations(&s), 10);
    }
}
