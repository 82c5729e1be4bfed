//! Deterministic randomness: every step draws from its own generator seeded by
//! `(run seed, step, stream)`, so a resumed run reproduces the uninterrupted one exactly.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator for `stream` (data, noise, ...) at `step` of a run seeded with `seed`.
pub fn step_rng(seed: u64, step: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r.set_word_pos(u128::from(step) << 32);
    // Re-seed from this position so steps are independent streams, not overlapping windows.
    ChaCha8Rng::from_rng(&mut r)
}

pub use tessera_diffusion::randn;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Result};
    use rand::Rng;

    #[test]
    fn steps_are_reproducible_and_distinct() {
        let a: u64 = step_rng(7, 3, 0).random();
        let b: u64 = step_rng(7, 3, 0).random();
        let c: u64 = step_rng(7, 4, 0).random();
        let d: u64 = step_rng(7, 3, 1).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn randn_moments() -> Result<()> {
        let t = randn(&mut step_rng(1, 0, 0), 20_000, &Device::Cpu)?;
        let m = t.mean_all()?.to_scalar::<f32>()?;
        let v = t.sqr()?.mean_all()?.to_scalar::<f32>()?;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "{m} {v}");
        Ok(())
    }
}
