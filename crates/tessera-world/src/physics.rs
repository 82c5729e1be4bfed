//! Continuous-time physics, event-driven: between frames every body moves on a closed-form path
//! (straight line or parabola), so the time of each wall hit, floor hit and collision is solved
//! exactly and the world is advanced event by event. No time step, so no tunnelling and the
//! frame of every event is exact.

use crate::caption::Shape;
use crate::caption::{Event, EventKind, Wall};
use crate::geometry::extents;

/// Coefficient of restitution for floor bounces under gravity (< 1: each bounce is lower).
pub const RESTITUTION: f64 = 0.7;

/// A floor impact slower than this fraction of the frame's shorter side per second ends the
/// bouncing: the body comes to rest rather than bouncing ever more often (Zeno).
const REST_SPEED_FRACTION: f64 = 0.08;

/// Guard against pathological event storms within one frame interval.
const MAX_EVENTS_PER_FRAME: usize = 256;

/// Circular path, clockwise on screen for a positive `rate` (rad/s).
#[derive(Debug, Clone, Copy)]
pub struct Orbit {
    pub cx: f64,
    pub cy: f64,
    pub rho: f64,
    pub phase: f64,
    pub rate: f64,
}

/// One object in the simulation; positions in pixels, velocities in px/s, y down.
#[derive(Debug, Clone)]
pub struct Body {
    pub shape: Shape,
    pub radius: f64,
    pub x: f64,
    pub y: f64,
    pub vx: f64,
    pub vy: f64,
    pub angle: f64,
    /// Spin rate in rad/s (clockwise positive).
    pub spin: f64,
    pub orbit: Option<Orbit>,
    /// Reflects off the frame edges.
    pub walls: bool,
    /// Accelerates downward and loses energy at the floor.
    pub gravity: bool,
    /// Takes part in elastic collisions (mass ∝ area), modelled as circles.
    pub collides: bool,
    /// Collision circle radius in pixels.
    pub collision_radius: f64,
    pub resting: bool,
}

impl Body {
    fn mass(&self) -> f64 {
        self.radius * self.radius
    }

    /// Distances from the centre to the body's left, right, top and bottom (px).
    fn reach(&self) -> (f64, f64, f64, f64) {
        let (l, r, t, b) = extents(self.shape, self.angle);
        (
            l * self.radius,
            r * self.radius,
            t * self.radius,
            b * self.radius,
        )
    }
}

/// Where a body is shown in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub x: f64,
    pub y: f64,
    pub angle: f64,
}

pub struct Simulation {
    /// `poses[frame][body]`.
    pub poses: Vec<Vec<Pose>>,
    /// Wall, floor and collision events, in time order.
    pub events: Vec<Event>,
}

pub struct World {
    pub width: f64,
    pub height: f64,
    /// Downward acceleration in px/s².
    pub gravity: f64,
    pub bodies: Vec<Body>,
}

#[derive(Clone, Copy)]
enum Hit {
    Wall(usize, Wall),
    Pair(usize, usize),
}

impl World {
    fn rest_speed(&self) -> f64 {
        REST_SPEED_FRACTION * self.width.min(self.height)
    }

    /// Moves every free body forward by `dt` seconds along its closed-form path.
    fn advance(&mut self, dt: f64) {
        let g = self.gravity;
        for b in &mut self.bodies {
            if b.orbit.is_some() || b.resting {
                continue;
            }
            let a = if b.gravity { g } else { 0.0 };
            b.x += b.vx * dt;
            b.y += b.vy * dt + 0.5 * a * dt * dt;
            b.vy += a * dt;
        }
    }

    /// Earliest time in `[0, horizon]` at which body `i` touches a wall it is moving toward.
    fn wall_time(&self, i: usize) -> Option<(f64, Wall)> {
        let b = &self.bodies[i];
        if !b.walls || b.resting || b.orbit.is_some() {
            return None;
        }
        let (l, r, t, bot) = b.reach();
        let mut best: Option<(f64, Wall)> = None;
        let mut consider = |time: f64, wall: Wall| {
            if time.is_finite() && best.is_none_or(|(bt, _)| time < bt) {
                best = Some((time.max(0.0), wall));
            }
        };
        if b.vx < 0.0 {
            consider((l - b.x) / b.vx, Wall::Left);
        } else if b.vx > 0.0 {
            consider((self.width - r - b.x) / b.vx, Wall::Right);
        }
        let a = if b.gravity { self.gravity } else { 0.0 };
        // Bottom: solve y + vy τ + a τ²/2 = floor for the first τ ≥ 0 while moving down there.
        let floor = self.height - bot;
        let gap = floor - b.y;
        if a > 0.0 {
            let disc = b.vy * b.vy + 2.0 * a * gap;
            if disc >= 0.0 {
                let tau = (-b.vy + disc.sqrt()) / a;
                if tau >= 0.0 {
                    consider(tau, Wall::Bottom);
                }
            }
        } else if b.vy > 0.0 {
            consider(gap / b.vy, Wall::Bottom);
        }
        // Top: only without gravity (a falling body never rises above its release height).
        if a == 0.0 && b.vy < 0.0 {
            consider((t - b.y) / b.vy, Wall::Top);
        }
        best
    }

    /// Time until bodies `i` and `j` (both straight-line movers) touch, if they approach.
    fn pair_time(&self, i: usize, j: usize) -> Option<f64> {
        let (a, b) = (&self.bodies[i], &self.bodies[j]);
        if !(a.collides && b.collides) || a.resting || b.resting || a.gravity || b.gravity {
            return None;
        }
        let (px, py) = (b.x - a.x, b.y - a.y);
        let (vx, vy) = (b.vx - a.vx, b.vy - a.vy);
        let approach = px * vx + py * vy;
        if approach >= 0.0 {
            return None;
        }
        let rsum = a.collision_radius + b.collision_radius;
        let c = px * px + py * py - rsum * rsum;
        if c <= 0.0 {
            return Some(0.0);
        }
        let qa = vx * vx + vy * vy;
        let disc = approach * approach - qa * c;
        if disc < 0.0 {
            return None;
        }
        Some((-approach - disc.sqrt()) / qa)
    }

    fn next_hit(&self, horizon: f64) -> Option<(f64, Hit)> {
        let mut best: Option<(f64, Hit)> = None;
        let n = self.bodies.len();
        for i in 0..n {
            if let Some((t, wall)) = self.wall_time(i) {
                if t <= horizon && best.is_none_or(|(bt, _)| t < bt) {
                    best = Some((t, Hit::Wall(i, wall)));
                }
            }
            for j in i + 1..n {
                if let Some(t) = self.pair_time(i, j) {
                    if t <= horizon && best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, Hit::Pair(i, j)));
                    }
                }
            }
        }
        best
    }

    /// Applies a hit at the current instant; returns whether it is worth an event.
    fn resolve(&mut self, hit: Hit) -> bool {
        match hit {
            Hit::Wall(i, wall) => {
                let rest_speed = self.rest_speed();
                let (w, h) = (self.width, self.height);
                let b = &mut self.bodies[i];
                let (l, r, t, bot) = b.reach();
                match wall {
                    Wall::Left => {
                        b.x = l;
                        b.vx = b.vx.abs();
                    }
                    Wall::Right => {
                        b.x = w - r;
                        b.vx = -b.vx.abs();
                    }
                    Wall::Top => {
                        b.y = t;
                        b.vy = b.vy.abs();
                    }
                    Wall::Bottom => {
                        b.y = h - bot;
                        if b.gravity {
                            let impact = b.vy.abs();
                            b.vy = -RESTITUTION * impact;
                            if RESTITUTION * impact < rest_speed {
                                b.vy = 0.0;
                                b.resting = true;
                            }
                            return impact >= rest_speed;
                        }
                        b.vy = -b.vy.abs();
                    }
                }
                true
            }
            Hit::Pair(i, j) => {
                let (a, b) = (&self.bodies[i], &self.bodies[j]);
                let (mut nx, mut ny) = (b.x - a.x, b.y - a.y);
                let len = (nx * nx + ny * ny).sqrt().max(1e-12);
                nx /= len;
                ny /= len;
                let u = (b.vx - a.vx) * nx + (b.vy - a.vy) * ny;
                if u >= 0.0 {
                    return false;
                }
                let (ma, mb) = (a.mass(), b.mass());
                let (ka, kb) = (2.0 * mb / (ma + mb) * u, 2.0 * ma / (ma + mb) * u);
                let a = &mut self.bodies[i];
                a.vx += ka * nx;
                a.vy += ka * ny;
                let b = &mut self.bodies[j];
                b.vx -= kb * nx;
                b.vy -= kb * ny;
                true
            }
        }
    }

    fn pose(&self, i: usize, time: f64) -> Pose {
        let b = &self.bodies[i];
        let angle = b.angle + b.spin * time;
        match b.orbit {
            Some(o) => {
                let phi = o.phase + o.rate * time;
                Pose {
                    x: o.cx + o.rho * phi.cos(),
                    y: o.cy + o.rho * phi.sin(),
                    angle,
                }
            }
            None => Pose {
                x: b.x,
                y: b.y,
                angle,
            },
        }
    }

    /// Runs the world for `frames` frames at `fps` and records poses and events.
    pub fn simulate(mut self, frames: usize, fps: f64) -> Simulation {
        let mut poses = Vec::with_capacity(frames);
        let mut events = Vec::new();
        let mut now = 0.0f64;
        for frame in 0..frames {
            let target = frame as f64 / fps;
            let mut budget = MAX_EVENTS_PER_FRAME;
            while now < target {
                let horizon = target - now;
                match self.next_hit(horizon).filter(|_| budget > 0) {
                    Some((dt, hit)) => {
                        budget -= 1;
                        self.advance(dt);
                        now += dt;
                        if self.resolve(hit) {
                            push_events(&mut events, hit, now, frame as u32);
                        }
                    }
                    None => {
                        self.advance(horizon);
                        now = target;
                    }
                }
            }
            poses.push(
                (0..self.bodies.len())
                    .map(|i| self.pose(i, target))
                    .collect(),
            );
        }
        Simulation { poses, events }
    }
}

fn push_events(events: &mut Vec<Event>, hit: Hit, time: f64, frame: u32) {
    match hit {
        Hit::Wall(object, wall) => events.push(Event {
            frame,
            time,
            object,
            kind: EventKind::Wall { wall },
        }),
        Hit::Pair(i, j) => {
            events.push(Event {
                frame,
                time,
                object: i,
                kind: EventKind::Collides { other: j },
            });
            events.push(Event {
                frame,
                time,
                object: j,
                kind: EventKind::Collides { other: i },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(x: f64, y: f64, vx: f64, vy: f64) -> Body {
        Body {
            shape: Shape::Circle,
            radius: 5.0,
            x,
            y,
            vx,
            vy,
            angle: 0.0,
            spin: 0.0,
            orbit: None,
            walls: true,
            gravity: false,
            collides: true,
            collision_radius: 5.0,
            resting: false,
        }
    }

    fn world(bodies: Vec<Body>) -> World {
        World {
            width: 100.0,
            height: 100.0,
            gravity: 200.0,
            bodies,
        }
    }

    #[test]
    fn wall_bounce_time_is_exact() {
        // Centre at 50 moving left at 30 px/s reaches x = 5 after 1.5 s: frame 15 at 10 fps
        // is the first frame after it (t = 1.5 exactly counts as that frame).
        let sim = world(vec![body(50.0, 50.0, -30.0, 0.0)]).simulate(20, 10.0);
        assert_eq!(sim.events.len(), 1);
        let e = sim.events[0];
        assert_eq!(e.kind, EventKind::Wall { wall: Wall::Left });
        assert!((e.time - 1.5).abs() < 1e-9, "{}", e.time);
        assert_eq!(e.frame, 15);
        assert!((sim.poses[15][0].x - 5.0).abs() < 1e-9);
        assert!((sim.poses[19][0].x - 17.0).abs() < 1e-9);
    }

    #[test]
    fn fall_accelerates_and_loses_height() {
        let mut b = body(50.0, 10.0, 0.0, 0.0);
        b.gravity = true;
        b.collides = false;
        let sim = world(vec![b]).simulate(60, 20.0);
        // Free fall: y = 10 + g t²/2 until it reaches 95 at t = sqrt(2·85/200).
        let t_hit = (2.0f64 * 85.0 / 200.0).sqrt();
        let first = sim.events[0];
        assert_eq!(first.kind, EventKind::Wall { wall: Wall::Bottom });
        assert!((first.time - t_hit).abs() < 1e-9);
        for (k, frame) in sim.poses.iter().enumerate() {
            let t = k as f64 / 20.0;
            if t < t_hit {
                assert!((frame[0].y - (10.0 + 100.0 * t * t)).abs() < 1e-9);
            }
            assert!(frame[0].y <= 95.0 + 1e-9);
        }
        // Restitution: the second floor hit comes after a hop lower than the drop.
        let peak = sim.poses[(t_hit * 20.0) as usize + 1..]
            .iter()
            .map(|f| f[0].y)
            .fold(f64::INFINITY, f64::min);
        assert!(peak > 10.0 + 20.0, "peak {peak}");
    }

    #[test]
    fn equal_masses_exchange_velocity() {
        let sim = world(vec![
            body(30.0, 50.0, 20.0, 0.0),
            body(70.0, 50.0, -20.0, 0.0),
        ])
        .simulate(11, 10.0);
        // Gap 40 - 10 = 30 closes at 40 px/s: contact at 0.75 s.
        let e: Vec<_> = sim.events.iter().map(|e| (e.object, e.kind)).collect();
        assert_eq!(
            e,
            vec![
                (0, EventKind::Collides { other: 1 }),
                (1, EventKind::Collides { other: 0 })
            ]
        );
        assert!((sim.events[0].time - 0.75).abs() < 1e-9);
        assert_eq!(sim.events[0].frame, 8);
        // After the hit they separate: 0 moves left, 1 moves right.
        assert!(sim.poses[10][0].x < sim.poses[9][0].x);
        assert!(sim.poses[10][1].x > sim.poses[9][1].x);
    }

    #[test]
    fn orbit_is_clockwise() {
        let mut b = body(0.0, 0.0, 0.0, 0.0);
        b.orbit = Some(Orbit {
            cx: 50.0,
            cy: 50.0,
            rho: 20.0,
            phase: 0.0,
            rate: std::f64::consts::FRAC_PI_2,
        });
        let sim = world(vec![b]).simulate(2, 1.0);
        // Quarter turn from the right of the centre goes down on screen: clockwise.
        assert!((sim.poses[1][0].x - 50.0).abs() < 1e-9);
        assert!((sim.poses[1][0].y - 70.0).abs() < 1e-9);
    }
}
