//! The fixed clip encoder behind the FVD-style distance: a hand-designed spatio-temporal feature
//! vector, not a trained network.
//!
//! Why hand-designed: the distance must not move when code or weights change, must be
//! reproducible bit-for-bit on any machine, and must mean something in the shapes world, where
//! what separates a good clip from a bad one is which colours and shapes appear, how big they
//! are, how they move and how steady the backdrop is. An I3D-style network trained on a few
//! thousand CPU clips would encode the same things less legibly. Every entry is scaled to be of
//! order 1 so no single one dominates the Fréchet distance.

use tessera_world::caption::Colour;

use crate::metrics::{Analysis, ObservedEventKind};
use crate::track::{accelerations, median};

/// Ceiling of the motion entries (speeds in frame widths a second, the median acceleration in
/// px/frame², bounces per object a second). The world's fastest object crosses 0.7 frame widths a
/// second and gravity is 0.6 px/frame²; past 4 a track has jumped between unrelated blobs. Left
/// uncapped, one such clip of 48 made a distance of 4.5 into 161 (TRAINING.md, session 23).
pub const MOTION_CAP: f64 = 4.0;

/// Length of [`clip_features`]' output.
pub const FEATURE_DIM: usize = Colour::ALL.len() + 16;

/// The feature vector of one analysed clip (`FEATURE_DIM` entries):
/// 1. object-pixel share of each palette colour (10);
/// 2. object count / 4 and mean object area as a fraction of the frame × 10 (2);
/// 3. mean compactness, solidity, hole fraction, symmetry and elongation of objects (5);
/// 4. mean and spread of object speed (frame widths per second), median |acceleration|
///    (px/frame², 64-px frame), bounces per object per second, each at most [`MOTION_CAP`] (4);
/// 5. motion energy: mean share of clearly changing pixels × 10 and background change / 10 (2);
/// 6. the first frame's mean luminance and luminance spread of the backdrop, and the share of
///    pixels that belong to objects × 10 (3).
pub fn clip_features(a: &Analysis, first_frame: &[u8]) -> Vec<f64> {
    let n = a.segmentations.len().max(1);
    let frame_px = (a.width as f64 * a.height as f64).max(1.0);
    let scale = a.width.min(a.height) as f64 / 64.0;
    let mut out = Vec::with_capacity(FEATURE_DIM);

    let mut colour_px = vec![0.0; Colour::ALL.len()];
    for s in &a.segmentations {
        for c in &s.components {
            colour_px[c.colour] += c.area as f64;
        }
    }
    let total: f64 = colour_px.iter().sum();
    out.extend(
        colour_px
            .iter()
            .map(|&c| if total > 0.0 { c / total } else { 0.0 }),
    );

    let objs = &a.objects;
    let k = objs.len().max(1) as f64;
    out.push(objs.len() as f64 / 4.0);
    out.push(
        objs.iter()
            .map(|o| a.tracks[o.track].reference_area() / frame_px)
            .sum::<f64>()
            / k
            * 10.0,
    );

    let mut shape = [0.0; 5];
    let mut m = 0.0;
    for o in objs {
        let t = &a.tracks[o.track];
        for ob in t.observations.iter().filter(|x| t.is_clean(x)) {
            let f = ob.component.features;
            for (s, v) in shape.iter_mut().zip([
                f.compactness,
                f.solidity,
                f.hole_fraction,
                f.symmetry,
                f.elongation,
            ]) {
                *s += v;
            }
            m += 1.0;
        }
    }
    out.extend(shape.iter().map(|s| if m > 0.0 { s / m } else { 0.0 }));

    let speeds: Vec<f64> = objs
        .iter()
        .map(|o| {
            let span = a.tracks[o.track].span().max(2) - 1;
            o.path_length / span as f64 * a.fps / a.width as f64
        })
        .collect();
    let mean_speed = speeds.iter().sum::<f64>() / k;
    let spread = (speeds.iter().map(|s| (s - mean_speed).powi(2)).sum::<f64>() / k).sqrt();
    let mut accs = Vec::new();
    for o in objs {
        let pos = a.tracks[o.track].clean_positions(n);
        accs.extend(
            accelerations(&pos)
                .iter()
                .flatten()
                .map(|p| p.0.hypot(p.1) / scale),
        );
    }
    let bounces = a
        .events
        .iter()
        .filter(|e| matches!(e.kind, ObservedEventKind::Bounce { .. }))
        .count() as f64;
    let seconds = (n as f64 / a.fps).max(1e-9);
    out.extend(
        [
            mean_speed,
            spread,
            median(&accs).unwrap_or(0.0),
            bounces / k / seconds,
        ]
        .map(|v| v.min(MOTION_CAP)),
    );

    let mean_of = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    out.push(mean_of(&a.changed_fraction) * 10.0);
    out.push(mean_of(&a.background_change) / 10.0);

    let luma: Vec<f64> = first_frame
        .chunks_exact(3)
        .map(|p| {
            (tessera_media::LUMA[0] * p[0] as f64
                + tessera_media::LUMA[1] * p[1] as f64
                + tessera_media::LUMA[2] * p[2] as f64)
                / 255.0
        })
        .collect();
    let lm = mean_of(&luma);
    let ls = (luma.iter().map(|l| (l - lm).powi(2)).sum::<f64>() / luma.len().max(1) as f64).sqrt();
    out.push(lm);
    out.push(ls * 4.0);
    out.push(total / (frame_px * n as f64) * 10.0);
    debug_assert_eq!(out.len(), FEATURE_DIM);
    out
}
