//! Rectified-flow training pieces: noising, the velocity target, timestep sampling, caption
//! dropout. The straight path `x_t = (1 − t)·x0 + t·ε` has the constant velocity `ε − x0`.

use candle_core::Tensor;
use rand::Rng;

use crate::driver::{filled, frame_levels};
use crate::error::{video_dims, DiffusionError, Result};
use crate::mask::{masks_to_tensor, ConditionMask, MaskSampler};
use crate::schedule::{shift_sigma, Schedule, NUM_TRAIN_TIMESTEPS};

/// Fraction of training captions replaced by the empty text, so the same model also learns the
/// unconditional velocity that classifier-free guidance needs.
pub const CAPTION_DROPOUT: f64 = 0.1;

/// `(1 − t)·x0 + t·noise` for `x0`, `noise` `(B, C, T, H, W)` and `t` in `[0, 1]`, either `(B,)`
/// (one level per item) or `(B, T)` (one per frame; known frames 0). Exact at the ends: `t = 0`
/// returns `x0` and `t = 1` returns `noise`, bit for bit.
pub fn add_noise(x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
    if x0.dims() != noise.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what: "noise vs clean latents",
            expected: format!("{:?}", x0.dims()),
            got: noise.dims().to_vec(),
        });
    }
    let (b, _, frames, _, _) = video_dims(x0, "clean latents")?;
    let t = match t.dims() {
        [n] if *n == b => t.reshape((b, 1, 1, 1, 1))?,
        [n, f] if *n == b && *f == frames => t.reshape((b, 1, frames, 1, 1))?,
        other => {
            return Err(DiffusionError::ShapeMismatch {
                what: "noise levels t",
                expected: format!("({b},) or ({b}, {frames})"),
                got: other.to_vec(),
            })
        }
    }
    .to_dtype(x0.dtype())?;
    let keep = t.affine(-1.0, 1.0)?;
    Ok((x0.broadcast_mul(&keep)? + noise.broadcast_mul(&t)?)?)
}

/// The regression target for the model's output: `noise − x0`.
pub fn velocity_target(x0: &Tensor, noise: &Tensor) -> Result<Tensor> {
    Ok((noise - x0)?)
}

/// SDEdit's starting point: `x0` noised to the first sigma of an [`Schedule::sdedit`] schedule.
pub fn sdedit_start(x0: &Tensor, noise: &Tensor, schedule: &Schedule) -> Result<Tensor> {
    let b = x0.dim(0)?;
    add_noise(x0, noise, &filled(schedule.start_sigma(), b, x0.device())?)
}

/// How training draws noise levels `t ∈ [0, 1]`; always deterministic given the RNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimestepSampler {
    /// `t = shift(sigmoid(mean + std·z))`, `z ~ N(0, 1)`: SD3's logit-normal, which spends
    /// training on the middle levels where the velocity is hardest to predict.
    LogitNormal { mean: f64, std: f64, shift: f64 },
    /// `t = shift(u)`, `u ~ U[0, 1)`: Wan's choice; `shift > 1` for larger latents.
    ShiftedUniform { shift: f64 },
}

impl Default for TimestepSampler {
    /// SD3's recommended logit-normal(0, 1), unshifted: right for our small 64×64 latents.
    fn default() -> Self {
        TimestepSampler::LogitNormal {
            mean: 0.0,
            std: 1.0,
            shift: 1.0,
        }
    }
}

/// Standard normal by Box–Muller; `1 − u` keeps the logarithm's argument in (0, 1].
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl TimestepSampler {
    /// Rejects non-finite parameters, `std ≤ 0` and `shift ≤ 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(DiffusionError::InvalidTimestepSampler { reason });
        let shift = match *self {
            TimestepSampler::LogitNormal { mean, std, shift } => {
                if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                    return bad(format!(
                        "logit-normal needs a finite mean and std > 0, got mean {mean}, std {std}"
                    ));
                }
                shift
            }
            TimestepSampler::ShiftedUniform { shift } => shift,
        };
        if !shift.is_finite() || shift <= 0.0 {
            return bad(format!("shift must be finite and > 0, got {shift}"));
        }
        Ok(())
    }

    /// `n` noise levels in `[0, 1]`.
    pub fn sample(&self, rng: &mut impl Rng, n: usize) -> Result<Vec<f64>> {
        self.validate()?;
        Ok((0..n)
            .map(|_| match *self {
                TimestepSampler::LogitNormal { mean, std, shift } => {
                    let logit = mean + std * standard_normal(rng);
                    shift_sigma(1.0 / (1.0 + (-logit).exp()), shift)
                }
                TimestepSampler::ShiftedUniform { shift } => {
                    shift_sigma(rng.random::<f64>(), shift)
                }
            })
            .collect())
    }
}

/// Whether to train this sample on the empty caption, with probability `p`
/// ([`CAPTION_DROPOUT`] by default).
pub fn drop_caption(rng: &mut impl Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// Everything one training step feeds the model and the loss, for a batch of clean latents.
#[derive(Debug, Clone)]
pub struct TrainingExample {
    /// `(B, C, T, H, W)` model input: known frames clean, the rest noised to their level.
    pub x_t: Tensor,
    /// `(B, T)` f32 model timesteps (`σ · 1000`), 0 on known frames.
    pub timesteps: Tensor,
    /// `(B, C, T, H, W)` velocity target `noise − x0`.
    pub target: Tensor,
    /// `(B, T)` f32, 1 on known frames: pass to [`crate::masked_mse`].
    pub known: Tensor,
    /// The mask drawn for each item.
    pub masks: Vec<ConditionMask>,
    /// The noise level drawn for each item, in `[0, 1]`.
    pub sigmas: Vec<f64>,
}

impl TrainingExample {
    /// Draws one noise level and one conditioning mask per item of `x0` `(B, C, T, H, W)`
    /// from `rng` and builds the noised input; `noise` has `x0`'s shape. Items given a frame
    /// draw their level again from `conditioned` when there is one: at the levels where the
    /// noisy frames still show the motion, a model copies it from them instead of reading the
    /// caption, so image→video needs more of its training where only the caption can tell.
    pub fn draw(
        x0: &Tensor,
        noise: &Tensor,
        timesteps: &TimestepSampler,
        conditioned: Option<&TimestepSampler>,
        masks: &MaskSampler,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let (b, _, frames, _, _) = video_dims(x0, "clean latents")?;
        let mut sigmas = timesteps.sample(rng, b)?;
        let drawn: Vec<ConditionMask> = (0..b).map(|_| masks.sample(rng, frames)).collect();
        let flags = drawn
            .iter()
            .map(|m| m.frames(frames))
            .collect::<Result<Vec<_>>>()?;
        if let Some(cond) = conditioned {
            for (sigma, known) in sigmas.iter_mut().zip(&flags) {
                if known.iter().any(|&k| k) {
                    *sigma = cond.sample(rng, 1)?[0];
                }
            }
        }
        let levels = frame_levels(&sigmas, &flags, x0.device())?;
        Ok(Self {
            x_t: add_noise(x0, noise, &levels)?,
            timesteps: levels.affine(NUM_TRAIN_TIMESTEPS, 0.0)?,
            target: velocity_target(x0, noise)?,
            known: masks_to_tensor(&flags, x0.device())?,
            masks: drawn,
            sigmas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn video(seed: f32) -> Tensor {
        let data: Vec<f32> = (0..2 * 2 * 3 * 2 * 2)
            .map(|i| ((i as f32) * 0.71 + seed).cos() * 1.3)
            .collect();
        Tensor::from_vec(data, (2, 2, 3, 2, 2), &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn add_noise_is_exact_at_both_ends() {
        let (x0, eps) = (video(0.0), video(5.0));
        let dev = Device::Cpu;
        let zero = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let one = Tensor::ones(2, DType::F32, &dev).unwrap();
        assert_eq!(flat(&add_noise(&x0, &eps, &zero).unwrap()), flat(&x0));
        assert_eq!(flat(&add_noise(&x0, &eps, &one).unwrap()), flat(&eps));
        let half = Tensor::full(0.5f32, 2, &dev).unwrap();
        let mid = flat(&add_noise(&x0, &eps, &half).unwrap());
        for ((m, a), b) in mid.iter().zip(flat(&x0)).zip(flat(&eps)) {
            assert!((m - 0.5 * (a + b)).abs() < 1e-6);
        }
    }

    #[test]
    fn add_noise_per_frame_keeps_known_frames_clean() {
        let (x0, eps) = (video(1.0), video(2.0));
        let t = Tensor::new(&[[0.0f32, 0.7, 1.0], [0.3, 0.0, 0.0]], &Device::Cpu).unwrap();
        let xt = add_noise(&x0, &eps, &t).unwrap();
        let frame = |x: &Tensor, b: usize, f: usize| {
            flat(&x.narrow(0, b, 1).unwrap().narrow(2, f, 1).unwrap())
        };
        assert_eq!(frame(&xt, 0, 0), frame(&x0, 0, 0));
        assert_eq!(frame(&xt, 0, 2), frame(&eps, 0, 2));
        assert_eq!(frame(&xt, 1, 1), frame(&x0, 1, 1));
        assert_eq!(frame(&xt, 1, 2), frame(&x0, 1, 2));
        let bad = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            add_noise(&x0, &eps, &bad),
            Err(DiffusionError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn velocity_moves_x0_to_noise() {
        let (x0, eps) = (video(3.0), video(4.0));
        let v = velocity_target(&x0, &eps).unwrap();
        let back = (&x0 + &v).unwrap();
        for (a, b) in flat(&back).iter().zip(flat(&eps)) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn timestep_samplers_are_seeded_and_in_range() {
        for s in [
            TimestepSampler::default(),
            TimestepSampler::LogitNormal {
                mean: 0.5,
                std: 0.8,
                shift: 3.0,
            },
            TimestepSampler::ShiftedUniform { shift: 3.0 },
        ] {
            let a = s.sample(&mut ChaCha8Rng::seed_from_u64(7), 2000).unwrap();
            let b = s.sample(&mut ChaCha8Rng::seed_from_u64(7), 2000).unwrap();
            assert_eq!(a, b);
            assert!(a.iter().all(|t| (0.0..=1.0).contains(t)));
        }
        // Logit-normal(0, 1) is symmetric about 1/2; shift 3 moves uniform's median to 3/4.
        let ln = TimestepSampler::default()
            .sample(&mut ChaCha8Rng::seed_from_u64(1), 20000)
            .unwrap();
        let mean = ln.iter().sum::<f64>() / ln.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "logit-normal mean {mean}");
        let mut u = TimestepSampler::ShiftedUniform { shift: 3.0 }
            .sample(&mut ChaCha8Rng::seed_from_u64(2), 20001)
            .unwrap();
        u.sort_by(f64::total_cmp);
        assert!((u[10000] - 0.75).abs() < 0.01, "median {}", u[10000]);
        assert!(TimestepSampler::LogitNormal {
            mean: 0.0,
            std: 0.0,
            shift: 1.0
        }
        .sample(&mut ChaCha8Rng::seed_from_u64(0), 1)
        .is_err());
        assert!(TimestepSampler::ShiftedUniform { shift: -1.0 }
            .validate()
            .is_err());
    }

    #[test]
    fn caption_dropout_rate() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 20000;
        let dropped = (0..n)
            .filter(|_| drop_caption(&mut rng, CAPTION_DROPOUT))
            .count();
        let rate = dropped as f64 / n as f64;
        assert!((rate - 0.1).abs() < 0.01, "rate {rate}");
        assert!(!drop_caption(&mut rng, 0.0));
    }

    #[test]
    fn training_example_keeps_known_frames_clean_and_out_of_the_loss() {
        use crate::mask::{masked_mse, MaskProbs};
        let (x0, eps) = (video(0.5), video(6.0));
        let masks = MaskSampler::new(
            MaskProbs {
                none: 0.0,
                first: 1.0,
                first_k: 0.0,
                last_k: 0.0,
                first_last: 0.0,
                random: 0.0,
            },
            0.5,
        )
        .unwrap();
        let ts = TimestepSampler::default();
        let draw = |seed| {
            TrainingExample::draw(
                &x0,
                &eps,
                &ts,
                None,
                &masks,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
            .unwrap()
        };
        let ex = draw(4);
        assert_eq!(ex.masks, vec![ConditionMask::First; 2]);
        assert_eq!(
            flat(&ex.x_t.narrow(2, 0, 1).unwrap()),
            flat(&x0.narrow(2, 0, 1).unwrap())
        );
        let t = ex.timesteps.to_vec2::<f32>().unwrap();
        for (b, row) in t.iter().enumerate() {
            assert_eq!(row[0], 0.0);
            assert!((row[1] as f64 - ex.sigmas[b] * 1000.0).abs() < 1e-3);
            assert_eq!(row[1], row[2]);
        }
        // A prediction that is exact on the noisy frames and wild on the known one costs 0.
        let wild = ex
            .target
            .narrow(2, 0, 1)
            .unwrap()
            .affine(0.0, 99.0)
            .unwrap();
        let rest = ex.target.narrow(2, 1, 2).unwrap();
        let pred = Tensor::cat(&[&wild, &rest], 2).unwrap();
        let loss = masked_mse(&pred, &ex.target, &ex.known).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
        // Seeded: same draw twice.
        assert_eq!(flat(&draw(4).x_t), flat(&ex.x_t));
        assert_eq!(draw(4).sigmas, ex.sigmas);
    }

    #[test]
    fn conditioned_items_draw_their_level_from_their_own_sampler() {
        let x0 = Tensor::zeros((64, 1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let masks: MaskSampler = MaskSampler::new("none=1,first=1".parse().unwrap(), 0.3).unwrap();
        let low = TimestepSampler::ShiftedUniform { shift: 1e-3 };
        let high = TimestepSampler::ShiftedUniform { shift: 1e3 };
        let rng = &mut ChaCha8Rng::seed_from_u64(7);
        let ex = TrainingExample::draw(&x0, &x0, &low, Some(&high), &masks, rng).unwrap();
        let first = ex
            .masks
            .iter()
            .filter(|m| **m == ConditionMask::First)
            .count();
        assert!(
            (16..48).contains(&first),
            "{first} of 64 given a first frame"
        );
        for (m, s) in ex.masks.iter().zip(&ex.sigmas) {
            match m {
                ConditionMask::None => assert!(*s < 0.01, "text→video item at {s}"),
                _ => assert!(*s > 0.99, "image→video item at {s}"),
            }
        }
        // The model sees the redrawn level on the noisy frames.
        let t = ex.timesteps.to_vec2::<f32>().unwrap();
        for ((row, m), s) in t.iter().zip(&ex.masks).zip(&ex.sigmas) {
            let first_level = if *m == ConditionMask::First {
                0.0
            } else {
                *s * 1000.0
            };
            assert!((row[0] as f64 - first_level).abs() < 1e-2);
            assert!((row[2] as f64 - s * 1000.0).abs() < 1e-2);
        }
    }

    #[test]
    fn sdedit_start_at_strength_zero_is_the_input() {
        let (x0, eps) = (video(1.5), video(8.0));
        let s = Schedule::flow_match(10, 3.0).unwrap().sdedit(0.0).unwrap();
        assert_eq!(flat(&sdedit_start(&x0, &eps, &s).unwrap()), flat(&x0));
    }
}
