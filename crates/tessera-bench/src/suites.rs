//! The benchmark suites. Each returns rows; none asserts anything (correctness lives in tests).

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::{cpu::Cpu, median_ms, Row};

/// fp32 matmul throughput for a square 1024³ product and the DiT's own shapes
/// (tokens × hidden → 4·hidden MLP at the reference config: 2·1024 tokens, hidden 256).
pub fn gemm(cpu: &Cpu, runs: usize) -> Result<Vec<Row>> {
    let shapes = [
        (1024, 1024, 1024, "square 1024³"),
        (2048, 256, 1024, "DiT MLP in (2048×256·256×1024)"),
        (2048, 256, 768, "DiT qkv (2048×256·256×768)"),
    ];
    let mut rows = Vec::new();
    for (m, k, n, what) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
        let ms = median_ms(runs, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        let gflops = 2.0 * (m * k * n) as f64 / (ms * 1e6);
        rows.push(Row {
            suite: "gemm",
            name: format!("candle matmul {what}"),
            median_ms: ms,
            throughput: gflops,
            unit: "GFLOP/s",
            note: format!("{:.0}% of assumed peak", 100.0 * gflops / cpu.peak_gflops),
        });
    }
    Ok(rows)
}

/// Shapes-world throughput: rendering alone, and the full `world sample` path (render, H.264
/// encode, write files) for the 1,000-clip target.
pub fn world(runs: usize) -> Result<Vec<Row>> {
    use tessera_world::{render_clips, sample_dataset, SampleOptions, Selection};
    let opts = SampleOptions {
        count: 1000,
        ..SampleOptions::default()
    };
    let note = format!("{}×{}×{} clips", opts.frames, opts.width, opts.height);
    let render_ms = median_ms(runs, || {
        render_clips(&opts)?;
        Ok(())
    })?;
    // One timed run after a small warm-up: writing 1,000 files twice more adds little information.
    let dir = tempfile::tempdir()?;
    sample_dataset(
        &SampleOptions { count: 16, ..opts },
        &Selection::default(),
        dir.path().join("warm"),
        |_| (),
    )?;
    let start = std::time::Instant::now();
    sample_dataset(&opts, &Selection::default(), dir.path().join("run"), |_| ())?;
    let sample_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(vec![
        Row {
            suite: "world",
            name: "render 1000 clips (no encode)".into(),
            median_ms: render_ms,
            throughput: 1e6 / render_ms,
            unit: "clips/s",
            note: note.clone(),
        },
        Row {
            suite: "world",
            name: "world sample 1000 clips (render+mp4+jsonl)".into(),
            median_ms: sample_ms,
            throughput: 1e6 / sample_ms,
            unit: "clips/s",
            note: format!("{note}; target < 60 s; single run"),
        },
    ])
}

/// MP4 (H.264) encode and decode speed on world clips at two sizes.
pub fn media(runs: usize) -> Result<Vec<Row>> {
    use tessera_media::{decode_bytes, encode_mp4};
    use tessera_world::{generate_clip, SampleOptions};
    let mut rows = Vec::new();
    for size in [64, 256] {
        let opts = SampleOptions {
            width: size,
            height: size,
            ..SampleOptions::default()
        };
        let video = generate_clip(&opts, 0)?.video;
        let frames = video.frames.len() as f64;
        let mut bytes = Vec::new();
        let enc_ms = median_ms(runs, || {
            bytes = encode_mp4(&video)?;
            Ok(())
        })?;
        let dec_ms = median_ms(runs, || {
            decode_bytes(&bytes)?;
            Ok(())
        })?;
        let shape = format!("{}×{size}×{size}", video.frames.len());
        for (what, ms) in [("encode", enc_ms), ("decode", dec_ms)] {
            rows.push(Row {
                suite: "media",
                name: format!("mp4 {what} {shape}"),
                median_ms: ms,
                throughput: frames * 1e3 / ms,
                unit: "frames/s",
                note: format!("{} bytes", bytes.len()),
            });
        }
    }
    Ok(rows)
}
