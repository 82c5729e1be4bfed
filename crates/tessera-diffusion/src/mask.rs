//! Conditioning masks over latent frames: which frames a training sample shows the model clean.
//!
//! One mechanism trains every mode: no known frames is text→video, the first is image→video,
//! first-k / last-k are extend forward / backward, first+last is connect (and loop), random
//! frames teach interpolation. Known frames are clean with t = 0 and carry no loss.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{video_dims, DiffusionError, Result};

/// Which latent frames are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionMask {
    /// Text→video: nothing known.
    None,
    /// Image→video.
    First,
    /// Extend forward from the first `k` frames.
    FirstK(usize),
    /// Extend backward from the last `k` frames.
    LastK(usize),
    /// Connect two clips (and loop: connect a clip's end to its start).
    FirstLast,
    /// Explicit per-frame flags.
    Random(Vec<bool>),
}

impl ConditionMask {
    /// One flag per latent frame, `true` where known. Errors unless at least one of the
    /// `num_frames` frames stays unknown (there would be nothing to generate or learn).
    pub fn frames(&self, num_frames: usize) -> Result<Vec<bool>> {
        let invalid = |reason: String| Err(DiffusionError::InvalidMask { reason });
        let known_count = |k: usize| {
            if k == 0 || k >= num_frames {
                return Err(DiffusionError::InvalidMask {
                    reason: format!(
                        "{self:?} needs 1 ≤ k < {num_frames} (the latent frame count), got k = {k}"
                    ),
                });
            }
            Ok(k)
        };
        let mut mask = vec![false; num_frames];
        match self {
            ConditionMask::None => {}
            ConditionMask::First => {
                known_count(1)?;
                mask[0] = true;
            }
            ConditionMask::FirstK(k) => mask[..known_count(*k)?].fill(true),
            ConditionMask::LastK(k) => mask[num_frames - known_count(*k)?..].fill(true),
            ConditionMask::FirstLast => {
                if num_frames < 3 {
                    return invalid(format!(
                        "first+last needs at least 3 latent frames to leave one unknown, got {num_frames}"
                    ));
                }
                mask[0] = true;
                mask[num_frames - 1] = true;
            }
            ConditionMask::Random(flags) => {
                if flags.len() != num_frames {
                    return invalid(format!(
                        "{} flags for {num_frames} latent frames",
                        flags.len()
                    ));
                }
                mask.copy_from_slice(flags);
            }
        }
        if !mask.is_empty() && mask.iter().all(|&k| k) {
            return invalid("every frame is known; leave at least one to generate".to_string());
        }
        Ok(mask)
    }
}

/// Relative weights of the mask kinds drawn in training (normalised by their sum).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaskProbs {
    pub none: f64,
    pub first: f64,
    pub first_k: f64,
    pub last_k: f64,
    pub first_last: f64,
    pub random: f64,
}

impl Default for MaskProbs {
    /// Text→video stays the most common task since every other mode builds on it; image→video
    /// is the most used conditioned mode; the rest share what is left.
    fn default() -> Self {
        Self {
            none: 0.4,
            first: 0.2,
            first_k: 0.1,
            last_k: 0.1,
            first_last: 0.1,
            random: 0.1,
        }
    }
}

impl MaskProbs {
    /// Kind names in the order of [`Self::weights`] (and of [`MaskSampler::sample`]'s draw).
    const NAMES: [&'static str; 6] = ["none", "first", "first_k", "last_k", "first_last", "random"];

    fn weights(&self) -> [f64; 6] {
        [
            self.none,
            self.first,
            self.first_k,
            self.last_k,
            self.first_last,
            self.random,
        ]
    }

    fn from_weights([none, first, first_k, last_k, first_last, random]: [f64; 6]) -> Self {
        Self {
            none,
            first,
            first_k,
            last_k,
            first_last,
            random,
        }
    }
}

/// `none=0.2,first_k=0.5,…`: a fine-tune can weight the task it needs (long-video windows
/// continue two known frames: `first_k`). Kinds not named get weight 0.
impl std::str::FromStr for MaskProbs {
    type Err = DiffusionError;

    fn from_str(s: &str) -> Result<Self> {
        let mut weights = [0.0; 6];
        let bad = |reason: String| DiffusionError::InvalidProbabilities { reason };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not NAME=WEIGHT")))?;
            let i = Self::NAMES
                .iter()
                .position(|n| *n == name.trim())
                .ok_or_else(|| {
                    bad(format!(
                        "unknown mask kind `{name}` (kinds: {})",
                        Self::NAMES.join(", ")
                    ))
                })?;
            weights[i] = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{value}` is not a number")))?;
        }
        Ok(Self::from_weights(weights))
    }
}

/// Seeded sampler of training masks.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskSampler {
    probs: [f64; 6],
    /// Chance each frame is known under [`ConditionMask::Random`].
    random_known: f64,
}

impl MaskSampler {
    /// `random_known` is the per-frame chance of being known for random masks, in `[0, 1]`.
    pub fn new(probs: MaskProbs, random_known: f64) -> Result<Self> {
        let p = probs.weights();
        let bad = |reason: String| Err(DiffusionError::InvalidProbabilities { reason });
        if p.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return bad(format!("mask weights {probs:?}"));
        }
        let sum: f64 = p.iter().sum();
        if sum <= 0.0 {
            return bad(format!("mask weights sum to {sum}"));
        }
        if !(0.0..=1.0).contains(&random_known) {
            return bad(format!("per-frame known chance {random_known}"));
        }
        Ok(Self {
            probs: p.map(|x| x / sum),
            random_known,
        })
    }

    /// A mask for a clip of `num_frames` latent frames, valid for it: kinds that cannot leave a
    /// frame unknown there (any conditioning on a single frame, first+last on two) fall back to
    /// [`ConditionMask::None`].
    pub fn sample(&self, rng: &mut impl Rng, num_frames: usize) -> ConditionMask {
        let u = rng.random::<f64>();
        let mut acc = 0.0;
        let mut kind = self.probs.len() - 1;
        for (i, p) in self.probs.iter().enumerate() {
            acc += p;
            if u < acc {
                kind = i;
                break;
            }
        }
        if num_frames < 2 || (kind == 4 && num_frames < 3) {
            return ConditionMask::None;
        }
        match kind {
            0 => ConditionMask::None,
            1 => ConditionMask::First,
            2 => ConditionMask::FirstK(rng.random_range(1..num_frames)),
            3 => ConditionMask::LastK(rng.random_range(1..num_frames)),
            4 => ConditionMask::FirstLast,
            _ => {
                let mut flags: Vec<bool> = (0..num_frames)
                    .map(|_| rng.random_bool(self.random_known))
                    .collect();
                if flags.iter().all(|&k| k) {
                    flags[rng.random_range(0..num_frames)] = false;
                }
                ConditionMask::Random(flags)
            }
        }
    }
}

/// `(B, T)` f32, 1 on known frames: the per-item masks of a training batch.
pub fn masks_to_tensor(masks: &[Vec<bool>], device: &Device) -> Result<Tensor> {
    let ones = vec![1.0; masks.len()];
    // Levels of 1 with known frames at 0 are the unknown-frame indicator; flip it.
    let unknown = crate::driver::frame_levels(&ones, masks, device)?;
    Ok(unknown.affine(-1.0, 1.0)?)
}

/// Mean squared error over the unknown frames only: `pred`, `target` `(B, C, T, H, W)`,
/// `known` `(B, T)` with 1 on known frames (from [`masks_to_tensor`]). Differentiable in `pred`.
pub fn masked_mse(pred: &Tensor, target: &Tensor, known: &Tensor) -> Result<Tensor> {
    weighted_masked_mse(pred, target, known, None)
}

/// [`masked_mse`] with each position's squared error scaled by `weights` `(B, 1, T, H, W)`
/// (e.g. [`object_weights`], mean 1 per frame, so the loss keeps its scale).
pub fn weighted_masked_mse(
    pred: &Tensor,
    target: &Tensor,
    known: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    if pred.dims() != target.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what: "prediction vs target",
            expected: format!("{:?}", target.dims()),
            got: pred.dims().to_vec(),
        });
    }
    let (b, c, t, h, w) = video_dims(pred, "prediction")?;
    if known.dims() != [b, t] {
        return Err(DiffusionError::ShapeMismatch {
            what: "known-frame mask",
            expected: format!("({b}, {t})"),
            got: known.dims().to_vec(),
        });
    }
    let weight = known
        .to_dtype(DType::F32)?
        .affine(-1.0, 1.0)?
        .reshape((b, 1, t, 1, 1))?
        .to_dtype(pred.dtype())?;
    let unknown_frames = weight.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if unknown_frames <= 0.0 {
        return Err(DiffusionError::NoLossFrames);
    }
    let mut sq = (pred - target)?.sqr()?.broadcast_mul(&weight)?;
    if let Some(wt) = weights {
        if wt.dims() != [b, 1, t, h, w] {
            return Err(DiffusionError::ShapeMismatch {
                what: "loss weights",
                expected: format!("({b}, 1, {t}, {h}, {w})"),
                got: wt.dims().to_vec(),
            });
        }
        sq = sq.broadcast_mul(&wt.to_dtype(pred.dtype())?)?;
    }
    let count = f64::from(unknown_frames) * (c * h * w) as f64;
    Ok(sq.sum_all()?.affine(1.0 / count, 0.0)?)
}

/// Loss weights `(B, 1, T, H, W)` that lift what stands out of each latent frame: a position's
/// distance (over channels) from the frame's mean latent, relative to the frame's mean distance
/// `s`, as `(1 + strength·s) / (1 + strength)` — mean 1 per frame, `strength` 0 gives all ones.
/// A small object fills a few latent positions, so under a plain MSE the backdrop outweighs it
/// and a DiT can lower its loss while ignoring the caption's objects (TRAINING.md, session 14).
pub fn object_weights(x0: &Tensor, strength: f64) -> Result<Tensor> {
    if !(strength.is_finite() && strength >= 0.0) {
        return Err(DiffusionError::InvalidObjectWeight { strength });
    }
    let x0 = x0.to_dtype(DType::F32)?;
    let frame_mean = x0.mean_keepdim(3)?.mean_keepdim(4)?;
    // + 1e-3 (latents have unit spread): a flat frame weighs every position 1.
    let dist = x0
        .broadcast_sub(&frame_mean)?
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .affine(1.0, 1e-3)?;
    let s = dist.broadcast_div(&dist.mean_keepdim(3)?.mean_keepdim(4)?)?;
    Ok(s.affine(strength / (1.0 + strength), 1.0 / (1.0 + strength))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn mask_weights_parse_by_name() {
        let p: MaskProbs = "none=0.25, first_k=0.5,first_last=0.25".parse().unwrap();
        assert_eq!(
            p,
            MaskProbs {
                none: 0.25,
                first: 0.0,
                first_k: 0.5,
                last_k: 0.0,
                first_last: 0.25,
                random: 0.0,
            }
        );
        for bad in ["first_k", "middle=1", "none=x"] {
            let err = bad.parse::<MaskProbs>().unwrap_err();
            assert!(
                matches!(err, DiffusionError::InvalidProbabilities { .. }),
                "{bad}"
            );
        }
        // Parsing accepts all-zero weights; the sampler is what refuses them.
        let zero: MaskProbs = "none=0".parse().unwrap();
        assert!(MaskSampler::new(zero, 0.3).is_err());
    }

    #[test]
    fn each_kind_marks_the_right_frames() {
        let f = |m: ConditionMask| m.frames(5).unwrap();
        assert_eq!(f(ConditionMask::None), vec![false; 5]);
        assert_eq!(f(ConditionMask::First), [true, false, false, false, false]);
        assert_eq!(
            f(ConditionMask::FirstK(2)),
            [true, true, false, false, false]
        );
        assert_eq!(f(ConditionMask::LastK(3)), [false, false, true, true, true]);
        assert_eq!(
            f(ConditionMask::FirstLast),
            [true, false, false, false, true]
        );
        let r = vec![false, true, false, true, false];
        assert_eq!(f(ConditionMask::Random(r.clone())), r);
    }

    #[test]
    fn masks_that_cover_everything_are_rejected() {
        for (m, n) in [
            (ConditionMask::First, 1),
            (ConditionMask::FirstK(3), 3),
            (ConditionMask::FirstK(0), 3),
            (ConditionMask::LastK(4), 2),
            (ConditionMask::FirstLast, 2),
            (ConditionMask::Random(vec![true, true]), 2),
            (ConditionMask::Random(vec![true]), 2),
        ] {
            assert!(
                matches!(m.frames(n), Err(DiffusionError::InvalidMask { .. })),
                "{m:?} on {n} frames"
            );
        }
        assert_eq!(ConditionMask::None.frames(1).unwrap(), vec![false]);
    }

    #[test]
    fn sampler_draws_every_kind_and_always_leaves_a_frame_unknown() {
        let s = MaskSampler::new(MaskProbs::default(), 0.5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut counts = [0usize; 6];
        for i in 0..4000 {
            let frames = 1 + i % 9;
            let m = s.sample(&mut rng, frames);
            let flags = m.frames(frames).unwrap();
            assert!(flags.iter().any(|&k| !k), "{m:?}");
            if frames == 1 {
                assert_eq!(m, ConditionMask::None);
            }
            let idx = match m {
                ConditionMask::None => 0,
                ConditionMask::First => 1,
                ConditionMask::FirstK(_) => 2,
                ConditionMask::LastK(_) => 3,
                ConditionMask::FirstLast => 4,
                ConditionMask::Random(_) => 5,
            };
            counts[idx] += 1;
        }
        assert!(counts.iter().all(|&c| c > 100), "{counts:?}");
        // Same seed, same masks.
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50).map(|_| s.sample(&mut rng, 9)).collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn only_first_frame_probability_gives_first() {
        let probs = MaskProbs {
            none: 0.0,
            first: 1.0,
            first_k: 0.0,
            last_k: 0.0,
            first_last: 0.0,
            random: 0.0,
        };
        let s = MaskSampler::new(probs, 0.5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!((0..100).all(|_| s.sample(&mut rng, 4) == ConditionMask::First));
        let zero = MaskProbs {
            first: 0.0,
            ..probs
        };
        assert!(matches!(
            MaskSampler::new(zero, 0.5),
            Err(DiffusionError::InvalidProbabilities { .. })
        ));
        assert!(MaskSampler::new(MaskProbs::default(), 1.5).is_err());
    }

    #[test]
    fn masked_mse_gradient_is_zero_on_known_frames() {
        let dev = Device::Cpu;
        let data: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| (i as f32 * 0.3).sin()).collect();
        let pred = candle_core::Var::from_vec(data, (1, 2, 3, 2, 2), &dev).unwrap();
        let target = Tensor::zeros((1, 2, 3, 2, 2), DType::F32, &dev).unwrap();
        let known = masks_to_tensor(&[vec![false, true, false]], &dev).unwrap();
        let loss = masked_mse(pred.as_tensor(), &target, &known).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(pred.as_tensor())
            .expect("masked_mse must backpropagate");
        // d/dp mean((p − y)²) over the 2 unknown frames × 2·2·2 elements = 2(p − y)/16.
        let want = (pred.as_tensor() - &target)
            .unwrap()
            .affine(2.0 / 16.0, 0.0)
            .unwrap();
        for f in 0..3 {
            let got: Vec<f32> = g
                .narrow(2, f, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            if f == 1 {
                assert!(got.iter().all(|&x| x == 0.0));
            } else {
                let w: Vec<f32> = want
                    .narrow(2, f, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                for (a, b) in got.iter().zip(&w) {
                    assert!((a - b).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn masked_mse_ignores_known_frames() {
        let dev = Device::Cpu;
        let target = Tensor::zeros((2, 2, 3, 2, 2), DType::F32, &dev).unwrap();
        // Error 1 on frame 0 of every item, 2 elsewhere... with frame 0 known, loss is 4.
        let mut data = vec![2.0f32; 2 * 2 * 3 * 2 * 2];
        for (i, v) in data.iter_mut().enumerate() {
            if (i / 4) % 3 == 0 {
                *v = 100.0;
            }
        }
        let pred = Tensor::from_vec(data, (2, 2, 3, 2, 2), &dev).unwrap();
        let known =
            masks_to_tensor(&[vec![true, false, false], vec![true, false, false]], &dev).unwrap();
        assert_eq!(known.to_vec2::<f32>().unwrap()[0], vec![1.0, 0.0, 0.0]);
        let loss = masked_mse(&pred, &target, &known).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 4.0).abs() < 1e-6);
        let all = masks_to_tensor(&[vec![true; 3], vec![true; 3]], &dev).unwrap();
        assert!(matches!(
            masked_mse(&pred, &target, &all),
            Err(DiffusionError::NoLossFrames)
        ));
    }

    /// A frame of one plain value with one odd position: the odd position gets the most weight,
    /// every frame's weights average 1, strength 0 is all ones (and the plain MSE), a bad
    /// strength is refused; the weighted loss is the hand-computed weighted mean.
    #[test]
    fn object_weights_lift_the_odd_position_and_keep_the_loss_scale() {
        let dev = Device::Cpu;
        let mut data = vec![0.5f32; 2 * 3 * 4];
        data[3] = 4.0; // channel 0, frame 0, position (h 1, w 0) of a (1, 2, 2, 2, 3) clip
        let x0 = Tensor::from_vec(data, (1, 2, 2, 2, 3), &dev).unwrap();
        let w = object_weights(&x0, 4.0).unwrap();
        assert_eq!(w.dims(), &[1, 1, 2, 2, 3]);
        let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let (frame0, frame1) = v.split_at(6);
        // Distances 35/12 and 7/12 (mean 35/36): s = 3 and 0.6, weights (1 + 4s) / 5.
        assert!((frame0[3] - 2.6).abs() < 3e-3, "{frame0:?}");
        assert!(frame0
            .iter()
            .enumerate()
            .all(|(i, &x)| i == 3 || (x - 0.68).abs() < 1e-3));
        for f in [frame0, frame1] {
            let mean = f.iter().sum::<f32>() / 6.0;
            assert!((mean - 1.0).abs() < 1e-5, "frame mean weight {mean}");
        }
        // Frame 1 is flat: nothing stands out, every weight is 1.
        assert!(frame1.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{frame1:?}");
        let ones = object_weights(&x0, 0.0).unwrap().flatten_all().unwrap();
        assert!(ones.to_vec1::<f32>().unwrap().iter().all(|&x| x == 1.0));
        assert!(matches!(
            object_weights(&x0, -1.0),
            Err(DiffusionError::InvalidObjectWeight { .. })
        ));

        let pred = Tensor::zeros((1, 2, 2, 2, 3), DType::F32, &dev).unwrap();
        let target = Tensor::ones((1, 2, 2, 2, 3), DType::F32, &dev).unwrap();
        let known = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
        let plain = masked_mse(&pred, &target, &known).unwrap();
        let weighted = weighted_masked_mse(&pred, &target, &known, Some(&w)).unwrap();
        // Squared error 1 everywhere, frame 0 known: the weighted mean is frame 1's mean weight.
        assert_eq!(plain.to_scalar::<f32>().unwrap(), 1.0);
        assert!((weighted.to_scalar::<f32>().unwrap() - 1.0).abs() < 1e-5);
        let bad = Tensor::ones((1, 1, 2, 2, 2), DType::F32, &dev).unwrap();
        assert!(matches!(
            weighted_masked_mse(&pred, &target, &known, Some(&bad)),
            Err(DiffusionError::ShapeMismatch { .. })
        ));
    }
}
