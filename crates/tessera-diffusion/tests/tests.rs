//! Integration tests: parity with diffusers on committed fixtures, convergence on an analytic
//! flow, SDEdit and determinism through the public driver.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use tessera_diffusion::{
    add_noise, sample, sdedit_start, DiffusionError, Euler, EulerAncestral, Eval, KnownFrames,
    Sampler, SamplerKind, Schedule,
};

// ---------------------------------------------------------------------------------------------
// Parity with diffusers (fixtures/gen/scheduler_fixtures.py)
// ---------------------------------------------------------------------------------------------

/// Must list the same (steps, shift) settings as the fixture script.
const CASES: [(usize, f64); 7] = [
    (10, 1.0),
    (10, 3.0),
    (10, 5.0),
    (4, 5.0),
    (25, 3.0),
    (1, 3.0),
    (2, 5.0),
];

fn fixtures() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/diffusion/schedulers.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn key(kind: SamplerKind, steps: usize, shift: f64) -> String {
    format!("{}_n{steps}_s{shift}", kind.name())
}

/// diffusers' Heun lists each inner sigma/timestep twice (one per stage); ours lists it once.
fn dedupe_heun(list: &[f64], keep_last: bool) -> Vec<f64> {
    let mut out = vec![list[0]];
    let body = if keep_last {
        &list[1..list.len() - 1]
    } else {
        &list[1..]
    };
    out.extend(body.iter().step_by(2));
    if keep_last {
        out.push(list[list.len() - 1]);
    }
    out
}

#[test]
fn schedules_match_diffusers() {
    let fx = fixtures();
    for kind in SamplerKind::ODE {
        for (steps, shift) in CASES {
            let k = key(kind, steps, shift);
            let mut want_sigmas = vec1(&fx[&format!("{k}.sigmas")]);
            let mut want_t = vec1(&fx[&format!("{k}.timesteps")]);
            if kind == SamplerKind::Heun {
                want_sigmas = dedupe_heun(&want_sigmas, true);
                want_t = dedupe_heun(&want_t, false);
            }
            let s = kind.schedule(steps, shift).unwrap();
            assert_eq!(s.sigmas(), want_sigmas.as_slice(), "{k} sigmas");
            assert_eq!(s.timesteps(), want_t.as_slice(), "{k} timesteps");
        }
    }
}

/// The fixture's fake model: `v = 0.3·x + t/1000 + 0.5·r`.
fn fake_velocity(x: &Tensor, e: &Eval, r: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(0.3, e.timestep / 1000.0)? + r.affine(0.5, 0.0)?
}

#[test]
fn sampler_trajectories_match_diffusers() {
    let fx = fixtures();
    let mut worst = 0.0f32;
    for kind in SamplerKind::ODE {
        for (steps, shift) in CASES {
            let k = key(kind, steps, shift);
            let (x0, r) = (&fx[&format!("{k}.x0")], &fx[&format!("{k}.r")]);
            let traj = &fx[&format!("{k}.trajectory")];
            let schedule = kind.schedule(steps, shift).unwrap();
            let mut sampler = kind.build(0);
            // Every evaluation after the first sees the previous step call's output.
            let mut outputs = Vec::new();
            let last = sample::<DiffusionError, _>(
                sampler.as_mut(),
                x0.clone(),
                &schedule,
                None,
                |x, e| {
                    if e.evaluation > 0 {
                        outputs.push(x.clone());
                    }
                    Ok(fake_velocity(x, e, r)?)
                },
            )
            .unwrap();
            outputs.push(last);
            assert_eq!(outputs.len(), traj.dim(0).unwrap(), "{k}: evaluations");
            for (i, got) in outputs.iter().enumerate() {
                let want = traj.get(i).unwrap();
                let d = max_abs_diff(got, &want);
                worst = worst.max(d);
                assert!(d <= 1e-5, "{k}: step call {i} differs by {d}");
            }
        }
    }
    println!("worst max-abs difference vs diffusers over all trajectories: {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// Convergence on an analytic flow
// ---------------------------------------------------------------------------------------------

/// Data `x0 ~ N(mu, s²)` per coordinate, noise `N(0, 1)`. The exact rectified-flow velocity is
/// `v(x, σ) = −mu + (σ − (1−σ)s²)/((1−σ)²s² + σ²)·(x − (1−σ)mu)` and the ODE carries noise `z`
/// at σ = 1 to exactly `mu + s·z` at σ = 0. Small `s` makes the paths strongly curved.
struct GaussianFlow {
    mu: Tensor,
    s: f64,
}

impl GaussianFlow {
    fn velocity(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let a = 1.0 - sigma;
        let s2 = self.s * self.s;
        let gain = (sigma - a * s2) / (a * a * s2 + sigma * sigma);
        let centred = (x - self.mu.affine(a, 0.0)?)?;
        centred.affine(gain, 0.0)? - &self.mu
    }

    /// Max-abs error of sampling `z` with `kind` over `steps` steps.
    fn error(&self, kind: SamplerKind, steps: usize, z: &Tensor) -> f32 {
        let schedule = kind.schedule(steps, 1.0).unwrap();
        let mut sampler = kind.build(0);
        let out =
            sample::<DiffusionError, _>(sampler.as_mut(), z.clone(), &schedule, None, |x, e| {
                Ok(self.velocity(x, e.sigma)?)
            })
            .unwrap();
        let exact = (&self.mu + z.affine(self.s, 0.0).unwrap()).unwrap();
        max_abs_diff(&out, &exact)
    }
}

/// Standard-normal tensor from a seeded RNG (Box–Muller), stable across platforms.
fn seeded(shape: (usize, usize, usize, usize, usize), seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.0 * shape.1 * shape.2 * shape.3 * shape.4;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

#[test]
fn samplers_converge_and_higher_order_beats_euler() {
    let flow = GaussianFlow {
        mu: seeded((1, 2, 3, 4, 4), 1),
        s: 0.2,
    };
    let z = seeded((1, 2, 3, 4, 4), 2);
    let mut table = Vec::new();
    for kind in SamplerKind::ODE {
        let errs: Vec<f32> = [4, 8, 16, 32]
            .iter()
            .map(|&n| flow.error(kind, n, &z))
            .collect();
        assert!(
            errs.windows(2).all(|w| w[1] < w[0]),
            "{kind}: error must shrink as steps grow: {errs:?}"
        );
        table.push((kind, errs));
    }
    for (kind, errs) in &table {
        println!("{kind:>5} max-abs error at 4/8/16/32 steps: {errs:?}");
    }
    // Equal model evaluations: Heun with n steps costs 2n − 1, Euler and UniPC one per step.
    for n in [4, 8, 16] {
        let euler = flow.error(SamplerKind::Euler, 2 * n - 1, &z);
        let heun = flow.error(SamplerKind::Heun, n, &z);
        let unipc = flow.error(SamplerKind::UniPc, 2 * n - 1, &z);
        println!(
            "{} evaluations: euler {euler:e}, heun {heun:e}, unipc {unipc:e}",
            2 * n - 1
        );
        assert!(
            heun < euler,
            "heun {heun} vs euler {euler} at {} evals",
            2 * n - 1
        );
        assert!(
            unipc < euler,
            "unipc {unipc} vs euler {euler} at {} evals",
            2 * n - 1
        );
    }
}

// ---------------------------------------------------------------------------------------------
// SDEdit, known frames, determinism
// ---------------------------------------------------------------------------------------------

#[test]
fn sdedit_strength_zero_returns_the_input_and_one_is_generation() {
    let x0 = seeded((1, 4, 3, 4, 4), 3);
    let noise = seeded((1, 4, 3, 4, 4), 4);
    let velocity =
        |x: &Tensor, _: &Eval| -> Result<Tensor, DiffusionError> { Ok(x.affine(0.7, 0.2)?) };
    for kind in SamplerKind::ALL {
        let full = kind.schedule(8, 3.0).unwrap();
        let none = full.sdedit(0.0).unwrap();
        let start = sdedit_start(&x0, &noise, &none).unwrap();
        let out = sample(kind.build(0).as_mut(), start, &none, None, velocity).unwrap();
        assert_eq!(max_abs_diff(&out, &x0), 0.0, "{kind} at strength 0");

        let all = full.sdedit(1.0).unwrap();
        assert_eq!(all, full);
        let start = sdedit_start(&x0, &noise, &all).unwrap();
        let gen_out = sample(kind.build(0).as_mut(), start, &all, None, velocity).unwrap();
        let pure = sample(kind.build(0).as_mut(), noise.clone(), &full, None, velocity).unwrap();
        // UniPC starts 1e-6 below pure noise, so the input leaks in by at most ~1e-6.
        assert!(max_abs_diff(&gen_out, &pure) < 1e-5, "{kind} at strength 1");

        let half = full.sdedit(0.5).unwrap();
        let start = sdedit_start(&x0, &noise, &half).unwrap();
        let expect =
            add_noise(&x0, &noise, &Tensor::new(&[0.5f32], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&start, &expect), 0.0);
        assert!(half.num_steps() < full.num_steps());
    }
}

#[test]
fn same_inputs_same_output_bits() {
    let flow = GaussianFlow {
        mu: seeded((2, 2, 3, 4, 4), 5),
        s: 0.3,
    };
    let known = KnownFrames::new(seeded((2, 2, 3, 4, 4), 6), vec![true, false, false]).unwrap();
    for kind in SamplerKind::ALL {
        let run = || {
            let schedule = kind.schedule(6, 3.0).unwrap();
            sample::<DiffusionError, _>(
                kind.build(0).as_mut(),
                seeded((2, 2, 3, 4, 4), 7),
                &schedule,
                Some(&known),
                |x, e| Ok(flow.velocity(x, e.sigma)?),
            )
            .unwrap()
        };
        let (a, b) = (run(), run());
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{kind}");
    }
}

#[test]
fn sampler_reuse_after_reset_matches_a_fresh_one() {
    let flow = GaussianFlow {
        mu: seeded((1, 2, 2, 2, 2), 8),
        s: 0.2,
    };
    let z = seeded((1, 2, 2, 2, 2), 9);
    for kind in SamplerKind::ALL {
        let schedule = kind.schedule(5, 2.0).unwrap();
        let mut reused = kind.build(0);
        let go = |s: &mut dyn Sampler| {
            sample::<DiffusionError, _>(s, z.clone(), &schedule, None, |x, e| {
                Ok(flow.velocity(x, e.sigma)?)
            })
            .unwrap()
        };
        let first = go(reused.as_mut());
        let second = go(reused.as_mut());
        assert_eq!(max_abs_diff(&first, &second), 0.0, "{kind}");
    }
}

#[test]
fn custom_schedules_work_with_every_ode_sampler() {
    let s = Schedule::from_sigmas(vec![1.0, 0.6, 0.3, 0.1, 0.0]).unwrap();
    let flow = GaussianFlow {
        mu: seeded((1, 1, 2, 2, 2), 10),
        s: 0.5,
    };
    let z = seeded((1, 1, 2, 2, 2), 11);
    for kind in SamplerKind::ODE {
        let out =
            sample::<DiffusionError, _>(kind.build(0).as_mut(), z.clone(), &s, None, |x, e| {
                Ok(flow.velocity(x, e.sigma)?)
            })
            .unwrap();
        let exact = (&flow.mu + z.affine(flow.s, 0.0).unwrap()).unwrap();
        let err = max_abs_diff(&out, &exact);
        assert!(err.is_finite() && err < 0.5, "{kind}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Ancestral sampling
// ---------------------------------------------------------------------------------------------

/// A one-point data distribution at `mu`: the exact velocity is `(x − μ)/σ`, so every clean
/// estimate is μ and each ancestral step must land on `(1 − σ_next)·μ + σ_next·noise`.
fn dirac_velocity(mu: &Tensor) -> impl Fn(&Tensor, &Eval) -> Result<Tensor, DiffusionError> + '_ {
    move |x, e| Ok((x - mu)?.affine(1.0 / e.sigma, 0.0)?)
}

#[test]
fn ancestral_sampling_keeps_the_noise_level_and_lands_on_the_data() {
    let mu = seeded((1, 4, 4, 8, 8), 12);
    // The noise in a sample `x = (1 − σ)·μ + σ·noise` of the one-point data.
    let noise_of = |x: &Tensor, sigma: f64| -> candle_core::Result<Tensor> {
        (x - mu.affine(1.0 - sigma, 0.0)?)?.affine(1.0 / sigma, 0.0)
    };
    let mean = |t: Tensor| t.mean_all().unwrap().to_scalar::<f32>().unwrap();
    let schedule = SamplerKind::EulerAncestral.schedule(10, 3.0).unwrap();
    let mut noises = Vec::new();
    let x = sample(
        SamplerKind::EulerAncestral.build(3).as_mut(),
        seeded((1, 4, 4, 8, 8), 13),
        &schedule,
        None,
        |x, e| {
            noises.push(noise_of(x, e.sigma)?);
            dirac_velocity(&mu)(x, e)
        },
    )
    .unwrap();
    assert!(max_abs_diff(&x, &mu) < 1e-5);
    // Every step's noise has unit variance and is fresh: uncorrelated with the step before.
    for (i, pair) in noises.windows(2).enumerate() {
        let var = mean(pair[1].sqr().unwrap());
        let corr = mean((&pair[0] * &pair[1]).unwrap());
        assert!((var - 1.0).abs() < 0.15, "step {i}: noise variance {var}");
        assert!(
            corr.abs() < 0.15,
            "step {i}: correlation with the step before {corr}"
        );
    }
}

#[test]
fn ancestral_sampling_is_seeded_and_eta_zero_is_euler() {
    let mu = seeded((1, 2, 3, 4, 4), 14);
    let z = seeded((1, 2, 3, 4, 4), 15);
    // A velocity that is not exact, so the trajectory depends on the fresh noise.
    let v = |x: &Tensor, e: &Eval| -> Result<Tensor, DiffusionError> {
        Ok((x - &mu)?.affine(0.8 / e.sigma, 0.0)?)
    };
    let schedule = SamplerKind::EulerAncestral.schedule(6, 3.0).unwrap();
    let run = |s: &mut dyn Sampler| sample(s, z.clone(), &schedule, None, v).unwrap();
    let (a, b) = (
        run(SamplerKind::EulerAncestral.build(1).as_mut()),
        run(SamplerKind::EulerAncestral.build(1).as_mut()),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let c = run(SamplerKind::EulerAncestral.build(2).as_mut());
    assert!(
        max_abs_diff(&a, &c) > 1e-3,
        "another seed, another trajectory"
    );
    let euler = run(&mut Euler);
    let eta0 = run(&mut EulerAncestral::new(0.0, 0.0, 1).unwrap());
    assert!(max_abs_diff(&euler, &eta0) < 1e-5);
    for eta in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            EulerAncestral::new(eta, 0.0, 0),
            Err(DiffusionError::InvalidEta { .. })
        ));
        assert!(matches!(
            EulerAncestral::new(1.0, eta, 0),
            Err(DiffusionError::InvalidEtaUntil { .. })
        ));
    }
}

#[test]
fn ancestral_sampling_stops_fresh_noise_below_until() {
    let mu = seeded((1, 2, 3, 4, 4), 14);
    let z = seeded((1, 2, 3, 4, 4), 15);
    let vel = |x: &Tensor, sigma: f64| (x - &mu).unwrap().affine(0.8 / sigma, 0.0).unwrap();
    let v = |x: &Tensor, e: &Eval| -> Result<Tensor, DiffusionError> { Ok(vel(x, e.sigma)) };
    let schedule = SamplerKind::EulerAncestral.schedule(6, 1.0).unwrap();
    let run = |s: &mut dyn Sampler| sample(s, z.clone(), &schedule, None, v).unwrap();
    let cut = schedule.sigmas()[3];
    // By hand: ancestral steps while landing at or above `cut`, Euler steps after.
    let mut ancestral = EulerAncestral::new(1.0, 0.0, 7).unwrap();
    let mut x = z.clone();
    for w in schedule.sigmas().windows(2) {
        let s: &mut dyn Sampler = if w[1] >= cut {
            &mut ancestral
        } else {
            &mut Euler
        };
        x = s.step(&x, &vel(&x, w[0]), w[0], w[1]).unwrap();
    }
    let got = run(&mut EulerAncestral::new(1.0, cut, 7).unwrap());
    assert!(max_abs_diff(&got, &x) < 1e-6);
    let all = run(&mut EulerAncestral::new(1.0, 0.0, 7).unwrap());
    assert!(
        max_abs_diff(&got, &all) > 1e-3,
        "late steps took no fresh noise"
    );
    // Above every level: no fresh noise at all, plain Euler.
    let none = run(&mut EulerAncestral::new(1.0, 1.0, 7).unwrap());
    assert!(max_abs_diff(&none, &run(&mut Euler)) < 1e-5);
}
