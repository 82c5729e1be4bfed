//! Shape outlines in units of the object's radius: signed distance for anti-aliased rendering,
//! extents for wall contact and bounding boxes. One description per shape serves both, so what
//! is drawn is exactly what touches the walls.

use crate::caption::Shape;

/// Ring hole radius as a fraction of the outer radius.
const RING_INNER: f64 = 0.55;

/// Polygon outline (unit circumradius, y down, pointing up), or `None` for round shapes.
fn outline(shape: Shape) -> Option<&'static [(f64, f64)]> {
    const SQUARE: [(f64, f64); 4] = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)];
    // Equilateral, centroid at the origin, so the bottom edge sits at half the radius.
    const TRIANGLE: [(f64, f64); 3] = [(0.0, -1.0), (0.866_025_4, 0.5), (-0.866_025_4, 0.5)];
    const DIAMOND: [(f64, f64); 4] = [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)];
    const CROSS: [(f64, f64); 12] = [
        (-0.3, -0.95),
        (0.3, -0.95),
        (0.3, -0.3),
        (0.95, -0.3),
        (0.95, 0.3),
        (0.3, 0.3),
        (0.3, 0.95),
        (-0.3, 0.95),
        (-0.3, 0.3),
        (-0.95, 0.3),
        (-0.95, -0.3),
        (-0.3, -0.3),
    ];
    // Five points at radius 1, inner corners at 0.45, first point straight up.
    const STAR: [(f64, f64); 10] = [
        (0.0, -1.0),
        (0.264_503, -0.364_058),
        (0.951_057, -0.309_017),
        (0.427_975, 0.139_058),
        (0.587_785, 0.809_017),
        (0.0, 0.45),
        (-0.587_785, 0.809_017),
        (-0.427_975, 0.139_058),
        (-0.951_057, -0.309_017),
        (-0.264_503, -0.364_058),
    ];
    match shape {
        Shape::Circle | Shape::Ring => None,
        Shape::Square => Some(&SQUARE),
        Shape::Triangle => Some(&TRIANGLE),
        Shape::Diamond => Some(&DIAMOND),
        Shape::Cross => Some(&CROSS),
        Shape::Star => Some(&STAR),
    }
}

/// Signed distance from `(px, py)` to a polygon: negative inside.
fn polygon_sdf(poly: &[(f64, f64)], px: f64, py: f64) -> f64 {
    let mut best = f64::INFINITY;
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (ax, ay) = poly[j];
        let (bx, by) = poly[i];
        let (ex, ey) = (bx - ax, by - ay);
        let (wx, wy) = (px - ax, py - ay);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (dx, dy) = (wx - ex * t, wy - ey * t);
        best = best.min(dx * dx + dy * dy);
        // Even-odd rule: count edges crossing the horizontal ray to the right of the point.
        if (ay > py) != (by > py) && px < ax + (py - ay) / (by - ay) * ex {
            inside = !inside;
        }
        j = i;
    }
    if inside {
        -best.sqrt()
    } else {
        best.sqrt()
    }
}

/// A shape placed in the frame: centre, radius (px) and clockwise rotation (radians).
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub shape: Shape,
    pub x: f64,
    pub y: f64,
    pub radius: f64,
    pub angle: f64,
}

impl Placed {
    /// Signed distance in pixels from pixel-space point `(px, py)`; negative inside.
    pub fn sdf(&self, px: f64, py: f64) -> f64 {
        let (dx, dy) = (px - self.x, py - self.y);
        let r = self.radius;
        match self.shape {
            Shape::Circle => (dx * dx + dy * dy).sqrt() - r,
            Shape::Ring => {
                let d = (dx * dx + dy * dy).sqrt();
                let mid = r * (1.0 + RING_INNER) / 2.0;
                let half = r * (1.0 - RING_INNER) / 2.0;
                (d - mid).abs() - half
            }
            shape => {
                // Rotate the point into the shape's frame (inverse of a clockwise turn).
                let (s, c) = self.angle.sin_cos();
                let lx = (c * dx + s * dy) / r;
                let ly = (-s * dx + c * dy) / r;
                let poly = outline(shape).unwrap_or(&[]);
                if poly.is_empty() {
                    return f64::INFINITY;
                }
                polygon_sdf(poly, lx, ly) * r
            }
        }
    }

    /// Axis-aligned bounding box `[x0, y0, x1, y1]` in pixels (not clipped to the frame).
    pub fn bbox(&self) -> [f64; 4] {
        let (l, r, t, b) = extents(self.shape, self.angle);
        [
            self.x - l * self.radius,
            self.y - t * self.radius,
            self.x + r * self.radius,
            self.y + b * self.radius,
        ]
    }
}

/// Distances from the centre to the left, right, top and bottom of the shape, in radii, after
/// a clockwise rotation by `angle`.
pub fn extents(shape: Shape, angle: f64) -> (f64, f64, f64, f64) {
    let Some(poly) = outline(shape) else {
        return (1.0, 1.0, 1.0, 1.0);
    };
    let (s, c) = angle.sin_cos();
    let mut e = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for &(x, y) in poly {
        let (rx, ry) = (c * x - s * y, s * x + c * y);
        e = (e.0.max(-rx), e.1.max(rx), e.2.max(-ry), e.3.max(ry));
    }
    e
}

/// Radius (in radii) of the circle that stands in for the shape in object–object collisions:
/// between the inscribed and circumscribed circles, so contacts look right from most angles.
pub fn collision_radius(shape: Shape) -> f64 {
    match shape {
        Shape::Circle | Shape::Ring => 1.0,
        Shape::Square => 0.92,
        Shape::Triangle => 0.72,
        Shape::Star => 0.75,
        Shape::Diamond => 0.8,
        Shape::Cross => 0.85,
    }
}

/// Radius (in radii) of the smallest centred circle holding the shape at any angle.
pub fn circumradius(shape: Shape) -> f64 {
    match outline(shape) {
        None => 1.0,
        Some(poly) => poly
            .iter()
            .map(|&(x, y)| (x * x + y * y).sqrt())
            .fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(shape: Shape, angle: f64) -> Placed {
        Placed {
            shape,
            x: 0.0,
            y: 0.0,
            radius: 10.0,
            angle,
        }
    }

    #[test]
    fn sdf_sign_and_scale() {
        for &shape in Shape::ALL {
            let p = placed(shape, 0.3);
            // The centre is inside every shape except the ring's hole.
            let centre = p.sdf(0.0, 0.0);
            if shape == Shape::Ring {
                assert!((centre - 5.5).abs() < 1e-9, "{centre}");
            } else {
                assert!(centre < 0.0, "{shape}: {centre}");
            }
            assert!(p.sdf(25.0, 0.0) > 10.0, "{shape}");
        }
        // Square edges sit at 0.8 radii when not rotated.
        let sq = placed(Shape::Square, 0.0);
        assert!((sq.sdf(9.0, 0.0) - 1.0).abs() < 1e-9);
        assert!((sq.sdf(7.0, 0.0) + 1.0).abs() < 1e-9);
    }

    #[test]
    fn extents_match_sdf_boundary() {
        for &shape in Shape::ALL {
            for angle in [0.0, 0.4, 1.3] {
                let p = placed(shape, angle);
                let [x0, y0, x1, y1] = p.bbox();
                // Just outside the box is outside the shape; the box is tight to 0.05 px.
                for k in 0..50 {
                    let t = k as f64 / 49.0;
                    let (yx, xy) = (y0 + (y1 - y0) * t, x0 + (x1 - x0) * t);
                    assert!(p.sdf(x1 + 0.01, yx) > 0.0 && p.sdf(x0 - 0.01, yx) > 0.0);
                    assert!(p.sdf(xy, y1 + 0.01) > 0.0 && p.sdf(xy, y0 - 0.01) > 0.0);
                }
                let min_edge = (0..200)
                    .map(|k| p.sdf(x1 - 0.05, y0 + (y1 - y0) * k as f64 / 199.0))
                    .fold(f64::INFINITY, f64::min);
                assert!(min_edge < 0.06, "{shape} {angle}: {min_edge}");
            }
        }
    }

    #[test]
    fn rotation_is_clockwise_on_screen() {
        // A triangle's apex points up; turned clockwise by 90° it points right (+x).
        let p = placed(Shape::Triangle, std::f64::consts::FRAC_PI_2);
        assert!(p.sdf(9.5, 0.0) < 0.0);
        assert!(p.sdf(-9.5, 0.0) > 0.0);
    }
}
