//! Scores a sample of shapes-world clips in memory and lists the clips whose heading is judged
//! wrong: `cargo run --release -p tessera-eval --example sweep -- SPLIT SEED COUNT`
//! (SPLIT is train, val or test). Clips are scored as decoded from memory, not from MP4.

use tessera_eval::metrics::{analyze, score, AnalysisParams};
use tessera_eval::scene::ExpectedScene;
use tessera_world::{generate_clip, SampleOptions, Split};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = match args.first().map(String::as_str) {
        Some("val") => Split::Val,
        Some("test") => Split::Test,
        _ => Split::Train,
    };
    let seed = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let first: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    let opts = SampleOptions {
        seed,
        split,
        ..SampleOptions::default()
    };
    let mut sums = [(0.0, 0usize); 4];
    for i in first..first + count {
        let Ok(clip) = generate_clip(&opts, i) else {
            continue;
        };
        let Ok(a) = analyze(&clip.video, &clip.id, &AnalysisParams::default()) else {
            continue;
        };
        let s = score(&a, &ExpectedScene::from_prompt(&clip.caption));
        let m = [s.object_count, s.colour, s.shape, s.direction];
        for (acc, v) in sums.iter_mut().zip(m) {
            if let Some(v) = v {
                acc.0 += v;
                acc.1 += 1;
            }
        }
        if s.direction.is_some_and(|d| d < 0.999) {
            println!(
                "== {} dir {:.2} pan {:.2} {}",
                clip.id,
                s.direction.unwrap_or(0.0),
                a.pan,
                clip.caption
            );
            for o in &a.objects {
                println!(
                    "    {:?} {:?} {:?} {:?} v0 {:?}",
                    o.colour, o.shape, o.size, o.direction, o.initial_velocity
                );
            }
        }
    }
    for (name, (s, n)) in ["object_count", "colour", "shape", "direction"]
        .iter()
        .zip(sums)
    {
        println!("{name:<14} {:.3} ({n})", s / n.max(1) as f64);
    }
}
