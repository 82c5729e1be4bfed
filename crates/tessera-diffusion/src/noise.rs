//! Seeded Gaussian noise. Candle's CPU `randn` cannot be seeded, and both "same seed, same
//! video" (sampling) and "a resumed run replays the same steps" (training) need it, so noise is
//! drawn from a caller-owned generator here.

use candle_core::{Device, Result, Shape, Tensor};
use rand::Rng;

/// Standard-normal f32 tensor (Box–Muller) drawn from `rng`.
pub fn randn(rng: &mut impl Rng, shape: impl Into<Shape>, dev: &Device) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count();
    let mut v = Vec::with_capacity(n + 1);
    while v.len() < n {
        // 1 − u keeps the logarithm's argument in (0, 1].
        let u1: f32 = 1.0 - rng.random::<f32>();
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f32::consts::TAU * u2;
        v.push(r * a.cos());
        v.push(r * a.sin());
    }
    v.truncate(n);
    Tensor::from_vec(v, shape, dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn same_seed_same_noise_and_unit_moments() -> Result<()> {
        let draw = |seed| randn(&mut ChaCha8Rng::seed_from_u64(seed), 20_000, &Device::Cpu);
        let (a, b, c) = (draw(7)?, draw(7)?, draw(8)?);
        assert_eq!(a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        assert_ne!(a.to_vec1::<f32>()?, c.to_vec1::<f32>()?);
        let m = a.mean_all()?.to_scalar::<f32>()?;
        let v = a.sqr()?.mean_all()?.to_scalar::<f32>()?;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
        // Odd sizes use half of the last pair.
        assert_eq!(
            randn(&mut ChaCha8Rng::seed_from_u64(1), 5, &Device::Cpu)?.dims(),
            [5]
        );
        Ok(())
    }
}
