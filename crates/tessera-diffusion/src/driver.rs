//! The sampling loop and known-frame conditioning.
//!
//! Every generation mode is one loop: text→video has no known frames; image→video, extend,
//! connect and loop keep some latent frames clean (t = 0) and re-impose them after each update.

use candle_core::{Device, Tensor};

use crate::error::{video_dims, DiffusionError, Result};
use crate::sampler::Sampler;
use crate::schedule::Schedule;

/// Where the model is evaluated: handed to the denoise closure of [`sample`].
#[derive(Debug, Clone)]
pub struct Eval {
    /// Noise level of the sample, in `[0, 1]`.
    pub sigma: f64,
    /// The scalar timestep (`0..=1000`) for the noisy frames.
    pub timestep: f64,
    /// `(B, T)` f32 per-frame timesteps: `timestep` on noisy frames, 0 on known frames.
    pub frame_timesteps: Tensor,
    /// Step of the schedule this evaluation belongs to, `0..num_steps`.
    pub step: usize,
    /// Steps in the schedule.
    pub num_steps: usize,
    /// Model evaluations done before this one (for progress).
    pub evaluation: usize,
    /// Model evaluations the whole run takes ([`Sampler::evaluations`]).
    pub num_evaluations: usize,
}

/// `(B, T)` f32 tensor holding `values[b]` on every frame of item `b`, except 0 on its known
/// frames: per-frame noise levels for training (σ) or per-frame model timesteps (σ·1000).
pub fn frame_levels(values: &[f64], known: &[Vec<bool>], device: &Device) -> Result<Tensor> {
    if values.len() != known.len() {
        return Err(DiffusionError::ShapeMismatch {
            what: "per-frame levels: one known-frame mask per batch item",
            expected: format!("{} masks", values.len()),
            got: vec![known.len()],
        });
    }
    let frames = known.first().map_or(0, Vec::len);
    if let Some(m) = known.iter().find(|m| m.len() != frames) {
        return Err(DiffusionError::ShapeMismatch {
            what: "per-frame levels: masks of one batch must cover the same frame count",
            expected: format!("{frames} frames"),
            got: vec![m.len()],
        });
    }
    let data: Vec<f32> = values
        .iter()
        .zip(known)
        .flat_map(|(&v, mask)| mask.iter().map(move |&k| if k { 0.0 } else { v as f32 }))
        .collect();
    Ok(Tensor::from_vec(data, (values.len(), frames), device)?)
}

/// Latent frames held fixed while the others are sampled.
#[derive(Debug, Clone)]
pub struct KnownFrames {
    /// `(B, C, T, H, W)`; only the known frames' values matter.
    latents: Tensor,
    known: Vec<bool>,
    /// `(1, 1, T, 1, 1)` u8, 1 on known frames.
    mask: Tensor,
}

impl KnownFrames {
    /// `latents` `(B, C, T, H, W)` carries the clean latents of the frames where `known[t]`.
    pub fn new(latents: Tensor, known: Vec<bool>) -> Result<Self> {
        let (_, _, t, _, _) = video_dims(&latents, "known-frame latents")?;
        if known.len() != t {
            return Err(DiffusionError::InvalidMask {
                reason: format!(
                    "mask covers {} frames but the latents have {t}; give one flag per latent frame",
                    known.len()
                ),
            });
        }
        let flags: Vec<u8> = known.iter().map(|&k| u8::from(k)).collect();
        let mask = Tensor::from_vec(flags, (1, 1, t, 1, 1), latents.device())?;
        Ok(Self {
            latents,
            known,
            mask,
        })
    }

    /// One flag per latent frame, `true` where the frame is known.
    pub fn known(&self) -> &[bool] {
        &self.known
    }

    /// `x` with the known frames replaced by their clean latents, bit for bit.
    pub fn impose(&self, x: &Tensor) -> Result<Tensor> {
        if x.dims() != self.latents.dims() {
            return Err(DiffusionError::ShapeMismatch {
                what: "sample vs known-frame latents",
                expected: format!("{:?}", self.latents.dims()),
                got: x.dims().to_vec(),
            });
        }
        let mask = self.mask.broadcast_as(x.shape())?;
        let known = self.latents.to_dtype(x.dtype())?;
        Ok(mask.where_cond(&known, x)?)
    }
}

/// Runs `sampler` over `schedule` from `x` (the noise, or the noised input for SDEdit),
/// evaluating the model through `denoise(x, eval) -> v`, which returns the velocity for the
/// `(B, C, T, H, W)` sample `x` at `eval.frame_timesteps`.
///
/// With `known`, known frames are imposed on `x` before every evaluation and on the result, and
/// get timestep 0. The closure's error type is the caller's, so a pipeline can bubble its own
/// model errors through unchanged.
pub fn sample<E, F>(
    sampler: &mut dyn Sampler,
    x: Tensor,
    schedule: &Schedule,
    known: Option<&KnownFrames>,
    mut denoise: F,
) -> std::result::Result<Tensor, E>
where
    E: From<DiffusionError>,
    F: FnMut(&Tensor, &Eval) -> std::result::Result<Tensor, E>,
{
    let (b, _, t, _, _) = video_dims(&x, "sample latents")?;
    let all_noisy = vec![false; t];
    let known_flags = known.map_or(all_noisy.as_slice(), KnownFrames::known);
    let masks = vec![known_flags.to_vec(); b];
    let impose = |x: Tensor| -> Result<Tensor> {
        match known {
            Some(k) => k.impose(&x),
            None => Ok(x),
        }
    };
    sampler.reset();
    let num_steps = schedule.num_steps();
    let num_evaluations = sampler.evaluations(schedule);
    let mut evaluation = 0;
    let mut x = impose(x)?;
    let sigmas = schedule.sigmas();
    for (step, &timestep) in schedule.timesteps().iter().enumerate() {
        let (sigma, sigma_next) = (sigmas[step], sigmas[step + 1]);
        let mut at = (sigma, timestep);
        loop {
            let eval = Eval {
                sigma: at.0,
                timestep: at.1,
                frame_timesteps: frame_levels(&vec![at.1; b], &masks, x.device())?,
                step,
                num_steps,
                evaluation,
                num_evaluations,
            };
            let v = denoise(&x, &eval)?;
            evaluation += 1;
            x = impose(sampler.step(&x, &v, sigma, sigma_next)?)?;
            match sampler.pending_eval() {
                Some(s) => at = (s, schedule.timestep_of(s)),
                None => break,
            }
        }
    }
    Ok(x)
}

/// A `(B,)` f32 tensor of one value, for scalar per-item quantities.
pub(crate) fn filled(value: f64, n: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(value as f32, n, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{Euler, SamplerKind};
    use candle_core::DType;

    fn latents(t: usize, seed: f32) -> Tensor {
        let n = 2 * 3 * t * 2 * 2;
        let data: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        Tensor::from_vec(data, (2, 3, t, 2, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn frame_levels_zero_known_frames() {
        let t = frame_levels(
            &[500.0, 250.0],
            &[vec![true, false], vec![false, true]],
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 500.0], vec![250.0, 0.0]]
        );
        assert!(frame_levels(&[1.0], &[vec![true], vec![false]], &Device::Cpu).is_err());
    }

    #[test]
    fn impose_keeps_known_frames_bit_exact() {
        let clean = latents(4, 1.0);
        let noisy = latents(4, 7.0);
        let k = KnownFrames::new(clean.clone(), vec![true, false, false, true]).unwrap();
        let out = k.impose(&noisy).unwrap();
        for (f, known) in [(0, true), (1, false), (2, false), (3, true)] {
            let got = out.narrow(2, f, 1).unwrap().flatten_all().unwrap();
            let src = if known { &clean } else { &noisy };
            let want = src.narrow(2, f, 1).unwrap().flatten_all().unwrap();
            assert_eq!(
                got.to_vec1::<f32>().unwrap(),
                want.to_vec1::<f32>().unwrap()
            );
        }
        assert!(matches!(
            KnownFrames::new(clean, vec![true]),
            Err(DiffusionError::InvalidMask { .. })
        ));
    }

    #[test]
    fn sampling_keeps_known_frames_and_zeroes_their_timesteps() {
        let clean = latents(3, 2.0);
        let k = KnownFrames::new(clean.clone(), vec![true, false, true]).unwrap();
        for kind in SamplerKind::ALL {
            let schedule = kind.schedule(5, 3.0).unwrap();
            let mut sampler = kind.build(0);
            let mut seen = Vec::new();
            let out = sample::<DiffusionError, _>(
                sampler.as_mut(),
                latents(3, 9.0),
                &schedule,
                Some(&k),
                |x, e| {
                    seen.push(e.frame_timesteps.to_vec2::<f32>()?);
                    // A velocity that would move every frame.
                    Ok(x.affine(0.5, 0.1)?)
                },
            )
            .unwrap();
            assert_eq!(seen.len(), sampler.evaluations(&schedule));
            for ts in &seen {
                for row in ts {
                    assert_eq!(row[0], 0.0);
                    assert_eq!(row[2], 0.0);
                    assert!(row[1] > 0.0);
                }
            }
            for f in [0, 2] {
                let got = out.narrow(2, f, 1).unwrap().flatten_all().unwrap();
                let want = clean.narrow(2, f, 1).unwrap().flatten_all().unwrap();
                assert_eq!(
                    got.to_vec1::<f32>().unwrap(),
                    want.to_vec1::<f32>().unwrap()
                );
            }
        }
    }

    #[test]
    fn sample_rejects_non_video_latents() {
        let s = Schedule::flow_match(2, 1.0).unwrap();
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let r = sample::<DiffusionError, _>(&mut Euler, x, &s, None, |x, _| Ok(x.clone()));
        assert!(matches!(r, Err(DiffusionError::ShapeMismatch { .. })));
    }
}
