//! Where a 2-second 64×64 generation spends its time, per phase, for the default model (or its
//! architecture with random weights when the folder is absent):
//! `cargo run --release -p tessera-pipeline --example speed -- [STEPS] [CFG] [NEGATIVE]` (the
//! model's own sampling defaults where left out).

use std::ops::ControlFlow;

use tessera_pipeline::{generate, GenerateRequest, Model, NoHook, RequestSpec, Sampling};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let cfg: Option<f64> = args.next().map(|s| s.parse()).transpose()?;
    let negative = args.next().unwrap_or_default();
    let dir = Model::default_dir();
    let model = if dir.join("dit").is_dir() {
        Model::load(&dir, &candle_core::Device::Cpu)?
    } else {
        Model::random_default_arch(0)?
    };
    let out = tempfile_path();
    let req = GenerateRequest::new(RequestSpec {
        negative,
        frames: Some(33),
        sampling: Sampling {
            steps: steps.unwrap_or(model.sampling.steps),
            cfg: cfg.unwrap_or(model.sampling.cfg),
            ..model.sampling.clone()
        },
        ..RequestSpec::text("a red ball bounces", &out)
    })?;
    for _ in 0..2 {
        let s = generate(
            &model,
            &req,
            &mut NoHook,
            &mut |_| ControlFlow::Continue(()),
        )?;
        println!("{} {}", s.model, serde_json::to_string(&s.timings)?);
    }
    std::fs::remove_file(out)?;
    Ok(())
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tessera-speed-{}.mp4", std::process::id()))
}
