use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera_world::{parse_size, sample_dataset, SampleOptions, Selection, Split, MAX_OBJECTS};

#[derive(Subcommand)]
pub enum WorldCommand {
    /// Render N captioned clips into DIR (videos/, captions.jsonl, tracks.jsonl).
    Sample(SampleArgs),
}

/// Which world scenes a command takes (the world's [`Selection`]); shared by `world sample`,
/// `eval` and `train dit`.
#[derive(Args, Debug, Clone, Default)]
pub struct SceneArgs {
    /// Only scenes with this many objects (1–4), e.g. 1 for clips where every word is about the
    /// one object there is; clips keep their world ids.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_OBJECTS as u64))]
    pub objects: Option<u64>,
    /// Only scenes whose every object moves with a heading (in a line or bouncing), so every
    /// caption says which way.
    #[arg(long)]
    pub heading: bool,
}

impl SceneArgs {
    pub fn objects(&self) -> Option<usize> {
        self.objects.map(|n| n as usize)
    }

    /// The scenes from world index `start` on.
    pub fn selection(&self, start: u64) -> Selection {
        Selection {
            start,
            objects: self.objects(),
            heading: self.heading,
        }
    }
}

#[derive(Args)]
pub struct SampleArgs {
    /// Number of clips.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    count: u64,
    /// Frame size WIDTHxHEIGHT.
    #[arg(long, default_value = "64x64", value_parser = parse_size_arg)]
    size: (u32, u32),
    /// Frames per clip (4k+1 matches the VAE: 1, 5, 9, 17, 33, ...).
    #[arg(long, default_value_t = 33)]
    frames: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 16.0)]
    fps: f64,
    /// Seed: the same seed, split and options give byte-identical files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// train | val | test (disjoint seed ranges; held-out attribute pairs only in test).
    #[arg(long, default_value = "train")]
    split: Split,
    #[command(flatten)]
    scenes: SceneArgs,
    /// First world index: `--start 1024` leaves out the 1,024 clips `train dit` draws from the
    /// world by default.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1 << 40))]
    start: u64,
    /// Output folder (created if missing).
    #[arg(long, short)]
    out: PathBuf,
    /// Print a JSON summary on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
}

fn parse_size_arg(s: &str) -> Result<(u32, u32), String> {
    parse_size(s).map_err(|e| e.to_string())
}

pub fn run(cmd: WorldCommand) -> Result<()> {
    match cmd {
        WorldCommand::Sample(a) => {
            let opts = SampleOptions {
                count: a.count as usize,
                width: a.size.0,
                height: a.size.1,
                frames: a.frames,
                fps: a.fps,
                seed: a.seed,
                split: a.split,
            };
            let bar = super::progress(a.count, "clips", a.json);
            let start = std::time::Instant::now();
            let selection = a.scenes.selection(a.start);
            let summary =
                sample_dataset(&opts, &selection, &a.out, |n| bar.set_position(n as u64))?;
            bar.finish_and_clear();
            let secs = start.elapsed().as_secs_f64();
            if a.json {
                let mut json = serde_json::to_value(&summary)?;
                json["seconds"] = secs.into();
                println!("{json}");
            } else {
                println!(
                    "wrote {} clips ({} frames, {:.1} MB of MP4) to {} in {secs:.1} s",
                    summary.clips,
                    summary.frames,
                    summary.video_bytes as f64 / 1e6,
                    summary.out_dir.display()
                );
            }
            Ok(())
        }
    }
}
