//! How much a model's DiT output depends on the prompt: relative change of the velocity
//! prediction between two different prompts, and between a prompt and the empty prompt, on the
//! same noise at one timestep. Near 0 at high noise (t ≈ 1000, where only the caption can tell
//! the model what to draw) means the model ignores its text.
//!
//! ```text
//! cargo run --release -p tessera-pipeline --example text_sensitivity -- MODEL_DIR [T]
//! cargo run --release -p tessera-pipeline --example text_sensitivity -- random [T]  # fresh weights
//! ```

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tessera_pipeline::Model;

const PROMPTS: [&str; 3] = [
    "A plain sky backdrop stands above a checkered olive floor. A large green square in the center moves steadily to the right.",
    "A plain sky backdrop stands above a checkered beige floor. A large yellow circle in the bottom right falls.",
    "",
];

/// `|a − b| / |a|` (Frobenius).
fn rel(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    let d = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    Ok(d / a.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt().max(1e-12))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: text_sensitivity MODEL_DIR|random [T]")?;
    let t: f32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(999.0);
    let dev = Device::Cpu;
    let m = if dir == "random" {
        Model::random_default_arch(0)?
    } else {
        Model::load(std::path::Path::new(&dir), &dev)?
    };
    let e = m.text.encode(&PROMPTS)?;
    // Is it the encoder that ignores the words? Mean text state over real tokens, A vs B.
    let pooled = tessera_models::dit::masked_mean(&e.states, Some(&e.mask))?;
    let pooled = |i: usize| pooled.narrow(0, i, 1);
    println!(
        "relative change of the mean text state: other prompt {:.4}",
        rel(&pooled(0)?, &pooled(1)?)?
    );
    let t = Tensor::new(&[t], &dev)?;
    // Mean over a few seeded Gaussian latents: a structured input would let the model "see" a
    // picture where there is only noise and under-report its use of the text.
    let (mut other, mut empty) = (0f32, 0f32);
    const DRAWS: u64 = 4;
    for seed in 0..DRAWS {
        let x =
            tessera_diffusion::randn(&mut ChaCha8Rng::seed_from_u64(seed), (1, 16, 9, 8, 8), &dev)?;
        let v = |i: usize| {
            m.dit.forward(
                &x,
                &t,
                &e.states.narrow(0, i, 1)?,
                Some(&e.mask.narrow(0, i, 1)?),
            )
        };
        let (a, b, c) = (v(0)?, v(1)?, v(2)?);
        other += rel(&a, &b)? / DRAWS as f32;
        empty += rel(&a, &c)? / DRAWS as f32;
    }
    println!("relative change of the DiT output: other prompt {other:.4}, empty prompt {empty:.4}");
    Ok(())
}
