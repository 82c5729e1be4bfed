//! Encodes shapes-world clips of one split into a latent cache, the file `train_dit` and
//! `denoise_probe` read: held-out latents next to the training ones show whether the DiT's
//! denoising error generalises or is memorised.
//!
//! ```text
//! cargo run --release -p tessera-train --example encode_latents -- VAE_DIR SPLIT COUNT OUT_DIR
//! ```
//! SPLIT is train, val or test; COUNT clips of 33 frames at 64×64, world seed 0.

use std::path::Path;

use tessera_train::dit::load_vae;
use tessera_train::latents::{load_or_encode, BucketSpec, DataSpec};
use tessera_world::Split;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [vae_dir, split, count, out] = args.as_slice() else {
        return Err("usage: encode_latents VAE_DIR SPLIT COUNT OUT_DIR".into());
    };
    let split: Split = split
        .parse()
        .map_err(|e: tessera_world::WorldError| e.to_string())?;
    let (vae, vae_id) = load_vae(Some(Path::new(vae_dir)), 0, &candle_core::Device::Cpu)?;
    let spec = DataSpec::World {
        seed: 0,
        split,
        size: 64,
        fps: 16.0,
        buckets: vec![BucketSpec {
            frames: 33,
            count: count.parse()?,
        }],
        mirror: false,
        objects: None,
        heading: false,
    };
    let (set, path) = load_or_encode(&spec, &vae, vae_id, Path::new(out), |_, _| {})?;
    println!("{} items → {}", set.items.len(), path.display());
    Ok(())
}
