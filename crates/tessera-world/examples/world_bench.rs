//! World generation throughput: `cargo run --release -p tessera-world --example world_bench -- [N]`.
//! Times rendering alone (simulation + frames + ground truth) and the full `sample_dataset`
//! (plus H.264 encoding and files) for N clips of 33×64×64 at 16 fps.
use std::time::Instant;

use tessera_world::{render_clips, sample_dataset, SampleOptions, Selection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let opts = SampleOptions {
        count,
        ..Default::default()
    };
    let threads = rayon::current_num_threads();

    let t = Instant::now();
    let frames = render_clips(&opts)?;
    let render = t.elapsed().as_secs_f64();
    println!(
        "render only:    {count} clips ({frames} frames) in {render:.2} s = {:.0} clips/s, {:.0} frames/s ({threads} threads)",
        count as f64 / render,
        frames as f64 / render
    );

    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let summary = sample_dataset(&opts, &Selection::default(), dir.path(), |_| {})?;
    let full = t.elapsed().as_secs_f64();
    println!(
        "sample_dataset: {} clips ({} frames, {:.1} MB MP4) in {full:.2} s = {:.0} clips/s ({threads} threads)",
        summary.clips,
        summary.frames,
        summary.video_bytes as f64 / 1e6,
        summary.clips as f64 / full
    );
    Ok(())
}
