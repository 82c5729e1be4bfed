//! `cargo run --release -p tessera-bench -- [gemm|world|media|vae|dit|all] [--json] [--export DIR]`
//!
//! Prints a table (or JSON) of timings. Each figure is the median of several runs after a warm-up,
//! so a noisy shared machine moves it less. Numbers quoted in the docs come from this binary.

mod cpu;
mod generate_suite;
mod model_suites;
mod suites;

use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Tessera benchmarks")]
struct Args {
    /// Which suites to run.
    #[arg(value_enum, default_value = "all")]
    suites: Vec<Suite>,
    /// Timed repetitions per measurement (median reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Timed repetitions for the 33×256×256 VAE clip (seconds per pass); 0 skips it.
    #[arg(long, default_value_t = 5)]
    big_runs: usize,
    /// VAE layout the `vae` suite times, with random weights: a preset name (`tiny-residual`
    /// was the default model's until session 25, `tiny-patch` its half-work variant) or a
    /// `config.json` (`docs/configs/`; the default model's is `vae-tiny-residual-s4-t2-z8.json`).
    #[arg(long, default_value = "tiny", value_parser = vae_config)]
    vae_config: String,
    /// Folder for the weights, inputs and outputs of the model suites (read by
    /// `bench/peer/peer.py`); a temporary folder when absent.
    #[arg(long)]
    export: Option<std::path::PathBuf>,
}

/// Refuses an unknown preset or a bad config file before any suite runs.
fn vae_config(name: &str) -> Result<String, String> {
    tessera_models::vae::Config::preset_or_file(name)
        .map(|_| name.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    All,
    Gemm,
    World,
    Media,
    Vae,
    Dit,
    /// Default-model speed and 2/10/60 s peak memory (not in `all`: the 60 s clip takes minutes).
    Generate,
}

/// One measured row: what, its median time, and a throughput in the unit that matters for it.
#[derive(Serialize)]
pub struct Row {
    pub suite: &'static str,
    pub name: String,
    pub median_ms: f64,
    pub throughput: f64,
    pub unit: &'static str,
    pub note: String,
}

/// Median wall time in milliseconds of `runs` calls after one warm-up call.
pub fn median_ms(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = std::time::Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

// The allocator `tessera` itself uses (see tessera-cli), so timings match what users get: glibc
// hands large tensor buffers back to the OS and page-faults fresh zeroed pages on every op.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    if generate_suite::child_entry()? {
        return Ok(());
    }
    let args = Args::parse();
    tessera_models::kernels::prefer_rayon_over_candle_pool();
    let want = |s: Suite| args.suites.contains(&Suite::All) || args.suites.contains(&s);
    let cpu = cpu::Cpu::detect();
    let mut rows = Vec::new();
    if want(Suite::Gemm) {
        rows.extend(suites::gemm(&cpu, args.runs)?);
    }
    if want(Suite::World) {
        rows.extend(suites::world(args.runs)?);
    }
    if want(Suite::Media) {
        rows.extend(suites::media(args.runs)?);
    }
    let (export, _tmp) = model_suites::export_dir(args.export.clone())?;
    if want(Suite::Dit) {
        rows.extend(model_suites::dit(args.runs, &export)?);
    }
    if want(Suite::Vae) {
        rows.extend(model_suites::vae(
            args.runs,
            &args.vae_config,
            &export,
            args.big_runs,
        )?);
    }
    if args.suites.contains(&Suite::Generate) {
        rows.extend(generate_suite::generate_suite(
            args.runs,
            &[2.0, 10.0, 60.0],
        )?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "cpu": cpu, "rows": rows }))?
        );
    } else {
        println!("{}", cpu.describe());
        println!(
            "{:<8} {:<44} {:>11} {:>12} {:<10} note",
            "suite", "measurement", "median ms", "throughput", "unit"
        );
        for r in &rows {
            println!(
                "{:<8} {:<44} {:>11.2} {:>12.2} {:<10} {}",
                r.suite, r.name, r.median_ms, r.throughput, r.unit, r.note
            );
        }
    }
    Ok(())
}
