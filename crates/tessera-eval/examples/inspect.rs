//! Prints, for shapes-world clips, the prompt, the ground truth and what the evaluator saw:
//! `cargo run --release -p tessera-eval --example inspect -- SEED COUNT`.

use tessera_eval::metrics::{analyze, score, AnalysisParams};
use tessera_eval::scene::ExpectedScene;
use tessera_world::{generate_clip, SampleOptions};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seed = args.first().copied().unwrap_or(11);
    let count = args.get(1).copied().unwrap_or(24);
    let opts = SampleOptions {
        seed,
        ..SampleOptions::default()
    };
    for i in 0..count {
        let Ok(clip) = generate_clip(&opts, i) else {
            continue;
        };
        let mut video = clip.video.clone();
        if std::env::var("SHUFFLE").is_ok() {
            let n = video.frames.len();
            video.frames = (0..n)
                .map(|i| clip.video.frames[(i * 7) % n].clone())
                .collect();
        }
        let Ok(a) = analyze(&video, &clip.id, &AnalysisParams::default()) else {
            continue;
        };
        let e = ExpectedScene::from_prompt(&clip.caption);
        let s = score(&a, &e);
        if std::env::var("PHYSICS").is_ok() {
            println!(
                "== {} physics {:?} smooth {:?}",
                clip.id, s.physics, s.smoothness
            );
            for e in &a.events {
                println!("   {:?}", e);
            }
            continue;
        }
        let low = [s.object_count, s.colour, s.shape, s.direction]
            .iter()
            .flatten()
            .any(|&v| v < 0.99);
        if !low {
            continue;
        }
        println!("== {} {}", clip.id, clip.caption);
        for o in &clip.objects {
            println!(
                "  truth {:?} {:?} {:?} r={:.1}",
                o.colour, o.shape, o.size, o.radius
            );
        }
        println!(
            "  scene {:?}",
            clip.scene
                .objects
                .iter()
                .map(|o| o.motion)
                .collect::<Vec<_>>()
        );
        for o in &a.objects {
            let t = &a.tracks[o.track];
            if std::env::var("VERBOSE").is_ok() {
                for ob in t.observations.iter().step_by(6) {
                    println!(
                        "    obs f{} area {} ref {} contact {} border {} bbox {:?}",
                        ob.frame,
                        ob.component.area,
                        t.reference_area(),
                        ob.in_contact,
                        ob.component.touches_border,
                        ob.component.bbox
                    );
                }
            }
            if o.shape_agreement < 0.9 {
                for ob in t.observations.iter().filter(|x| t.is_clean(x)).step_by(4) {
                    let f = ob.component.features;
                    println!(
                        "    f{} area {} fill {:.2} sol {:.2} comp {:.2} hole {:.2} sym {:.2} elong {:.2} r {:.1} -> {:?}",
                        ob.frame, ob.component.area, f.fill, f.solidity, f.compactness, f.hole_fraction,
                        f.symmetry, f.elongation, f.radius, tessera_eval::scene::classify_shape(&f)
                    );
                }
            }
            println!(
                "  seen {:?} {:?} {:?} dir {:?} v0 {:?} frames {}..{} n={} agree {:.2}",
                o.colour,
                o.shape,
                o.size,
                o.direction,
                o.initial_velocity,
                t.first_frame(),
                t.last_frame(),
                t.observations.len(),
                o.shape_agreement
            );
        }
        println!(
            "  count {:?} colour {:?} shape {:?} dir {:?} (seen {} expected {})",
            s.object_count, s.colour, s.shape, s.direction, s.observed_count, s.expected_count
        );
    }
}
