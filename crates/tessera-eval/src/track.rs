//! Object tracks across frames: colour identity plus nearest predicted centre.
//!
//! All positions are in pixels of the analysed frame (x right, y down), velocities in pixels per
//! frame and accelerations in pixels per frame².

use crate::segment::{Component, Segmentation};

/// One sighting of a tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub frame: usize,
    pub component: Component,
    /// Another region touches it, or it was pieced together from fragments: it may be partly
    /// hidden, so its centre and shape are not trusted.
    pub in_contact: bool,
}

/// The sightings of one object, in frame order; frames where it was not seen are absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Palette index shared by all sightings.
    pub colour: usize,
    pub observations: Vec<Observation>,
}

/// Knobs of [`build_tracks`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackParams {
    /// Largest jump from the predicted centre still matched, as a fraction of the frame diagonal,
    /// plus `gate_growth` of it per missing frame (an occluded object drifts from the prediction).
    pub gate: f64,
    pub gate_growth: f64,
}

impl Default for TrackParams {
    fn default() -> Self {
        Self {
            gate: 0.15,
            gate_growth: 0.03,
        }
    }
}

impl Track {
    pub fn first_frame(&self) -> usize {
        self.observations.first().map_or(0, |o| o.frame)
    }

    pub fn last_frame(&self) -> usize {
        self.observations.last().map_or(0, |o| o.frame)
    }

    /// Frames from first to last sighting, gaps included.
    pub fn span(&self) -> usize {
        self.last_frame() + 1 - self.first_frame()
    }

    /// The object's unoccluded area in pixels: the 80th percentile of its sightings, so partial
    /// occlusions and cut-off frames do not shrink it.
    pub fn reference_area(&self) -> f64 {
        let mut areas: Vec<usize> = self.observations.iter().map(|o| o.component.area).collect();
        areas.sort_unstable();
        areas
            .get(areas.len() * 4 / 5)
            .or(areas.last())
            .map_or(0.0, |&a| a as f64)
    }

    /// Whether a sighting shows the whole object: inside the frame, not shrunk by occlusion and
    /// touching nothing (unless it touches something in every sighting, like two still objects
    /// drawn overlapping, when contact alone is no reason to distrust it).
    pub fn is_clean(&self, o: &Observation) -> bool {
        !o.component.touches_border
            && o.component.area as f64 >= 0.8 * self.reference_area()
            && (!o.in_contact || self.observations.iter().all(|x| x.in_contact))
    }

    /// Circumradius in pixels over whole sightings (median), for judging fragments.
    fn reference_radius(&self) -> f64 {
        let a = self.reference_area();
        let r: Vec<f64> = self
            .observations
            .iter()
            .filter(|o| o.component.area as f64 >= 0.9 * a)
            .map(|o| o.component.features.radius)
            .collect();
        median(&r).unwrap_or(0.0)
    }

    /// Centre per frame (`n_frames` long) where the sighting is clean, else `None`.
    pub fn clean_positions(&self, n_frames: usize) -> Vec<Option<(f64, f64)>> {
        let mut out = vec![None; n_frames];
        for o in &self.observations {
            if o.frame < n_frames && self.is_clean(o) {
                out[o.frame] = Some(o.component.centroid);
            }
        }
        out
    }

    /// Centre per frame where the sighting shows nearly all of the object, touching nothing
    /// (as in [`Track::is_clean`]) but possibly the frame's edge, else `None`: an object that
    /// grazes a wall loses little of its area, and that frame is where a bounce shows.
    pub fn whole_positions(&self, n_frames: usize) -> Vec<Option<(f64, f64)>> {
        let all_in_contact = self.observations.iter().all(|x| x.in_contact);
        let reference = self.reference_area();
        let mut out = vec![None; n_frames];
        for o in &self.observations {
            if o.frame < n_frames
                && o.component.area as f64 >= 0.8 * reference
                && (!o.in_contact || all_in_contact)
            {
                out[o.frame] = Some(o.component.centroid);
            }
        }
        out
    }

    /// Centre per frame of any sighting, else `None`.
    pub fn positions(&self, n_frames: usize) -> Vec<Option<(f64, f64)>> {
        let mut out = vec![None; n_frames];
        for o in &self.observations {
            if o.frame < n_frames {
                out[o.frame] = Some(o.component.centroid);
            }
        }
        out
    }

    /// Where the object should be at `frame`, extrapolating its last two sightings linearly.
    fn predict(&self, frame: usize) -> (f64, f64) {
        let n = self.observations.len();
        let last = &self.observations[n - 1];
        let p = last.component.centroid;
        if n < 2 {
            return p;
        }
        let prev = &self.observations[n - 2];
        let dt = (last.frame - prev.frame) as f64;
        let v = (
            (p.0 - prev.component.centroid.0) / dt,
            (p.1 - prev.component.centroid.1) / dt,
        );
        let ahead = (frame - last.frame) as f64;
        (p.0 + v.0 * ahead, p.1 + v.1 * ahead)
    }
}

/// Links per-frame regions into tracks.
///
/// A region continues the same-coloured track whose predicted centre is nearest, within the
/// gate. When a colour has exactly one track and one region in a frame they are linked whatever
/// the distance: colour is the identity in the shapes world, and this keeps a jerky or shuffled
/// video as one track whose jumps the smoothness and physics metrics then see.
pub fn build_tracks(frames: &[Segmentation], params: &TrackParams) -> Vec<Track> {
    let mut tracks: Vec<Track> = Vec::new();
    for (t, seg) in frames.iter().enumerate() {
        let diag = (seg.width as f64).hypot(seg.height as f64);
        let comps = &seg.components;
        let mut taken_track = vec![false; tracks.len()];
        let mut taken_comp = vec![false; comps.len()];

        // Unique colour: one track, one region.
        for (ci, c) in comps.iter().enumerate() {
            let same_comps = comps.iter().filter(|o| o.colour == c.colour).count();
            let same_tracks: Vec<usize> = (0..tracks.len())
                .filter(|&k| tracks[k].colour == c.colour)
                .collect();
            if same_comps == 1 && same_tracks.len() == 1 {
                let k = same_tracks[0];
                taken_track[k] = true;
                taken_comp[ci] = true;
                tracks[k].observations.push(Observation {
                    frame: t,
                    component: c.clone(),
                    in_contact: comps[ci].touches_other,
                });
            }
        }

        // Otherwise greedy nearest prediction within the gate.
        let mut pairs = Vec::new();
        for (k, tr) in tracks.iter().enumerate() {
            if taken_track[k] {
                continue;
            }
            let gap = (t - tr.last_frame()) as f64;
            let gate = diag * (params.gate + params.gate_growth * (gap - 1.0));
            let p = tr.predict(t);
            for (ci, c) in comps.iter().enumerate() {
                if taken_comp[ci] || c.colour != tr.colour {
                    continue;
                }
                let d = (c.centroid.0 - p.0).hypot(c.centroid.1 - p.1);
                if d <= gate {
                    pairs.push((d, k, ci));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, k, ci) in pairs {
            if taken_track[k] || taken_comp[ci] {
                continue;
            }
            taken_track[k] = true;
            taken_comp[ci] = true;
            tracks[k].observations.push(Observation {
                frame: t,
                component: comps[ci].clone(),
                in_contact: comps[ci].touches_other,
            });
        }

        // A leftover piece that fits inside the extent of a same-coloured object seen in this
        // frame is that object cut in two by something in front of it.
        for (ci, c) in comps.iter().enumerate() {
            if taken_comp[ci] {
                continue;
            }
            let host = tracks.iter_mut().find(|tr| {
                tr.colour == c.colour && tr.last_frame() == t && tr.observations.len() > 1 && {
                    let o = &tr.observations[tr.observations.len() - 1].component;
                    let b = union_box(o.bbox, c.bbox);
                    let extent = (b.2 - b.0).max(b.3 - b.1) as f64;
                    extent <= 2.3 * tr.reference_radius() + 1.0
                }
            });
            if let Some(tr) = host {
                let last = tr.observations.len() - 1;
                let o = &mut tr.observations[last];
                merge_into(&mut o.component, c);
                o.in_contact = true;
                taken_comp[ci] = true;
            }
        }
        for (ci, c) in comps.iter().enumerate() {
            if !taken_comp[ci] {
                tracks.push(Track {
                    colour: c.colour,
                    observations: vec![Observation {
                        frame: t,
                        component: c.clone(),
                        in_contact: comps[ci].touches_other,
                    }],
                });
            }
        }
    }
    tracks
}

/// Distance in pixels between two boxes `(x0, y0, x1, y1)` (0 when they touch or overlap).
pub fn box_gap(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> f64 {
    let gx = (a.0 as f64 - b.2 as f64)
        .max(b.0 as f64 - a.2 as f64)
        .max(0.0);
    let gy = (a.1 as f64 - b.3 as f64)
        .max(b.1 as f64 - a.3 as f64)
        .max(0.0);
    gx.hypot(gy)
}

fn union_box(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> (u32, u32, u32, u32) {
    (a.0.min(b.0), a.1.min(b.1), a.2.max(b.2), a.3.max(b.3))
}

/// Adds fragment `b` to region `a` (area-weighted centre, union box; `a` keeps its features).
fn merge_into(a: &mut Component, b: &Component) {
    let (na, nb) = (a.area as f64, b.area as f64);
    a.centroid = (
        (a.centroid.0 * na + b.centroid.0 * nb) / (na + nb),
        (a.centroid.1 * na + b.centroid.1 * nb) / (na + nb),
    );
    a.area += b.area;
    a.bbox = union_box(a.bbox, b.bbox);
    a.touches_border |= b.touches_border;
}

/// Velocity per frame `t` as `p[t+1] - p[t]` where both are known (length `n - 1`).
pub fn velocities(p: &[Option<(f64, f64)>]) -> Vec<Option<(f64, f64)>> {
    p.windows(2)
        .map(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
            _ => None,
        })
        .collect()
}

/// Acceleration at frame `t` as `p[t+1] - 2 p[t] + p[t-1]`, indexed by `t - 1` (length `n - 2`).
pub fn accelerations(p: &[Option<(f64, f64)>]) -> Vec<Option<(f64, f64)>> {
    p.windows(3)
        .map(|w| match (w[0], w[1], w[2]) {
            (Some(a), Some(b), Some(c)) => Some((c.0 - 2.0 * b.0 + a.0, c.1 - 2.0 * b.1 + a.1)),
            _ => None,
        })
        .collect()
}

/// Component-wise median of the known values, or `None` when there are none.
pub fn median2(v: &[Option<(f64, f64)>]) -> Option<(f64, f64)> {
    let xs: Vec<f64> = v.iter().flatten().map(|p| p.0).collect();
    let ys: Vec<f64> = v.iter().flatten().map(|p| p.1).collect();
    Some((median(&xs)?, median(&ys)?))
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::ShapeFeatures;

    fn comp(colour: usize, x: f64, y: f64, area: usize) -> Component {
        Component {
            colour,
            area,
            centroid: (x, y),
            bbox: (x as u32 - 2, y as u32 - 2, x as u32 + 2, y as u32 + 2),
            touches_border: false,
            touches_other: false,
            features: ShapeFeatures::default(),
        }
    }

    fn frame(components: Vec<Component>) -> Segmentation {
        Segmentation {
            width: 64,
            height: 64,
            labels: vec![],
            foreground: vec![],
            components,
        }
    }

    #[test]
    fn same_colour_objects_crossing_keep_their_identity() {
        // Two red objects moving towards each other on parallel rows keep their direction.
        let frames: Vec<_> = (0..10)
            .map(|t| {
                let t = t as f64;
                frame(vec![
                    comp(0, 10.0 + 4.0 * t, 20.0, 20),
                    comp(0, 50.0 - 4.0 * t, 26.0, 20),
                ])
            })
            .collect();
        let tracks = build_tracks(&frames, &TrackParams::default());
        assert_eq!(tracks.len(), 2);
        for tr in &tracks {
            assert_eq!(tr.observations.len(), 10);
            let ys: Vec<f64> = tr
                .observations
                .iter()
                .map(|o| o.component.centroid.1)
                .collect();
            assert!(ys.iter().all(|&y| y == ys[0]), "{ys:?}");
        }
    }

    #[test]
    fn occluded_object_is_picked_up_again_on_its_path() {
        let frames: Vec<_> = (0..12)
            .map(|t| {
                let x = 10.0 + 3.0 * t as f64;
                let mut c = vec![comp(1, 30.0, 40.0, 30), comp(0, 12.0, 8.0, 20)];
                if !(4..8).contains(&t) {
                    c.push(comp(0, x, 40.0, 20));
                }
                frame(c)
            })
            .collect();
        let tracks = build_tracks(&frames, &TrackParams::default());
        assert_eq!(tracks.len(), 3, "{tracks:#?}");
        let mover = tracks.iter().find(|t| t.observations.len() == 8).unwrap();
        assert_eq!(
            (mover.first_frame(), mover.last_frame(), mover.span()),
            (0, 11, 12)
        );
    }

    #[test]
    fn finite_differences() {
        let p: Vec<_> = (0..5)
            .map(|t| Some((t as f64, 0.5 * (t * t) as f64)))
            .collect();
        let a = accelerations(&p);
        assert!(a.iter().all(|a| *a == Some((0.0, 1.0))));
        assert_eq!(velocities(&p)[2], Some((1.0, 2.5)));
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
