//! Palette segmentation of one frame into objects, and geometric shape features.
//!
//! The shapes world paints objects in a fixed palette, so an object pixel is one whose nearest
//! palette colour lies within a tolerance. Connected same-colour regions are objects; the
//! anti-aliased fringe (blends with the background) falls outside the tolerance and is dropped.

/// Knobs of [`segment_frame`]. Distances are Euclidean in RGB8 units (0..=441).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentParams {
    /// A pixel belongs to a palette colour when it is at most this far from it. Generated videos
    /// blur colours, so this is loose; the palette entries are much further apart than this.
    pub tolerance: f64,
    /// Regions smaller than this many pixels are noise, not objects.
    pub min_area: usize,
    /// A palette colour covering at least this fraction of the frame border is the background.
    pub border_background_fraction: f64,
}

impl Default for SegmentParams {
    fn default() -> Self {
        Self {
            tolerance: 60.0,
            min_area: 6,
            border_background_fraction: 0.25,
        }
    }
}

/// Rotation-invariant geometry of one region, used to name its shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ShapeFeatures {
    /// Region area over the area of its axis-aligned bounding box, in (0, 1].
    pub fill: f64,
    /// Area over the convex hull's area (holes filled), in (0, 1]; low for stars.
    pub solidity: f64,
    /// Area (holes filled) over the circle through the farthest pixel: 1 for a disc, 2/π for a
    /// square, about 0.41 for an equilateral triangle.
    pub compactness: f64,
    /// Enclosed non-region pixels over the filled area, in [0, 1); high for rings.
    pub hole_fraction: f64,
    /// Fraction of pixels whose mirror image through the centroid is also in the region: near 1
    /// for centrally symmetric shapes (disc, square, diamond, cross, ring), lower for triangles
    /// and five-pointed stars.
    pub symmetry: f64,
    /// Square root of the ratio of the smaller to the larger principal second moment, in (0, 1]:
    /// 1 for shapes that are as wide as tall at every angle (disc, square), lower for a rhombus.
    pub elongation: f64,
    /// Distance from the centroid to the farthest pixel edge, in pixels.
    pub radius: f64,
}

/// One connected same-colour region of a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Index into the palette passed to [`segment_frame`].
    pub colour: usize,
    /// Pixels in the region.
    pub area: usize,
    /// Centre of mass in pixels (x right, y down; pixel `(0, 0)` covers `[0, 1)²`).
    pub centroid: (f64, f64),
    /// Bounding box `(x0, y0, x1, y1)`, exclusive end, in pixels.
    pub bbox: (u32, u32, u32, u32),
    /// The region touches the frame edge, so it may be cut off and its shape is unreliable.
    pub touches_border: bool,
    /// Another region lies within two pixels (the anti-aliased seam between an occluder and
    /// what it hides is one pixel wide), so this one may be partly hidden.
    pub touches_other: bool,
    pub features: ShapeFeatures,
}

/// A frame split into regions: `labels[y * width + x]` is `0` for no object or `k + 1` for
/// `components[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub width: u32,
    pub height: u32,
    pub labels: Vec<u32>,
    pub components: Vec<Component>,
    /// Pixels of an object colour, including regions too small or too thin to be objects (the
    /// anti-aliased fringe, a thin ring at an unlucky sub-pixel offset): not the backdrop.
    pub foreground: Vec<bool>,
}

const NONE: u32 = u32::MAX;

/// Nearest palette colour of every pixel within `tolerance`, or [`NONE`].
fn classify_pixels(frame: &[u8], palette: &[[u8; 3]], tolerance: f64) -> Vec<u32> {
    let tol2 = tolerance * tolerance;
    frame
        .chunks_exact(3)
        .map(|px| {
            let mut best = (f64::INFINITY, NONE);
            for (k, c) in palette.iter().enumerate() {
                let d: f64 = (0..3)
                    .map(|i| {
                        let e = px[i] as f64 - c[i] as f64;
                        e * e
                    })
                    .sum();
                if d < best.0 {
                    best = (d, k as u32);
                }
            }
            if best.0 <= tol2 {
                best.1
            } else {
                NONE
            }
        })
        .collect()
}

/// Splits one RGB8 frame (`width * height * 3` bytes) into palette-coloured regions.
pub fn segment_frame(
    frame: &[u8],
    width: u32,
    height: u32,
    palette: &[[u8; 3]],
    params: &SegmentParams,
) -> Segmentation {
    let (w, h) = (width as usize, height as usize);
    let mut class = classify_pixels(frame, palette, params.tolerance);

    // A palette colour that dominates the border is the backdrop, not an object.
    let mut border_counts = vec![0usize; palette.len()];
    let mut border_total = 0usize;
    for y in 0..h {
        for x in 0..w {
            if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                border_total += 1;
                if let Some(c) = border_counts.get_mut(class[y * w + x] as usize) {
                    *c += 1;
                }
            }
        }
    }
    for (k, &n) in border_counts.iter().enumerate() {
        if border_total > 0 && n as f64 >= params.border_background_fraction * border_total as f64 {
            for c in class.iter_mut().filter(|c| **c == k as u32) {
                *c = NONE;
            }
        }
    }

    let mut labels = vec![0u32; w * h];
    let mut foreground = vec![false; w * h];
    let mut components = Vec::new();
    let mut stack = Vec::new();
    let mut pixels = Vec::new();
    for start in 0..w * h {
        if class[start] == NONE || labels[start] != 0 {
            continue;
        }
        let colour = class[start];
        let id = components.len() as u32 + 1;
        pixels.clear();
        labels[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = ((i % w) as i64, (i / w) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if labels[j] == 0 && class[j] == colour {
                        labels[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        // A region with no pixel whose 4 neighbours share its colour is an anti-aliased fringe.
        let has_core = pixels.iter().any(|&i| {
            let (x, y) = (i % w, i / w);
            x > 0
                && y > 0
                && x + 1 < w
                && y + 1 < h
                && [i - 1, i + 1, i - w, i + w]
                    .iter()
                    .all(|&j| labels[j] == id)
        });
        let too_big = pixels.len() * 2 > w * h;
        if pixels.len() < params.min_area || !has_core || too_big {
            for &i in &pixels {
                labels[i] = u32::MAX; // visited, but not an object
                foreground[i] = !too_big;
            }
            continue;
        }
        let mut comp = describe(&pixels, colour as usize, w, h);
        if let Some(c) = coverage_centroid(
            frame,
            &class,
            &pixels,
            &comp,
            palette[colour as usize],
            w,
            h,
        ) {
            comp.centroid = c;
        }
        components.push(comp);
    }
    for (l, f) in labels.iter_mut().zip(foreground.iter_mut()) {
        if *l == u32::MAX {
            *l = 0;
        } else if *l != 0 {
            *f = true;
        }
    }
    for y in 0..h {
        for x in 0..w {
            let l = labels[y * w + x];
            if l == 0 || components[l as usize - 1].touches_other {
                continue;
            }
            let near = (y.saturating_sub(2)..(y + 3).min(h)).any(|yy| {
                (x.saturating_sub(2)..(x + 3).min(w)).any(|xx| {
                    let m = labels[yy * w + xx];
                    m != 0 && m != l
                })
            });
            if near {
                components[l as usize - 1].touches_other = true;
            }
        }
    }
    Segmentation {
        width,
        height,
        labels,
        components,
        foreground,
    }
}

/// Centre of mass with anti-aliased edges counted by coverage, so slow motion moves the centre
/// smoothly instead of in whole-pixel steps. A pixel blending the object colour `c` with the
/// backdrop `b` as `a·c + (1−a)·b` has coverage `a = 1 − |p − c| / |b − c|`; the backdrop is the
/// mean of the non-object pixels two steps outside the region. `None` when the backdrop is too
/// close to the object colour to tell coverage.
fn coverage_centroid(
    frame: &[u8],
    class: &[u32],
    pixels: &[usize],
    comp: &Component,
    rgb: [u8; 3],
    w: usize,
    h: usize,
) -> Option<(f64, f64)> {
    let (x0, y0) = (comp.bbox.0 as usize, comp.bbox.1 as usize);
    let (x0, y0) = (x0.saturating_sub(2), y0.saturating_sub(2));
    let (x1, y1) = (
        (comp.bbox.2 as usize + 2).min(w),
        (comp.bbox.3 as usize + 2).min(h),
    );
    let mw = x1 - x0;
    // 1: region, 2: first ring outside, 3: second ring.
    let mut state = vec![0u8; mw * (y1 - y0)];
    for &i in pixels {
        state[(i / w - y0) * mw + (i % w - x0)] = 1;
    }
    for ring in [2u8, 3] {
        let prev: Vec<u8> = state.clone();
        for y in y0..y1 {
            for x in x0..x1 {
                let k = (y - y0) * mw + (x - x0);
                if prev[k] != 0 || class[y * w + x] != NONE {
                    continue;
                }
                let inner = (y.saturating_sub(1).max(y0)..(y + 2).min(y1)).any(|yy| {
                    (x.saturating_sub(1).max(x0)..(x + 2).min(x1))
                        .any(|xx| prev[(yy - y0) * mw + (xx - x0)] == ring - 1)
                });
                if inner {
                    state[k] = ring;
                }
            }
        }
    }
    let (mut bg, mut nb) = ([0.0f64; 3], 0.0);
    for y in y0..y1 {
        for x in x0..x1 {
            if state[(y - y0) * mw + (x - x0)] == 3 {
                let p = &frame[3 * (y * w + x)..3 * (y * w + x) + 3];
                (0..3).for_each(|c| bg[c] += p[c] as f64);
                nb += 1.0;
            }
        }
    }
    if nb == 0.0 {
        return None;
    }
    let dist = |p: &[f64; 3]| {
        (0..3)
            .map(|c| (p[c] - rgb[c] as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let bg = bg.map(|v| v / nb);
    let span = dist(&bg);
    if span < 30.0 {
        return None;
    }
    let (mut sx, mut sy, mut sa) = (0.0, 0.0, 0.0);
    for y in y0..y1 {
        for x in x0..x1 {
            let st = state[(y - y0) * mw + (x - x0)];
            if st != 1 && st != 2 {
                continue;
            }
            let i = y * w + x;
            let p = [
                frame[3 * i] as f64,
                frame[3 * i + 1] as f64,
                frame[3 * i + 2] as f64,
            ];
            let a = (1.0 - dist(&p) / span).clamp(0.0, 1.0);
            sx += a * (x as f64 + 0.5);
            sy += a * (y as f64 + 0.5);
            sa += a;
        }
    }
    (sa > 0.0).then(|| (sx / sa, sy / sa))
}

/// Geometry of a region given its pixel indices.
fn describe(pixels: &[usize], colour: usize, w: usize, h: usize) -> Component {
    let n = pixels.len() as f64;
    let (mut sx, mut sy) = (0.0, 0.0);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for &i in pixels {
        let (x, y) = (i % w, i / w);
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x + 1);
        y1 = y1.max(y + 1);
    }
    let centroid = (sx / n, sy / n);
    let (bw, bh) = (x1 - x0, y1 - y0);

    // Mask in the bbox grown by one pixel, so the outside is connected around the region.
    let (mw, mh) = (bw + 2, bh + 2);
    let mut mask = vec![false; mw * mh];
    for &i in pixels {
        let (x, y) = (i % w, i / w);
        mask[(y - y0 + 1) * mw + (x - x0 + 1)] = true;
    }
    let mut outside = vec![false; mw * mh];
    let mut stack = vec![0usize];
    outside[0] = true;
    while let Some(i) = stack.pop() {
        let (x, y) = (i % mw, i / mw);
        let mut visit = |j: usize| {
            if !mask[j] && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < mw {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - mw);
        }
        if y + 1 < mh {
            visit(i + mw);
        }
    }
    let holes = mask
        .iter()
        .zip(&outside)
        .filter(|(m, o)| !**m && !**o)
        .count() as f64;
    let filled = n + holes;

    // Convex hull of the corners of each row's outermost pixels (holes do not matter here).
    let mut corners = Vec::with_capacity(4 * mh);
    let mut farthest2: f64 = 0.0;
    for my in 1..mh - 1 {
        let row = &mask[my * mw..(my + 1) * mw];
        let (Some(first), Some(last)) = (row.iter().position(|&m| m), row.iter().rposition(|&m| m))
        else {
            continue;
        };
        let y = (my - 1 + y0) as i64;
        let (xa, xb) = ((first - 1 + x0) as i64, (last - 1 + x0) as i64 + 1);
        corners.extend([(xa, y), (xa, y + 1), (xb, y), (xb, y + 1)]);
        for x in [xa as f64 + 0.5, xb as f64 - 0.5] {
            let (dx, dy) = (x - centroid.0, y as f64 + 0.5 - centroid.1);
            farthest2 = farthest2.max(dx * dx + dy * dy);
        }
    }
    let hull = hull_area(&mut corners);
    let radius = farthest2.sqrt() + 0.5;

    let (mut mirrored, mut sxx, mut syy, mut sxy) = (0usize, 0.0, 0.0, 0.0);
    for &i in pixels {
        let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
        let (dx, dy) = (x - centroid.0, y - centroid.1);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
        let (mx, my) = (centroid.0 - dx, centroid.1 - dy);
        let (gx, gy) = (mx.floor() - x0 as f64 + 1.0, my.floor() - y0 as f64 + 1.0);
        if gx >= 0.0 && gy >= 0.0 && (gx as usize) < mw && (gy as usize) < mh {
            mirrored += mask[gy as usize * mw + gx as usize] as usize;
        }
    }
    // Principal moments of the 2×2 covariance.
    let (tr, det) = (sxx + syy, sxx * syy - sxy * sxy);
    let disc = (tr * tr / 4.0 - det).max(0.0).sqrt();
    let (l_max, l_min) = (tr / 2.0 + disc, (tr / 2.0 - disc).max(0.0));
    Component {
        colour,
        area: pixels.len(),
        centroid,
        bbox: (x0 as u32, y0 as u32, x1 as u32, y1 as u32),
        touches_border: x0 == 0 || y0 == 0 || x1 == w || y1 == h,
        touches_other: false,
        features: ShapeFeatures {
            fill: n / (bw * bh) as f64,
            solidity: if hull > 0.0 {
                (filled / hull).min(1.0)
            } else {
                1.0
            },
            compactness: filled / (std::f64::consts::PI * radius * radius),
            hole_fraction: holes / filled,
            symmetry: mirrored as f64 / n,
            elongation: if l_max > 0.0 {
                (l_min / l_max).sqrt()
            } else {
                1.0
            },
            radius,
        },
    }
}

/// Area of the convex hull of integer points (Andrew's monotone chain); sorts `points`.
fn hull_area(points: &mut [(i64, i64)]) -> f64 {
    points.sort_unstable();
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(points.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(i64, i64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    let twice: i64 = (0..hull.len())
        .map(|i| {
            let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    twice.abs() as f64 / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PALETTE: [[u8; 3]; 3] = [[230, 40, 40], [40, 90, 230], [240, 220, 40]];

    fn blank(w: usize, h: usize) -> Vec<u8> {
        vec![30; w * h * 3]
    }

    fn paint(frame: &mut [u8], w: usize, rgb: [u8; 3], inside: impl Fn(f64, f64) -> bool) {
        for (i, px) in frame.chunks_exact_mut(3).enumerate() {
            let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
            if inside(x, y) {
                px.copy_from_slice(&rgb);
            }
        }
    }

    #[test]
    fn finds_two_objects_with_right_colour_and_centre() {
        let (w, h) = (64, 48);
        let mut f = blank(w, h);
        paint(&mut f, w, PALETTE[0], |x, y| {
            (x - 20.0).hypot(y - 20.0) < 6.0
        });
        paint(&mut f, w, PALETTE[2], |x, y| {
            (40.0..50.0).contains(&x) && (30.0..40.0).contains(&y)
        });
        let s = segment_frame(&f, w as u32, h as u32, &PALETTE, &SegmentParams::default());
        assert_eq!(s.components.len(), 2);
        let c = &s.components[0];
        assert_eq!(c.colour, 0);
        assert!((c.centroid.0 - 20.0).abs() < 0.1 && (c.centroid.1 - 20.0).abs() < 0.1);
        let sq = &s.components[1];
        assert_eq!((sq.colour, sq.area, sq.bbox), (2, 100, (40, 30, 50, 40)));
        assert!(!sq.touches_border);
        assert_eq!(s.labels[35 * w + 45], 2);
        assert_eq!(s.labels[0], 0);
    }

    #[test]
    fn background_in_a_palette_colour_is_ignored_and_fringes_dropped() {
        let (w, h) = (32, 32);
        let mut f = blank(w, h);
        paint(&mut f, w, PALETTE[1], |_, _| true);
        paint(&mut f, w, PALETTE[0], |x, y| {
            (x - 16.0).hypot(y - 16.0) < 5.0
        });
        // A one-pixel-wide yellow line is anti-aliasing debris, not an object.
        paint(&mut f, w, PALETTE[2], |x, _| (3.0..4.0).contains(&x));
        let s = segment_frame(&f, w as u32, h as u32, &PALETTE, &SegmentParams::default());
        assert_eq!(s.components.len(), 1);
        assert_eq!(s.components[0].colour, 0);
    }

    #[test]
    fn features_separate_the_basic_shapes() {
        let (w, h) = (64, 64);
        let r = 12.0;
        type Inside = Box<dyn Fn(f64, f64) -> bool>;
        let shapes: Vec<(&str, Inside)> = vec![
            ("disc", Box::new(move |x: f64, y: f64| x.hypot(y) < r)),
            (
                "square",
                Box::new(move |x: f64, y: f64| x.abs() < r * 0.8 && y.abs() < r * 0.8),
            ),
            (
                "ring",
                Box::new(move |x: f64, y: f64| (r * 0.55..r).contains(&x.hypot(y))),
            ),
        ];
        for (name, inside) in shapes {
            let mut f = blank(w, h);
            paint(&mut f, w, PALETTE[0], |x, y| inside(x - 32.0, y - 32.0));
            let s = segment_frame(&f, w as u32, h as u32, &PALETTE, &SegmentParams::default());
            assert_eq!(s.components.len(), 1, "{name}");
            let ft = s.components[0].features;
            match name {
                "disc" => assert!(ft.compactness > 0.9 && ft.solidity > 0.9, "{ft:?}"),
                "square" => {
                    assert!((0.55..0.75).contains(&ft.compactness), "{ft:?}");
                    assert!(ft.fill > 0.99, "{ft:?}");
                }
                _ => assert!(ft.hole_fraction > 0.2, "{ft:?}"),
            }
        }
    }

    #[test]
    fn hull_of_a_unit_square_grid() {
        let mut pts = vec![(0, 0), (2, 0), (2, 3), (0, 3), (1, 1)];
        assert_eq!(hull_area(&mut pts), 6.0);
    }
}
