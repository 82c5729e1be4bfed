//! Random scenes: which objects, how they move, where they start. Everything is drawn from the
//! clip's own ChaCha stream, in a fixed order, so a clip depends only on its seed and size.

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::caption::{
    Background, BackgroundKind, BgColour, Camera, Colour, Direction, Motion, ObjectSpec, Region,
    SceneDescription, Shape, Size, Speed, Turn,
};
use crate::geometry::{circumradius, collision_radius, extents};
use crate::physics::{Body, Orbit, World};
use crate::Split;

/// Colour × shape pairs that only the `test` split shows, to measure compositional
/// generalisation: every colour and every shape is seen in training, these pairings never.
pub const HELD_OUT: [(Colour, Shape); 5] = [
    (Colour::Green, Shape::Star),
    (Colour::Purple, Shape::Triangle),
    (Colour::Yellow, Shape::Ring),
    (Colour::Orange, Shape::Square),
    (Colour::Pink, Shape::Diamond),
];

/// Whether `colour` × `shape` is reserved for the `test` split.
pub fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

/// Downward acceleration in frame-shorter-sides per s².
const GRAVITY_FRACTION: f64 = 2.5;
/// Camera pan speed in frame-shorter-sides per second (slowed for long clips to keep objects in).
const PAN_FRACTION: f64 = 0.25;
const P_PAN: f64 = 0.15;
const P_OCCLUSION: f64 = 0.25;
const PLACEMENT_TRIES: usize = 40;

/// A sampled scene ready to simulate and render.
pub struct Layout {
    /// Caption-level description, without events (they come from the simulation).
    pub description: SceneDescription,
    pub world: World,
    /// Per body (flat order): colour and depth (higher is nearer the viewer).
    pub colours: Vec<Colour>,
    pub depth: Vec<u32>,
    /// Camera x velocity in px/s (positive: the view moves right, the scene slides left).
    pub pan_speed: f64,
}

struct Group {
    count: u32,
    colour: Colour,
    shape: Shape,
    size: Size,
    motion: Motion,
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    // Every call site passes a non-empty constant list.
    *items.choose(rng).unwrap_or(&items[0])
}

fn weighted<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for &(item, w) in items {
        if x < w {
            return item;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

fn random_interval(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        (lo + hi) / 2.0
    } else {
        rng.random_range(lo..hi)
    }
}

fn background(rng: &mut ChaCha8Rng, force_floor: bool) -> Background {
    let kind = if force_floor {
        BackgroundKind::Floor
    } else {
        pick(rng, BackgroundKind::ALL)
    };
    let top = pick(rng, BgColour::ALL);
    let bottom = if kind == BackgroundKind::Solid {
        top
    } else {
        let others: Vec<BgColour> = BgColour::ALL
            .iter()
            .copied()
            .filter(|&c| c != top)
            .collect();
        pick(rng, &others)
    };
    Background { kind, top, bottom }
}

/// Most objects a scene holds.
pub const MAX_OBJECTS: usize = 4;

fn group_counts(rng: &mut ChaCha8Rng, occlusion: bool) -> Vec<u32> {
    let total: u32 = if occlusion {
        rng.random_range(2..=MAX_OBJECTS as u32)
    } else {
        weighted(rng, &[(1, 0.3), (2, 0.3), (3, 0.25), (4, 0.15)])
    };
    let mut counts = Vec::new();
    let mut left = total;
    if occlusion {
        counts.extend([1, 1]);
        left -= 2;
    }
    while left > 0 {
        let c = if left >= 2 && rng.random_bool(0.3) {
            rng.random_range(2..=left.min(3))
        } else {
            1
        };
        counts.push(c);
        left -= c;
    }
    counts
}

fn random_motion(rng: &mut ChaCha8Rng, shape: Shape, pan: bool) -> Motion {
    let round = matches!(shape, Shape::Circle | Shape::Ring);
    let speed = pick(rng, Speed::ALL);
    let turn = pick(rng, Turn::ALL);
    let direction = pick(rng, Direction::ALL);
    if pan {
        return if round || rng.random_bool(0.5) {
            Motion::Still
        } else {
            Motion::Spin { turn, speed }
        };
    }
    loop {
        let kind = weighted(
            rng,
            &[(0, 1.0), (1, 2.0), (2, 2.0), (3, 1.5), (4, 1.0), (5, 1.0)],
        );
        return match kind {
            0 => Motion::Still,
            1 => Motion::Linear { direction, speed },
            2 => Motion::Bounce { direction, speed },
            3 => Motion::Fall,
            4 => Motion::Orbit { turn, speed },
            _ if round => continue,
            _ => Motion::Spin { turn, speed },
        };
    }
}

/// Draws the groups' colours and shapes: pairs are unique within a clip (so "the red circle"
/// names one group), held-out pairs never appear outside `test`, and every `test` clip shows one.
fn identities(
    rng: &mut ChaCha8Rng,
    split: Split,
    counts: &[u32],
    occlusion: bool,
) -> Vec<(Colour, Shape)> {
    let mut out: Vec<(Colour, Shape)> = Vec::new();
    for g in 0..counts.len() {
        let pair = if g == 0 && split == Split::Test {
            pick(rng, &HELD_OUT)
        } else {
            loop {
                let colour = pick(rng, Colour::ALL);
                // The occluder must be solid enough to hide the mover completely.
                let shape = if occlusion && g == 1 {
                    pick(rng, &[Shape::Square, Shape::Circle])
                } else {
                    pick(rng, Shape::ALL)
                };
                let taken = out.iter().any(|&(c, s)| c == colour && s == shape);
                if !taken && (split == Split::Test || !is_held_out(colour, shape)) {
                    break (colour, shape);
                }
            }
        };
        out.push(pair);
    }
    out
}

struct Frame {
    width: f64,
    height: f64,
    short: f64,
    /// Seconds from the first to the last frame (at least one frame interval).
    duration: f64,
}

fn make_body(frame: &Frame, shape: Shape, size: Size, motion: Motion, x: f64, y: f64) -> Body {
    let radius = size.radius_fraction() * frame.short;
    let (vx, vy) = match motion {
        Motion::Linear { direction, speed } | Motion::Bounce { direction, speed } => {
            let (ux, uy) = direction.unit();
            let v = speed.linear_fraction() * frame.short;
            (ux * v, uy * v)
        }
        _ => (0.0, 0.0),
    };
    let spin = match motion {
        Motion::Spin { turn, speed } => signed(turn) * speed.spin_rate(),
        _ => 0.0,
    };
    Body {
        shape,
        radius,
        x,
        y,
        vx,
        vy,
        angle: 0.0,
        spin,
        orbit: None,
        walls: matches!(motion, Motion::Bounce { .. } | Motion::Fall),
        gravity: motion == Motion::Fall,
        collides: matches!(motion, Motion::Bounce { .. }),
        collision_radius: collision_radius(shape) * radius,
        resting: false,
    }
}

fn signed(turn: Turn) -> f64 {
    match turn {
        Turn::Clockwise => 1.0,
        Turn::Counterclockwise => -1.0,
    }
}

/// Start-position box `(x0, x1, y0, y1)` for a body's centre so it stays in frame, given the
/// whole-clip displacement `(dx, dy)` in screen space.
fn start_box(frame: &Frame, margin: (f64, f64, f64, f64), dx: f64, dy: f64) -> [f64; 4] {
    let (l, r, t, b) = margin;
    [
        l - dx.min(0.0),
        frame.width - r - dx.max(0.0),
        t - dy.min(0.0),
        frame.height - b - dy.max(0.0),
    ]
}

fn fits(b: &[f64; 4]) -> bool {
    b[0] <= b[1] && b[2] <= b[3]
}

fn overlaps(bodies: &[Body], x: f64, y: f64, reach: f64) -> bool {
    bodies.iter().any(|o| {
        let cr = circumradius(o.shape) * o.radius;
        let (dx, dy) = (o.x - x, o.y - y);
        dx * dx + dy * dy < (cr + reach + 1.0).powi(2)
    })
}

/// Samples a start point inside `area` that does not overlap earlier bodies (best effort).
fn place(rng: &mut ChaCha8Rng, area: [f64; 4], bodies: &[Body], reach: f64) -> (f64, f64) {
    let mut p = (0.0, 0.0);
    for _ in 0..PLACEMENT_TRIES {
        p = (
            random_interval(rng, area[0], area[1]),
            random_interval(rng, area[2], area[3]),
        );
        if !overlaps(bodies, p.0, p.1, reach) {
            break;
        }
    }
    p
}

/// Samples a scene for a `width`×`height` clip of `frames` frames at `fps`.
pub fn sample_layout(
    rng: &mut ChaCha8Rng,
    split: Split,
    width: u32,
    height: u32,
    frames: u32,
    fps: f64,
) -> Layout {
    let frame = Frame {
        width: width as f64,
        height: height as f64,
        short: width.min(height) as f64,
        duration: frames.saturating_sub(1).max(1) as f64 / fps,
    };
    let pan = rng.random_bool(P_PAN);
    let mut occlusion = !pan && rng.random_bool(P_OCCLUSION);
    let background = background(rng, pan);
    let camera = if pan {
        Camera::Pan {
            direction: pick(rng, &[Direction::Left, Direction::Right]),
        }
    } else {
        Camera::Still
    };
    let pan_speed = match camera {
        Camera::Pan { direction } => {
            let v = (PAN_FRACTION * frame.short).min(0.3 * frame.width / frame.duration);
            v * direction.unit().0
        }
        Camera::Still => 0.0,
    };

    let counts = group_counts(rng, occlusion);
    let ids = identities(rng, split, &counts, occlusion);
    let mut groups: Vec<Group> = counts
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(g, (&count, &(colour, shape)))| {
            let (size, motion) = if occlusion && g < 2 {
                if g == 0 {
                    let direction = pick(rng, &[Direction::Left, Direction::Right]);
                    (
                        Size::Small,
                        Motion::Linear {
                            direction,
                            speed: Speed::Slow,
                        },
                    )
                } else {
                    (Size::Large, Motion::Still)
                }
            } else {
                (pick(rng, Size::ALL), random_motion(rng, shape, pan))
            };
            Group {
                count,
                colour,
                shape,
                size,
                motion,
            }
        })
        .collect();

    let mut bodies: Vec<Body> = Vec::new();
    let mut regions: Vec<Option<Region>> = Vec::new();
    // Occlusion: the mover (group 0) crosses the frame horizontally and the occluder (group 1)
    // stands on its path, far enough from both ends that the mover starts and ends in full view.
    // `occlusion_path` is (mover start x, occluder x, y).
    let mut occlusion_path: Option<(f64, f64, f64)> = None;
    if occlusion {
        // Neither object turns, so upright extents (not circumradii) decide when they overlap.
        let half_extents = |g: &Group| {
            let r = g.size.radius_fraction() * frame.short;
            let (l, rr, t, b) = extents(g.shape, 0.0);
            (l.max(rr) * r, t * r, b * r)
        };
        let (w_occ, t_occ, b_occ) = half_extents(&groups[1]);
        let (w_mov, t_mov, b_mov) = half_extents(&groups[0]);
        let clear = w_occ + w_mov + 1.0;
        let mut speeds = Speed::ALL.to_vec();
        speeds.sort_by_key(|_| rng.random::<u32>());
        let chosen = speeds.into_iter().find(|s| {
            let travel = s.linear_fraction() * frame.short * frame.duration;
            travel >= 2.0 * clear + 2.0 && travel <= frame.width - 2.0 * (w_mov + 1.0)
        });
        match (chosen, groups[0].motion) {
            (Some(speed), Motion::Linear { direction, .. }) => {
                groups[0].motion = Motion::Linear { direction, speed };
                let travel = speed.linear_fraction() * frame.short * frame.duration;
                let dir = direction.unit().0;
                let lo = random_interval(rng, w_mov + 1.0, frame.width - w_mov - 1.0 - travel);
                let start = if dir > 0.0 { lo } else { lo + travel };
                let xc = start + dir * random_interval(rng, clear, travel - clear);
                let yc = random_interval(
                    rng,
                    t_occ.max(t_mov) + 1.0,
                    frame.height - b_occ.max(b_mov) - 1.0,
                );
                occlusion_path = Some((start, xc, yc));
            }
            _ => occlusion = false,
        }
    }

    for (g, group) in groups.iter_mut().enumerate() {
        let r = group.size.radius_fraction() * frame.short;
        let cr = circumradius(group.shape) * r;
        let (l, rr, t, b) = extents(group.shape, 0.0);
        let upright = (l * r + 1.0, rr * r + 1.0, t * r + 1.0, b * r + 1.0);
        let round = (cr + 1.0, cr + 1.0, cr + 1.0, cr + 1.0);
        let first_body = bodies.len();
        match (occlusion_path, g) {
            (Some((start, _, yc)), 0) => {
                bodies.push(make_body(
                    &frame,
                    group.shape,
                    group.size,
                    group.motion,
                    start,
                    yc,
                ));
            }
            (Some((_, xc, yc)), 1) => {
                bodies.push(make_body(
                    &frame,
                    group.shape,
                    group.size,
                    group.motion,
                    xc,
                    yc,
                ));
            }
            _ => place_group(rng, &frame, group, upright, round, pan_speed, &mut bodies),
        }
        regions.push(if group.count == 1 {
            let b = &bodies[first_body];
            Some(Region::of_point(b.x, b.y, frame.width, frame.height))
        } else {
            None
        });
    }

    // Depth: a random order, except that an occluder is in front of what passes behind it.
    let n = bodies.len();
    let mut depth: Vec<u32> = (0..n as u32).collect();
    depth.sort_by_key(|_| rng.random::<u32>());
    if occlusion && depth[0] > depth[1] {
        depth.swap(0, 1);
    }
    let colours = groups
        .iter()
        .flat_map(|g| std::iter::repeat_n(g.colour, g.count as usize))
        .collect();
    let objects = groups
        .iter()
        .zip(regions)
        .map(|(g, region)| ObjectSpec {
            count: g.count,
            colour: g.colour,
            shape: g.shape,
            size: g.size,
            motion: g.motion,
            region,
        })
        .collect();
    Layout {
        description: SceneDescription {
            objects,
            background,
            camera,
            events: Vec::new(),
        },
        world: World {
            width: frame.width,
            height: frame.height,
            gravity: GRAVITY_FRACTION * frame.short,
            bodies,
        },
        colours,
        depth,
        pan_speed,
    }
}

/// Places every member of a group; may downgrade a motion that cannot fit the frame (a linear
/// path longer than the frame becomes a bounce, an orbit too big becomes a spin or still).
fn place_group(
    rng: &mut ChaCha8Rng,
    frame: &Frame,
    group: &mut Group,
    upright: (f64, f64, f64, f64),
    round: (f64, f64, f64, f64),
    pan_speed: f64,
    bodies: &mut Vec<Body>,
) {
    let r = group.size.radius_fraction() * frame.short;
    let reach = circumradius(group.shape) * r;
    if let Motion::Linear { direction, speed } = group.motion {
        let (ux, uy) = direction.unit();
        let mut fitting = Speed::ALL
            .iter()
            .copied()
            .filter(|s| *s <= speed)
            .rev()
            .map(|s| {
                let d = s.linear_fraction() * frame.short * frame.duration;
                (s, start_box(frame, upright, ux * d, uy * d))
            })
            .filter(|(_, b)| fits(b));
        match fitting.next() {
            Some((s, area)) => {
                group.motion = Motion::Linear {
                    direction,
                    speed: s,
                };
                for _ in 0..group.count {
                    let (x, y) = place(rng, area, bodies, reach);
                    bodies.push(make_body(
                        frame,
                        group.shape,
                        group.size,
                        group.motion,
                        x,
                        y,
                    ));
                }
                return;
            }
            None => group.motion = Motion::Bounce { direction, speed },
        }
    }
    if let Motion::Orbit { turn, speed } = group.motion {
        let mut rho = random_interval(rng, 0.15, 0.3) * frame.short;
        while rho >= 0.08 * frame.short {
            let area = [
                round.0 + rho,
                frame.width - round.1 - rho,
                round.2 + rho,
                frame.height - round.3 - rho,
            ];
            if fits(&area) {
                let (cx, cy) = place(rng, area, bodies, reach + rho);
                let phase = rng.random_range(0.0..std::f64::consts::TAU);
                for k in 0..group.count {
                    let phi = phase + std::f64::consts::TAU * k as f64 / group.count as f64;
                    let mut b = make_body(
                        frame,
                        group.shape,
                        group.size,
                        group.motion,
                        cx + rho * phi.cos(),
                        cy + rho * phi.sin(),
                    );
                    b.orbit = Some(Orbit {
                        cx,
                        cy,
                        rho,
                        phase: phi,
                        rate: signed(turn) * speed.orbit_rate(),
                    });
                    bodies.push(b);
                }
                return;
            }
            rho *= 0.8;
        }
        group.motion = if matches!(group.shape, Shape::Circle | Shape::Ring) {
            Motion::Still
        } else {
            Motion::Spin { turn, speed }
        };
    }
    let spins = matches!(group.motion, Motion::Spin { .. });
    let margin = if spins { round } else { upright };
    let area = match group.motion {
        // Released from the top third of the frame.
        Motion::Fall => [
            margin.0,
            frame.width - margin.1,
            margin.2,
            (frame.height / 3.0).max(margin.2),
        ],
        // Still or spinning under a pan: in view for the whole clip.
        _ => start_box(frame, margin, -pan_speed * frame.duration, 0.0),
    };
    for _ in 0..group.count {
        let (x, y) = place(rng, area, bodies, reach);
        let mut b = make_body(frame, group.shape, group.size, group.motion, x, y);
        if spins {
            b.angle = rng.random_range(0.0..std::f64::consts::TAU);
        }
        bodies.push(b);
    }
}
