//! Feature percentiles per ground-truth shape on fully visible world objects, to set the
//! classifier's thresholds: `cargo run --release -p tessera-eval --example shape_stats`.

use tessera_eval::metrics::{analyze, AnalysisParams};
use tessera_world::caption::{Colour, Shape};
use tessera_world::{generate_clip, SampleOptions};

fn main() {
    let opts = SampleOptions {
        seed: 1000,
        ..SampleOptions::default()
    };
    let mut rows: Vec<(Shape, [f64; 6])> = Vec::new();
    for i in 0..150 {
        let Ok(clip) = generate_clip(&opts, i) else {
            continue;
        };
        let Ok(a) = analyze(&clip.video, &clip.id, &AnalysisParams::default()) else {
            continue;
        };
        for (t, seg) in a.segmentations.iter().enumerate() {
            for c in seg.components.iter().filter(|c| !c.touches_border) {
                let colour = Colour::ALL[c.colour];
                let best = clip
                    .objects
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.colour == colour)
                    .map(|(k, o)| {
                        let p = &clip.tracks[t][k];
                        ((p.x - c.centroid.0).hypot(p.y - c.centroid.1), k, o)
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let Some((d, k, o)) = best else { continue };
                if d > 1.0 || clip.tracks[t][k].visible < 0.999 {
                    continue;
                }
                let f = c.features;
                rows.push((
                    o.shape,
                    [
                        f.solidity,
                        f.compactness,
                        f.hole_fraction,
                        f.symmetry,
                        f.elongation,
                        f.radius,
                    ],
                ));
            }
        }
    }
    let names = ["solidity", "compact", "hole", "symmetry", "elong", "radius"];
    for &s in Shape::ALL {
        let sel: Vec<&[f64; 6]> = rows.iter().filter(|r| r.0 == s).map(|r| &r.1).collect();
        print!("{s:>9} n={:5}", sel.len());
        for (j, n) in names.iter().enumerate() {
            let mut v: Vec<f64> = sel.iter().map(|r| r[j]).collect();
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                continue;
            }
            let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
            print!("  {n} {:.2}/{:.2}/{:.2}", q(0.02), q(0.5), q(0.98));
        }
        println!();
    }
}
