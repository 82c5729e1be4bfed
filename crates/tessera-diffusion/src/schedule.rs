//! Noise-level schedules: pure functions from (steps, shift) to sigmas falling from 1 to 0.

use crate::error::{DiffusionError, Result};

/// Timesteps the model was trained on: it sees `timestep = σ · NUM_TRAIN_TIMESTEPS`.
pub const NUM_TRAIN_TIMESTEPS: f64 = 1000.0;

/// Wan's timestep shift: `σ' = shift·σ / (1 + (shift − 1)·σ)`.
///
/// `shift > 1` spends more steps at high noise, which large latents need because their
/// redundancy lets structure survive more noise (SD3 §5.3.2). Fixes 0 and 1.
pub fn shift_sigma(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// A sampling schedule: `num_steps + 1` sigmas falling strictly to a final 0, and the timestep
/// the model is given at each of the first `num_steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    /// UniPC's reference truncates timesteps to integers; kept so inserted sigmas follow suit.
    integer_timesteps: bool,
}

fn check_steps_shift(num_steps: usize, shift: f64) -> Result<()> {
    if num_steps == 0 {
        return Err(DiffusionError::ZeroSteps);
    }
    if !shift.is_finite() || shift <= 0.0 {
        return Err(DiffusionError::InvalidShift { shift });
    }
    Ok(())
}

/// `numpy.linspace(start, stop, num)` term by term, so schedules match the reference bit for bit.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    out[num - 1] = stop;
    out
}

impl Schedule {
    /// The schedule of diffusers' `FlowMatchEulerDiscreteScheduler(shift)` (and its Heun sibling).
    ///
    /// Matches the reference's quirk of shifting twice at the low end: the last nonzero sigma is
    /// `shift(linspace(1, shift(1/1000)))`, not `shift(1/1000)`. Sigmas are rounded to f32 like
    /// the reference's, so the fixture comparison is exact.
    pub fn flow_match(num_steps: usize, shift: f64) -> Result<Self> {
        check_steps_shift(num_steps, shift)?;
        // The reference's 1000-entry training table is f32; its last entry becomes sigma_min.
        let s32 = shift as f32;
        let t_min = 1.0f32 / NUM_TRAIN_TIMESTEPS as f32;
        let sigma_min = (s32 * t_min / (1.0 + (s32 - 1.0) * t_min)) as f64;
        let ts = linspace(
            NUM_TRAIN_TIMESTEPS,
            sigma_min * NUM_TRAIN_TIMESTEPS,
            num_steps,
        );
        let mut sigmas: Vec<f64> = ts
            .iter()
            .map(|t| shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift) as f32 as f64)
            .collect();
        let timesteps = sigmas
            .iter()
            .map(|&s| (s as f32 * NUM_TRAIN_TIMESTEPS as f32) as f64)
            .collect();
        sigmas.push(0.0);
        Ok(Self {
            sigmas,
            timesteps,
            integer_timesteps: false,
        })
    }

    /// The schedule of diffusers' `UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift)`,
    /// the one Wan samples with: `shift(linspace(1, 1/1000, n + 1)[:-1])`, the first sigma pulled
    /// 1e-6 below 1 (so `log(1 − σ)` stays finite), integer timesteps, final 0.
    pub fn unipc_flow(num_steps: usize, shift: f64) -> Result<Self> {
        check_steps_shift(num_steps, shift)?;
        let mut raw: Vec<f64> = linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, num_steps + 1)
            .into_iter()
            .take(num_steps)
            .map(|s| shift_sigma(s, shift))
            .collect();
        if (raw[0] - 1.0).abs() < 1e-6 {
            raw[0] -= 1e-6;
        }
        let timesteps = raw
            .iter()
            .map(|s| (s * NUM_TRAIN_TIMESTEPS).trunc())
            .collect();
        let mut sigmas: Vec<f64> = raw.iter().map(|&s| s as f32 as f64).collect();
        sigmas.push(0.0);
        Ok(Self {
            sigmas,
            timesteps,
            integer_timesteps: true,
        })
    }

    /// A custom schedule; timesteps are `σ · 1000`.
    pub fn from_sigmas(sigmas: Vec<f64>) -> Result<Self> {
        let invalid = |reason: String| Err(DiffusionError::InvalidSigmas { reason });
        if sigmas.len() < 2 {
            return invalid(format!("got {} sigmas, need at least 2", sigmas.len()));
        }
        if let Some(s) = sigmas
            .iter()
            .find(|s| !s.is_finite() || **s < 0.0 || **s > 1.0)
        {
            return invalid(format!("sigma {s} is outside [0, 1]"));
        }
        if let Some(w) = sigmas.windows(2).find(|w| w[1] >= w[0]) {
            return invalid(format!("{} is followed by {}", w[0], w[1]));
        }
        if sigmas[sigmas.len() - 1] != 0.0 {
            return invalid(format!("last sigma is {}", sigmas[sigmas.len() - 1]));
        }
        let timesteps = sigmas[..sigmas.len() - 1]
            .iter()
            .map(|s| s * NUM_TRAIN_TIMESTEPS)
            .collect();
        Ok(Self {
            sigmas,
            timesteps,
            integer_timesteps: false,
        })
    }

    /// `num_steps + 1` noise levels, strictly falling, the last one 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The timestep (`0..=1000`) the model is given at each step, `num_steps` of them.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Steps from the first sigma to 0 (0 for an SDEdit schedule at strength 0).
    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// Noise level of the starting latent.
    pub fn start_sigma(&self) -> f64 {
        self.sigmas[0]
    }

    /// The model timestep for a noise level off the grid (Heun's second stage, an SDEdit start),
    /// rounded as this schedule's own timesteps are.
    pub fn timestep_of(&self, sigma: f64) -> f64 {
        let t = sigma * NUM_TRAIN_TIMESTEPS;
        if self.integer_timesteps {
            t.trunc()
        } else {
            t
        }
    }

    /// SDEdit: the tail of this schedule that starts at noise level `strength`.
    ///
    /// Steps above `strength` are dropped and `strength` itself becomes the first sigma, so the
    /// edit starts from the input noised to exactly `t = strength`. Strength 0 leaves no steps
    /// (the input comes back unchanged); a strength at or above the first sigma keeps the whole
    /// schedule (pure generation).
    pub fn sdedit(&self, strength: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(DiffusionError::InvalidStrength { strength });
        }
        if strength >= self.sigmas[0] {
            return Ok(self.clone());
        }
        // First grid point at or below `strength`; the final 0 guarantees there is one.
        let k = self
            .sigmas
            .iter()
            .position(|&s| s <= strength)
            .unwrap_or(self.sigmas.len() - 1);
        let (mut sigmas, mut timesteps) = (Vec::new(), Vec::new());
        if self.sigmas[k] != strength {
            sigmas.push(strength);
            timesteps.push(self.timestep_of(strength));
        }
        sigmas.extend_from_slice(&self.sigmas[k..]);
        timesteps.extend_from_slice(&self.timesteps[k.min(self.timesteps.len())..]);
        Ok(Self {
            sigmas,
            timesteps,
            integer_timesteps: self.integer_timesteps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_fixes_ends_and_raises_middle() {
        for shift in [1.0, 3.0, 5.0] {
            assert_eq!(shift_sigma(0.0, shift), 0.0);
            assert_eq!(shift_sigma(1.0, shift), 1.0);
        }
        assert!((shift_sigma(0.5, 3.0) - 0.75).abs() < 1e-12);
        assert_eq!(shift_sigma(0.3, 1.0), 0.3);
    }

    #[test]
    fn schedules_fall_to_zero() {
        for steps in [1, 2, 10, 50] {
            for s in [
                Schedule::flow_match(steps, 5.0).unwrap(),
                Schedule::unipc_flow(steps, 3.0).unwrap(),
            ] {
                assert_eq!(s.num_steps(), steps);
                assert_eq!(s.sigmas().len(), steps + 1);
                assert_eq!(*s.sigmas().last().unwrap(), 0.0);
                assert!(s.sigmas().windows(2).all(|w| w[1] < w[0]));
                assert!(s.start_sigma() <= 1.0 && s.start_sigma() > 0.99);
            }
        }
    }

    #[test]
    fn bad_arguments_are_rejected() {
        assert!(matches!(
            Schedule::flow_match(0, 3.0),
            Err(DiffusionError::ZeroSteps)
        ));
        assert!(matches!(
            Schedule::unipc_flow(4, 0.0),
            Err(DiffusionError::InvalidShift { .. })
        ));
        assert!(matches!(
            Schedule::flow_match(4, f64::NAN),
            Err(DiffusionError::InvalidShift { .. })
        ));
        for bad in [
            vec![1.0],
            vec![1.0, 0.5],
            vec![0.5, 0.7, 0.0],
            vec![1.5, 0.0],
        ] {
            assert!(matches!(
                Schedule::from_sigmas(bad),
                Err(DiffusionError::InvalidSigmas { .. })
            ));
        }
        let s = Schedule::flow_match(4, 3.0).unwrap();
        assert!(matches!(
            s.sdedit(1.5),
            Err(DiffusionError::InvalidStrength { .. })
        ));
    }

    #[test]
    fn sdedit_truncates_at_strength() {
        let s = Schedule::flow_match(10, 3.0).unwrap();
        let zero = s.sdedit(0.0).unwrap();
        assert_eq!(zero.num_steps(), 0);
        assert_eq!(zero.sigmas(), &[0.0]);
        assert_eq!(s.sdedit(1.0).unwrap(), s);

        let half = s.sdedit(0.5).unwrap();
        assert_eq!(half.start_sigma(), 0.5);
        assert!((half.timesteps()[0] - 500.0).abs() < 1e-9);
        let kept: Vec<f64> = s.sigmas().iter().copied().filter(|&x| x < 0.5).collect();
        assert_eq!(&half.sigmas()[1..], kept.as_slice());
        assert_eq!(half.num_steps(), half.sigmas().len() - 1);

        // A strength exactly on the grid adds no extra step.
        let on_grid = s.sigmas()[4];
        let t = s.sdedit(on_grid).unwrap();
        assert_eq!(t.sigmas(), &s.sigmas()[4..]);
        assert_eq!(t.timesteps(), &s.timesteps()[4..]);

        let u = Schedule::unipc_flow(10, 3.0)
            .unwrap()
            .sdedit(0.4567)
            .unwrap();
        assert_eq!(u.timesteps()[0], 456.0);
    }
}
