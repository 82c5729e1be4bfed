//! Expected scene (from the prompt, via the world's caption grammar) and observed scene (from
//! tracks), and the matching between their objects.

use serde::Serialize;
use tessera_world::caption::{
    parse_prompt, Colour, Direction, MotionKind, ParsedPrompt, Region, Shape, Size,
};

use crate::segment::ShapeFeatures;
use crate::track::Track;

/// One object the prompt asks for; `None` where the prompt does not say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectedObject {
    pub colour: Option<Colour>,
    pub shape: Option<Shape>,
    pub size: Option<Size>,
    pub motion: Option<MotionKind>,
    pub direction: Option<Direction>,
    /// Where it starts, on the captions' 3×3 grid ("in the top right").
    pub region: Option<Region>,
}

/// What a prompt asks for, one entry per individual object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectedScene {
    pub objects: Vec<ExpectedObject>,
    /// A plural without a number ("red circles") means at least two, so the count is only a
    /// lower bound.
    pub count_is_exact: bool,
    /// Words the grammar could not place; the prompt is scored on the rest.
    pub unknown_words: Vec<String>,
    #[serde(skip)]
    pub parsed: ParsedPrompt,
}

impl ExpectedScene {
    /// Parses `prompt` with the world's grammar (the same one that writes the captions).
    pub fn from_prompt(prompt: &str) -> Self {
        let parsed = parse_prompt(prompt);
        let mut objects = Vec::new();
        let mut count_is_exact = true;
        for o in &parsed.objects {
            let n = o.count.unwrap_or_else(|| {
                count_is_exact = false;
                2
            });
            for _ in 0..n {
                objects.push(ExpectedObject {
                    colour: o.colour,
                    shape: o.shape,
                    size: o.size,
                    motion: o.motion,
                    direction: o.direction,
                    region: o.region,
                });
            }
        }
        Self {
            objects,
            count_is_exact,
            unknown_words: parsed.unknown_words.clone(),
            parsed,
        }
    }
}

/// Names the shape of a region from its geometry. Each threshold sits in the gap between the
/// 2nd/98th percentiles of the world's rendered shapes (fully visible objects, 64×64 frames,
/// all sizes; `cargo run --release -p tessera-eval --example shape_stats` prints them):
/// rings have a hole (≥ 0.28 vs 0), diamonds are the only elongated shape (≤ 0.69 vs ≥ 0.74),
/// stars and crosses the only concave ones (solidity ≤ 0.73 vs ≥ 0.78), and among them only the
/// cross is centrally symmetric (≥ 0.75 vs ≤ 0.69); triangles are the convex asymmetric shape
/// (symmetry ≤ 0.72 vs ≥ 0.92), and circles are more compact than squares (≥ 0.80 vs ≤ 0.69).
pub fn classify_shape(f: &ShapeFeatures) -> Shape {
    if f.hole_fraction >= 0.15 {
        Shape::Ring
    } else if f.elongation < 0.715 {
        Shape::Diamond
    } else if f.solidity < 0.76 {
        if f.symmetry >= 0.72 {
            Shape::Cross
        } else {
            Shape::Star
        }
    } else if f.symmetry < 0.8 {
        Shape::Triangle
    } else if f.compactness >= 0.745 {
        Shape::Circle
    } else {
        Shape::Square
    }
}

/// Size class from the circumradius in pixels and the frame's shorter side.
pub fn classify_size(radius: f64, shorter_side: f64) -> Size {
    let r = radius / shorter_side;
    let mut best = (f64::INFINITY, Size::Medium);
    for &s in Size::ALL {
        let d = (r - s.radius_fraction()).abs();
        if d < best.0 {
            best = (d, s);
        }
    }
    best.1
}

/// An object seen in the video: one significant track summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedObject {
    /// Index into the analysis' tracks.
    pub track: usize,
    pub colour: Colour,
    /// Most frequent shape over clean sightings; `None` when never seen whole.
    pub shape: Option<Shape>,
    pub size: Option<Size>,
    /// Heading when first seen whole, relative to the backdrop (screen directions, y down);
    /// `None` when it barely moves then.
    pub direction: Option<Direction>,
    /// Velocity when first seen whole, relative to the backdrop, in pixels per frame.
    pub initial_velocity: Option<(f64, f64)>,
    /// Centre when first seen (whole if it ever is), in pixels.
    pub first_position: Option<(f64, f64)>,
    /// Path length over the clip in pixels.
    pub path_length: f64,
    /// Largest drop below the first sighting in pixels (y grows downward).
    pub max_descent: f64,
    /// Fraction of clean sightings that agree with `shape`, in [0, 1].
    pub shape_agreement: f64,
}

/// Heading speeds below this many pixels per frame count as standing still.
pub const STILL_SPEED: f64 = 0.15;

/// Summarises `track` (index `k`) as an observed object; `palette` maps colour indices back.
pub fn observe(
    k: usize,
    track: &Track,
    palette: &[Colour],
    n_frames: usize,
    shorter_side: f64,
    backdrop_velocity: (f64, f64),
) -> ObservedObject {
    let clean: Vec<_> = track
        .observations
        .iter()
        .filter(|o| track.is_clean(o))
        .collect();
    let mut votes = vec![0usize; Shape::ALL.len()];
    let mut radii = Vec::new();
    for o in &clean {
        let s = classify_shape(&o.component.features);
        if let Some(i) = Shape::ALL.iter().position(|&x| x == s) {
            votes[i] += 1;
        }
        radii.push(o.component.features.radius);
    }
    let (best, &n_best) = votes
        .iter()
        .enumerate()
        .max_by_key(|(_, &v)| v)
        .unwrap_or((0, &0));
    let shape = (n_best > 0).then(|| Shape::ALL[best]);
    let shape_agreement = if clean.is_empty() {
        0.0
    } else {
        n_best as f64 / clean.len() as f64
    };
    let size = crate::track::median(&radii).map(|r| classify_size(r, shorter_side));

    // Heading: displacement from the first whole sighting over the following five frames, cut
    // short at the first abrupt change of velocity (a bounce), so an object that starts next to
    // a wall is judged by the way it was heading before it hit it.
    let whole = track.whole_positions(n_frames);
    let initial_velocity = initial_heading(&whole, 5)
        .map(|(vx, vy)| (vx - backdrop_velocity.0, vy - backdrop_velocity.1));
    let direction = initial_velocity.and_then(|(vx, vy)| {
        if vx.hypot(vy) < STILL_SPEED {
            None
        } else {
            Direction::nearest(vx, vy)
        }
    });
    let all = track.positions(n_frames);
    let seen: Vec<(f64, f64)> = all.iter().flatten().copied().collect();
    let first_position = whole.iter().flatten().next().or(seen.first()).copied();
    let path_length = seen
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).hypot(w[1].1 - w[0].1))
        .sum();
    let max_descent = seen.first().map_or(0.0, |p0| {
        seen.iter().map(|p| p.1 - p0.1).fold(0.0, f64::max)
    });
    ObservedObject {
        track: k,
        colour: palette[track.colour],
        shape,
        size,
        direction,
        initial_velocity,
        first_position,
        path_length,
        max_descent,
        shape_agreement,
    }
}

/// Velocity in pixels per frame from the first sighting in `pos` (one entry per frame) that has
/// another within `window` frames: the mean over the sightings up to `window` frames later, up
/// to but not past the first step whose velocity departs from the mean so far by more than
/// noise (0.3 px) plus half the speed — a bounce reverses a component, a steady or gently
/// accelerating motion does not.
pub fn initial_heading(pos: &[Option<(f64, f64)>], window: usize) -> Option<(f64, f64)> {
    let seen: Vec<(usize, (f64, f64))> = pos
        .iter()
        .enumerate()
        .filter_map(|(t, p)| p.map(|p| (t, p)))
        .collect();
    seen.iter().enumerate().find_map(|(i, &(t0, p0))| {
        let mut end: Option<(usize, (f64, f64))> = None;
        for &(t, p) in seen[i + 1..].iter().take_while(|(t, _)| *t <= t0 + window) {
            if let Some((te, pe)) = end {
                let dt0 = (te - t0) as f64;
                let mean = ((pe.0 - p0.0) / dt0, (pe.1 - p0.1) / dt0);
                let dt = (t - te) as f64;
                let step = ((p.0 - pe.0) / dt, (p.1 - pe.1) / dt);
                let change = (step.0 - mean.0).hypot(step.1 - mean.1);
                if change > 0.3 + 0.5 * mean.0.hypot(mean.1) {
                    break;
                }
            }
            end = Some((t, p));
        }
        let (t1, p1) = end?;
        let dt = (t1 - t0) as f64;
        Some(((p1.0 - p0.0) / dt, (p1.1 - p0.1) / dt))
    })
}

/// Whether an observed heading satisfies an expected motion: the stated direction (within
/// about 30°), downward for falls, no motion for still objects. `None` when the prompt states
/// nothing about direction.
pub fn direction_matches(e: &ExpectedObject, o: &ObservedObject) -> Option<bool> {
    let v = o.initial_velocity;
    if let Some(d) = e.direction {
        let (ux, uy) = d.unit();
        return Some(v.is_some_and(|(vx, vy)| {
            let s = vx.hypot(vy);
            s >= STILL_SPEED && (ux * vx + uy * vy) / s >= 0.85
        }));
    }
    match e.motion {
        // Released at rest, so judge by the whole path: it must go down.
        Some(MotionKind::Fall) => Some(o.max_descent > 2.0),
        Some(MotionKind::Still) => Some(v.is_none_or(|(vx, vy)| vx.hypot(vy) < STILL_SPEED)),
        _ => None,
    }
}

/// How well an observed object fits an expected one (colour first: it is the identity).
fn affinity(e: &ExpectedObject, o: &ObservedObject) -> f64 {
    let eq = |a: bool| if a { 1.0 } else { 0.0 };
    e.colour.map_or(0.5, |c| 4.0 * eq(c == o.colour))
        + e.shape.map_or(0.0, |s| 2.0 * eq(Some(s) == o.shape))
        + direction_matches(e, o).map_or(0.0, eq)
        + e.size.map_or(0.0, |s| 0.5 * eq(Some(s) == o.size))
}

/// Assigns expected objects to distinct observed ones maximising total affinity; entry `i` is
/// the observed index for expected object `i`, or `None` when there are fewer observed objects.
pub fn match_objects(
    expected: &[ExpectedObject],
    observed: &[ObservedObject],
) -> Vec<Option<usize>> {
    // Exhaustive search is tiny for the world's 1–4 objects; beyond 6 fall back to greedy.
    if expected.len() <= 6 && observed.len() <= 8 {
        let mut best = (f64::NEG_INFINITY, vec![None; expected.len()]);
        let mut current = vec![None; expected.len()];
        let mut used = vec![false; observed.len()];
        search(
            expected,
            observed,
            0,
            0.0,
            &mut current,
            &mut used,
            &mut best,
        );
        return best.1;
    }
    let mut out = vec![None; expected.len()];
    let mut used = vec![false; observed.len()];
    for (i, e) in expected.iter().enumerate() {
        let pick = (0..observed.len())
            .filter(|&j| !used[j])
            .max_by(|&a, &b| affinity(e, &observed[a]).total_cmp(&affinity(e, &observed[b])));
        if let Some(j) = pick {
            used[j] = true;
            out[i] = Some(j);
        }
    }
    out
}

fn search(
    expected: &[ExpectedObject],
    observed: &[ObservedObject],
    i: usize,
    score: f64,
    current: &mut Vec<Option<usize>>,
    used: &mut Vec<bool>,
    best: &mut (f64, Vec<Option<usize>>),
) {
    if i == expected.len() {
        if score > best.0 {
            *best = (score, current.clone());
        }
        return;
    }
    let mut any = false;
    for j in 0..observed.len() {
        if used[j] {
            continue;
        }
        any = true;
        used[j] = true;
        current[i] = Some(j);
        let s = score + affinity(&expected[i], &observed[j]);
        search(expected, observed, i + 1, s, current, used, best);
        used[j] = false;
        current[i] = None;
    }
    if !any {
        search(expected, observed, i + 1, score, current, used, best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(colour: Colour, shape: Shape, v: (f64, f64)) -> ObservedObject {
        ObservedObject {
            track: 0,
            colour,
            shape: Some(shape),
            size: Some(Size::Medium),
            direction: Direction::nearest(v.0, v.1),
            initial_velocity: Some(v),
            first_position: None,
            path_length: 10.0,
            max_descent: 0.0,
            shape_agreement: 1.0,
        }
    }

    #[test]
    fn prompt_expands_groups_into_objects() {
        let s = ExpectedScene::from_prompt("two blue squares move left and a red circle falls");
        assert_eq!(s.objects.len(), 3);
        assert!(s.count_is_exact);
        assert_eq!(s.objects[0].colour, Some(Colour::Blue));
        assert_eq!(s.objects[0].direction, Some(Direction::Left));
        assert_eq!(s.objects[2].motion, Some(MotionKind::Fall));
        let s = ExpectedScene::from_prompt("red circles glimmer");
        assert!(!s.count_is_exact);
        assert_eq!(s.unknown_words, vec!["glimmer"]);
    }

    #[test]
    fn heading_is_read_before_an_early_bounce() {
        // Heading left at 0.8 px/frame, hits the wall between frames 2 and 3, comes back.
        let xs = [7.0, 6.2, 5.4, 5.2, 6.0, 6.8, 7.6];
        let pos: Vec<_> = xs.iter().map(|&x| Some((x, 20.0))).collect();
        let (vx, vy) = initial_heading(&pos, 5).expect("heading");
        assert!(vx < -0.5 && vy.abs() < 1e-9, "{vx} {vy}");
        // Bounce after one frame: the single step before it decides.
        let pos = vec![Some((51.5, 13.6)), Some((53.1, 13.6)), Some((51.5, 13.6))];
        assert!(initial_heading(&pos, 5).expect("heading").0 > 1.5);
        // Steady motion with pixel noise averages over the whole window.
        let pos: Vec<_> = (0..8)
            .map(|t| Some((t as f64 * 0.5 + [0.1, -0.1][t % 2], 3.0)))
            .collect();
        let (vx, _) = initial_heading(&pos, 5).expect("heading");
        assert!((vx - 0.46).abs() < 0.05, "{vx}");
        assert_eq!(initial_heading(&[Some((1.0, 1.0)), None], 5), None);
    }

    #[test]
    fn matching_pairs_by_colour_then_shape() {
        let e = ExpectedScene::from_prompt("a red circle moves right and a blue square moves up");
        let o = vec![
            obs(Colour::Blue, Shape::Square, (0.0, -1.0)),
            obs(Colour::Red, Shape::Circle, (1.0, 0.0)),
        ];
        let m = match_objects(&e.objects, &o);
        assert_eq!(m, vec![Some(1), Some(0)]);
        assert_eq!(direction_matches(&e.objects[0], &o[1]), Some(true));
        assert_eq!(direction_matches(&e.objects[1], &o[1]), Some(false));
    }
}
