//! VAE speed: encode/decode time and one training step (forward + backward) for the tiny config.
//!
//! `cargo run --release -p tessera-models --example vae_bench [frames] [size]`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tessera_models::vae::{init_varmap, AutoencoderKLWan, Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let frames = args.first().copied().unwrap_or(33);
    let size = args.get(1).copied().unwrap_or(64);
    let dev = Device::Cpu;
    let cfg = Config::tiny();
    let vm = init_varmap(&cfg, 0, &dev)?;
    let vae = AutoencoderKLWan::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    let x = Tensor::randn(0f32, 0.5, (1, 3, frames, size, size), &dev)?;
    let t = Instant::now();
    let z = vae.encode(&x)?.mean;
    let enc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let y = vae.decode(&z)?;
    let dec = t.elapsed().as_secs_f64();
    println!(
        "tiny {frames}x{size}x{size}: encode {enc:.3}s decode {dec:.3}s ({:?})",
        y.dims()
    );
    let t = Instant::now();
    let p = vae.encode(&x)?;
    let y = vae.decode_unclamped(&p.mean)?;
    let loss = (y - &x)?.abs()?.mean_all()?;
    let fwd = t.elapsed().as_secs_f64();
    let grads = loss.backward()?;
    let total = t.elapsed().as_secs_f64();
    println!(
        "train step: forward {fwd:.3}s, forward+backward {total:.3}s ({} grads)",
        vm.all_vars()
            .iter()
            .filter(|v| grads.get(v).is_some())
            .count()
    );
    Ok(())
}
