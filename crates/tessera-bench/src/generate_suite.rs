//! The generation suite: speed of the default model on a 2-second 64×64 clip, and time and peak
//! memory of 2 s, 10 s and 60 s clips (windowed generation with streamed decode and writing).
//!
//! Each length runs in a child process (this binary with `TESSERA_BENCH_CHILD=SECONDS`) that
//! reports its own `VmHWM`, so one length's peak cannot hide another's. Flat memory means the
//! 60 s peak is within 15 % of the 10 s peak. Uses the default model when it exists (see
//! `Model::default_dir`), otherwise random weights in the default model's architecture (same speed), and says which.

use std::ops::ControlFlow;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use tessera_pipeline::{generate, GenerateRequest, Model, NoHook, RequestSpec};

use crate::Row;

/// Environment variable that turns this binary into one measured generation.
const CHILD_ENV: &str = "TESSERA_BENCH_CHILD";

/// The default model, or the random tiny one when none is installed; with its label.
fn model() -> Result<(Model, String)> {
    let dir = Model::default_dir();
    if dir.join("dit").is_dir() {
        let m = Model::load(&dir, &Device::Cpu)
            .with_context(|| format!("loading {}", dir.display()))?;
        let name = m.name.clone();
        Ok((m, name))
    } else {
        Ok((
            Model::random_default_arch(0)?,
            "default architecture, random weights (no default model yet)".into(),
        ))
    }
}

/// The bench's clip at `model`'s own sampling defaults.
fn request(model: &Model, seconds: f64, out: &std::path::Path) -> Result<GenerateRequest> {
    Ok(GenerateRequest::new(RequestSpec {
        seconds: Some(seconds),
        sampling: model.sampling.clone(),
        ..RequestSpec::text("a red ball bounces and a blue box slides left", out)
    })?)
}

/// Peak resident set of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// When this process is a measuring child: generate, print one JSON line, return true.
pub fn child_entry() -> Result<bool> {
    let Ok(seconds) = std::env::var(CHILD_ENV) else {
        return Ok(false);
    };
    let seconds: f64 = seconds.parse().context("child seconds")?;
    let (model, name) = model()?;
    let dir = tempfile::tempdir()?;
    let req = request(&model, seconds, &dir.path().join("clip.mp4"))?;
    let start = Instant::now();
    let s = generate(
        &model,
        &req,
        &mut NoHook,
        &mut |_| ControlFlow::Continue(()),
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "seconds": seconds, "frames": s.frames, "windows": s.windows, "time_s": secs,
            "peak_rss_kib": peak_rss_kib()?, "model": name,
        })
    );
    Ok(true)
}

fn child(seconds: f64) -> Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, seconds.to_string())
        .output()
        .context("spawning the measuring child")?;
    if !out.status.success() {
        bail!(
            "child for {seconds} s failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with('{'))
        .context("child printed no JSON")?;
    Ok(serde_json::from_str(line)?)
}

/// Speed of a 2-second clip (median of `runs`), then one child per length.
pub fn generate_suite(runs: usize, lengths: &[f64]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let (model, name) = model()?;
    let dir = tempfile::tempdir()?;
    let req = request(&model, 2.0, &dir.path().join("speed.mp4"))?;
    let mut split = tessera_pipeline::Timings::default();
    let ms = crate::median_ms(runs, || {
        split = generate(
            &model,
            &req,
            &mut NoHook,
            &mut |_| ControlFlow::Continue(()),
        )?
        .timings;
        Ok(())
    })?;
    rows.push(Row {
        suite: "generate",
        name: "2 s 64x64 clip (33 frames, 20 steps, cfg)".into(),
        median_ms: ms,
        throughput: 2000.0 / ms,
        unit: "x realtime",
        note: format!(
            "{name}; target < 2000 ms; last run: denoise {:.0} ms, VAE+write {:.0} ms",
            split.sample_s * 1e3,
            split.decode_s * 1e3
        ),
    });
    drop(model);
    let mut peaks = Vec::new();
    for &s in lengths {
        let v = child(s)?;
        let time = v["time_s"].as_f64().unwrap_or(f64::NAN);
        let peak = v["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0;
        peaks.push((s, peak));
        rows.push(Row {
            suite: "generate",
            name: format!(
                "{s} s clip: {} frames, {} windows",
                v["frames"], v["windows"]
            ),
            median_ms: time * 1e3,
            throughput: peak,
            unit: "MiB peak",
            note: format!("child process; {}", v["model"].as_str().unwrap_or("?")),
        });
    }
    if let (Some(ten), Some(sixty)) = (
        peaks.iter().find(|p| p.0 == 10.0),
        peaks.iter().find(|p| p.0 == 60.0),
    ) {
        let ratio = sixty.1 / ten.1;
        rows.push(Row {
            suite: "generate",
            name: "peak RSS 60 s / 10 s".into(),
            median_ms: 0.0,
            throughput: ratio,
            unit: "ratio",
            note: format!(
                "flat memory needs ≤ 1.15: {}",
                if ratio <= 1.15 { "ok" } else { "FAIL" }
            ),
        });
    }
    Ok(rows)
}
