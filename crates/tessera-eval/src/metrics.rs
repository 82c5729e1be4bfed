//! Per-clip analysis (segments, tracks, events) and the metrics computed from it.
//!
//! Pixel quantities are at the analysed resolution; thresholds scale with the frame's shorter
//! side relative to the 64-pixel world default, so they mean the same at any size.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tessera_media::Video;
use tessera_world::caption::{Background, BackgroundKind, BgColour, Colour, MotionKind, Region};
use tessera_world::render::Renderer;

use crate::error::{EvalError, Result};
use crate::scene::{direction_matches, match_objects, observe, ExpectedScene, ObservedObject};
use crate::segment::{segment_frame, SegmentParams, Segmentation};
use crate::track::{
    accelerations, box_gap, build_tracks, median, median2, velocities, Track, TrackParams,
};

/// Everything measured from one video, before comparing with a prompt.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub segmentations: Vec<Segmentation>,
    pub tracks: Vec<Track>,
    /// Tracks seen long enough to be objects rather than noise.
    pub objects: Vec<ObservedObject>,
    pub events: Vec<ObservedEvent>,
    /// Horizontal backdrop motion (camera pan) in pixels per frame; object headings are judged
    /// relative to it.
    pub pan: f64,
    /// Mean absolute frame difference of background pixels after the best global shift, in RGB8
    /// levels, one per frame transition.
    pub background_change: Vec<f64>,
    /// Fraction of pixels changing by more than [`CHANGE_LEVEL`], one per frame transition.
    pub changed_fraction: Vec<f64>,
    /// Per-frame colour histogram of background pixels (4×4×4 bins, sums to 1 or all zero).
    pub background_histograms: Vec<Vec<f64>>,
    /// Median colour of the top and bottom bands of the backdrop over the clip (see
    /// [`backdrop_bands`]).
    pub backdrop: [[f64; 3]; 2],
}

/// Something that happened to a tracked object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedEvent {
    pub frame: usize,
    /// Index into [`Analysis::objects`].
    pub object: usize,
    pub kind: ObservedEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedEventKind {
    /// Abrupt velocity change at a frame edge ("wall") or next to another object.
    Bounce { against: Contact },
    /// Abrupt velocity change with nothing to bounce off.
    UnexplainedJerk,
    /// Left the view; `explained` when it went behind another object or out of frame, and (for
    /// a reappearance) came back near where its path predicts.
    Vanished { frames: usize, explained: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Contact {
    Wall,
    Object,
}

/// A pixel "changes" between frames when some channel moves by more than this (RGB8 levels):
/// above compression noise and mild flicker, below any object edge passing by.
pub const CHANGE_LEVEL: u8 = 40;

/// Per-clip scores. Scores are in [0, 1] (1 best) unless stated; `None` where the clip gives
/// nothing to judge (e.g. no colour in the prompt, no object seen).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClipScores {
    /// 1 when the number of objects seen equals the prompt's, minus |seen − asked| / asked.
    pub object_count: Option<f64>,
    /// Fraction of the prompt's coloured objects matched by a seen object of that colour.
    pub colour: Option<f64>,
    /// Fraction of the prompt's shaped objects matched by a seen object of that shape.
    pub shape: Option<f64>,
    /// Fraction of the prompt's objects with a direction (falls: down; still: none) whose
    /// matched object heads that way within about 30°.
    pub direction: Option<f64>,
    /// Fraction of the prompt's placed objects ("in the top right") whose matched object is
    /// first seen in that cell of the captions' 3×3 grid (chance about 1/9).
    pub position: Option<f64>,
    /// Per object, shape agreement over frames × (1 − coefficient of variation of its area).
    pub subject_consistency: Option<f64>,
    /// Mean histogram intersection of each frame's background colours with the first frame's.
    pub background_consistency: Option<f64>,
    /// Fraction of the backdrop colours the prompt names (solid: one; gradient or floor: top
    /// and bottom) that are the nearest candidate to what the clip shows.
    pub backdrop: Option<f64>,
    /// `1 − flicker_level / 20`, clamped to [0, 1].
    pub flicker: Option<f64>,
    /// Mean of `exp(−r)` over object positions, `r` the error in 64-px-frame pixels of
    /// predicting each position by cubic interpolation of the two frames either side.
    pub smoothness: Option<f64>,
    /// Fraction of frame transitions in which at least 0.2% of pixels change clearly.
    pub dynamic_degree: Option<f64>,
    /// Per moving object, the fraction of frames whose acceleration is either its steady one
    /// or an abrupt change at a wall or another object; halved when the steady acceleration is
    /// not "none or downward" (or not downward for a prompt that says it falls).
    pub physics: Option<f64>,
    /// Fraction of disappearances explained by occlusion or leaving the frame, with the object
    /// reappearing on its predicted path; 1 when nothing disappears.
    pub permanence: Option<f64>,
    /// Mean absolute frame difference of static background pixels, RGB8 levels.
    pub flicker_level: f64,
    /// Mean object speed in frame widths per second.
    pub mean_speed: Option<f64>,
    /// Objects seen.
    pub observed_count: usize,
    /// Objects the prompt asks for.
    pub expected_count: usize,
}

/// Knobs of [`analyze`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AnalysisParams {
    pub segment: SegmentParams,
    pub track: TrackParams,
}

/// Pixel lengths at the world's 64-pixel default; scale with `shorter / 64`.
fn px(scale: f64, at64: f64) -> f64 {
    scale * at64
}

/// Segments and tracks every frame, then measures background, flicker and motion energy.
pub fn analyze(video: &Video, name: &str, params: &AnalysisParams) -> Result<Analysis> {
    if video.frames.is_empty() {
        return Err(EvalError::EmptyVideo {
            name: name.to_string(),
        });
    }
    let expected = video.frame_len();
    for (i, f) in video.frames.iter().enumerate() {
        if f.len() != expected {
            return Err(EvalError::BadFrame {
                name: name.to_string(),
                frame: i,
                expected,
                got: f.len(),
            });
        }
    }
    let palette: Vec<Colour> = Colour::ALL.to_vec();
    let rgb: Vec<[u8; 3]> = palette.iter().map(|c| c.rgb()).collect();
    let (w, h) = (video.width, video.height);
    let segmentations: Vec<Segmentation> = video
        .frames
        .iter()
        .map(|f| segment_frame(f, w, h, &rgb, &params.segment))
        .collect();
    let tracks = build_tracks(&segmentations, &params.track);
    let n = video.frames.len();
    let masks: Vec<Vec<bool>> = segmentations
        .iter()
        .map(|s| dilate(&s.foreground, w as usize, h as usize, 2))
        .collect();
    // Pan: backdrop shift over `LAG` frames (a larger shift is measured with less sub-pixel
    // bias), per frame.
    const LAG: usize = 4;
    let lag = LAG.min(n.saturating_sub(1)).max(1);
    let shifts: Vec<f64> = (0..n.saturating_sub(lag))
        .map(|t| {
            horizontal_shift(
                &video.frames[t],
                &video.frames[t + lag],
                &masks[t],
                &masks[t + lag],
                w as usize,
                h as usize,
            ) / lag as f64
        })
        .collect();
    let pan = median(&shifts).unwrap_or(0.0);
    // Tracks seen in at least a fifth of the frames are objects; shorter ones are debris.
    let min_len = 3.max(n / 5).min(n);
    let shorter = w.min(h) as f64;
    let objects: Vec<ObservedObject> = tracks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.observations.len() >= min_len)
        .map(|(k, t)| observe(k, t, &palette, n, shorter, (pan, 0.0)))
        .collect();

    let mut background_change = Vec::new();
    let mut changed_fraction = Vec::new();
    for t in 0..n.saturating_sub(1) {
        background_change.push(shifted_background_diff(
            &video.frames[t],
            &video.frames[t + 1],
            &masks[t],
            &masks[t + 1],
            w as usize,
            h as usize,
        ));
        let changed = video.frames[t]
            .chunks_exact(3)
            .zip(video.frames[t + 1].chunks_exact(3))
            .filter(|(a, b)| (0..3).any(|c| a[c].abs_diff(b[c]) > CHANGE_LEVEL))
            .count();
        changed_fraction.push(changed as f64 / (w as f64 * h as f64));
    }
    let background_histograms = video
        .frames
        .iter()
        .zip(&masks)
        .map(|(f, m)| histogram(f, m))
        .collect();

    let backdrop = backdrop_bands(&video.frames, Some(&masks), w as usize, h as usize);
    let mut analysis = Analysis {
        width: w,
        height: h,
        fps: video.fps,
        pan,
        segmentations,
        tracks,
        objects,
        events: Vec::new(),
        background_change,
        changed_fraction,
        background_histograms,
        backdrop,
    };
    analysis.events = detect_events(&analysis);
    Ok(analysis)
}

/// Share of the frame height in each backdrop band: the top band lies above every world
/// horizon, the bottom band on the floor or the gradient's far end.
const BAND: f64 = 0.15;

/// Per-channel median colour of the top and bottom [`BAND`] of rows over all `frames`, leaving
/// out pixels where `masks` marks an object: the backdrop colours a caption names, which stay
/// measurable even when a blurry decoder leaves objects unrecognisable.
pub fn backdrop_bands(
    frames: &[Vec<u8>],
    masks: Option<&[Vec<bool>]>,
    w: usize,
    h: usize,
) -> [[f64; 3]; 2] {
    let rows = ((h as f64 * BAND).round() as usize).clamp(1, h);
    let band = |ys: std::ops::Range<usize>| -> [f64; 3] {
        let mut ch: [Vec<u8>; 3] = Default::default();
        for (t, f) in frames.iter().enumerate() {
            for y in ys.clone() {
                for x in 0..w {
                    if masks.is_some_and(|m| m[t][y * w + x]) {
                        continue;
                    }
                    for (c, v) in ch.iter_mut().enumerate() {
                        v.push(f[(y * w + x) * 3 + c]);
                    }
                }
            }
        }
        ch.map(|mut v| {
            if v.is_empty() {
                return 0.0;
            }
            let k = v.len() / 2;
            *v.select_nth_unstable(k).1 as f64
        })
    };
    [band(0..rows), band(h - rows..h)]
}

/// Marks pixels within `r` (Chebyshev) of any object-coloured pixel.
fn dilate(foreground: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            if !foreground[y * w + x] {
                continue;
            }
            for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    out[yy * w + xx] = true;
                }
            }
        }
    }
    out
}

/// Mean absolute RGB difference over pixels that are background in both frames, after the
/// integer shift in [-2, 2]² that best explains a camera pan.
fn shifted_background_diff(
    a: &[u8],
    b: &[u8],
    obj_a: &[bool],
    obj_b: &[bool],
    w: usize,
    h: usize,
) -> f64 {
    let mut best = f64::INFINITY;
    for dy in -2i64..=2 {
        for dx in -2i64..=2 {
            let (mut sum, mut count) = (0u64, 0u64);
            for y in 2..h.saturating_sub(2) {
                for x in 2..w.saturating_sub(2) {
                    let i = y * w + x;
                    let j = ((y as i64 + dy) as usize) * w + (x as i64 + dx) as usize;
                    if obj_a[i] || obj_b[j] {
                        continue;
                    }
                    for c in 0..3 {
                        sum += a[3 * i + c].abs_diff(b[3 * j + c]) as u64;
                    }
                    count += 3;
                }
            }
            if count > 0 {
                best = best.min(sum as f64 / count as f64);
            }
        }
    }
    if best.is_finite() {
        best
    } else {
        0.0
    }
}

/// Sub-pixel horizontal shift of the backdrop from frame `a` to `b` in pixels (content at `x`
/// moves to `x + shift`): the integer shift in [-12, 12] with the least squared difference over
/// background pixels, refined by a parabola through its neighbours. 0 when the backdrop has no
/// horizontal texture to follow.
fn horizontal_shift(a: &[u8], b: &[u8], obj_a: &[bool], obj_b: &[bool], w: usize, h: usize) -> f64 {
    const R: i64 = 12;
    let cost: Vec<f64> = (-R..=R)
        .map(|dx| {
            let (mut sum, mut count) = (0.0, 0usize);
            for y in 0..h {
                for x in R as usize..w.saturating_sub(R as usize) {
                    let i = y * w + x;
                    let j = (i as i64 + dx) as usize;
                    if obj_a[i] || obj_b[j] {
                        continue;
                    }
                    for c in 0..3 {
                        let d = a[3 * i + c] as f64 - b[3 * j + c] as f64;
                        sum += d * d;
                    }
                    count += 1;
                }
            }
            if count > 0 {
                sum / count as f64
            } else {
                f64::INFINITY
            }
        })
        .collect();
    // Least cost; on a tie (a periodic backdrop) the smaller shift.
    let (k, &best) = cost
        .iter()
        .enumerate()
        .min_by(|a, b| {
            a.1.total_cmp(b.1)
                .then((a.0 as i64 - R).abs().cmp(&(b.0 as i64 - R).abs()))
        })
        .unwrap_or((R as usize, &0.0));
    let worst = cost
        .iter()
        .copied()
        .filter(|c| c.is_finite())
        .fold(0.0, f64::max);
    if !best.is_finite() || worst - best < 1.0 {
        return 0.0;
    }
    let mut shift = k as f64 - R as f64;
    if k > 0 && k + 1 < cost.len() {
        let (l, r) = (cost[k - 1], cost[k + 1]);
        let curvature = l - 2.0 * best + r;
        if curvature > 0.0 {
            shift += (0.5 * (l - r) / curvature).clamp(-0.5, 0.5);
        }
    }
    shift
}

fn histogram(frame: &[u8], objects: &[bool]) -> Vec<f64> {
    let mut hist = vec![0.0; 64];
    let mut n = 0.0;
    for (px, &o) in frame.chunks_exact(3).zip(objects) {
        if o {
            continue;
        }
        let bin = (px[0] as usize / 64) * 16 + (px[1] as usize / 64) * 4 + px[2] as usize / 64;
        hist[bin] += 1.0;
        n += 1.0;
    }
    if n > 0.0 {
        hist.iter_mut().for_each(|v| *v /= n);
    }
    hist
}

/// Bounces, unexplained jerks and disappearances of every observed object.
fn detect_events(a: &Analysis) -> Vec<ObservedEvent> {
    let n = a.segmentations.len();
    let scale = a.width.min(a.height) as f64 / 64.0;
    let (w, h) = (a.width, a.height);
    let mut events = Vec::new();
    for (oi, obj) in a.objects.iter().enumerate() {
        let track = &a.tracks[obj.track];
        let pos = track.clean_positions(n);
        let acc = accelerations(&pos);
        let vel = velocities(&pos);
        let steady = median2(&acc).unwrap_or((0.0, 0.0));
        let bbox_at = |t: usize| {
            track
                .observations
                .iter()
                .find(|o| o.frame == t)
                .map(|o| o.component.bbox)
        };
        let near_other = |t: usize, margin: f64| {
            bbox_at(t).is_some_and(|bb| {
                a.segmentations[t]
                    .components
                    .iter()
                    .any(|c| c.bbox != bb && box_gap(c.bbox, bb) <= margin)
            })
        };
        for (k, acc_k) in acc.iter().enumerate() {
            let Some(at) = acc_k else { continue };
            let t = k + 1;
            let speed = vel[t].map_or(0.0, |v| v.0.hypot(v.1));
            let tol = px(scale, 0.35) + 0.1 * speed;
            if (at.0 - steady.0).hypot(at.1 - steady.1) <= tol {
                continue;
            }
            // A real wall bounce happens at contact and gains no speed; a jump (shuffled or
            // resampled frames) does neither. A collision may pass speed on, so only contact is
            // asked of it.
            let margin = px(scale, 2.0) + (2.0 * speed).min(px(scale, 4.0));
            let before = vel[t - 1].map_or(0.0, |v| v.0.hypot(v.1));
            let no_gain = speed <= 1.15 * before + px(scale, 0.3);
            let at_wall = no_gain
                && [t - 1, t, t + 1].iter().any(|&f| {
                    bbox_at(f).is_some_and(|bb| {
                        bb.0 as f64 <= margin
                            || bb.1 as f64 <= margin
                            || (w - bb.2) as f64 <= margin
                            || (h - bb.3) as f64 <= margin
                    })
                });
            // A collision starts a contact; objects drawn overlapping all along explain nothing.
            let at_object = [t - 1, t, t + 1].iter().any(|&f| near_other(f, margin))
                && !(t >= 3 && near_other(t - 3, margin));
            let kind = if at_wall {
                ObservedEventKind::Bounce {
                    against: Contact::Wall,
                }
            } else if at_object {
                ObservedEventKind::Bounce {
                    against: Contact::Object,
                }
            } else {
                ObservedEventKind::UnexplainedJerk
            };
            events.push(ObservedEvent {
                frame: t,
                object: oi,
                kind,
            });
        }

        // Disappearances: gaps inside the track and an early end.
        let obs = &track.observations;
        let diag = (w as f64).hypot(h as f64);
        let hidden_or_out = |o: &crate::track::Observation| {
            o.component.touches_border || near_other(o.frame, px(scale, 1.0))
        };
        for pair in obs.windows(2) {
            let gap = pair[1].frame - pair[0].frame - 1;
            if gap < 2 {
                continue;
            }
            // Predict the reappearance from the velocity just before the gap.
            let before = obs
                .iter()
                .find(|o| o.frame < pair[0].frame && o.frame + 4 >= pair[0].frame);
            let p0 = pair[0].component.centroid;
            let v = before.map_or((0.0, 0.0), |b| {
                let dt = (pair[0].frame - b.frame) as f64;
                (
                    (p0.0 - b.component.centroid.0) / dt,
                    (p0.1 - b.component.centroid.1) / dt,
                )
            });
            let dt = (pair[1].frame - pair[0].frame) as f64;
            let pred = (p0.0 + v.0 * dt, p0.1 + v.1 * dt);
            let p1 = pair[1].component.centroid;
            let on_path = (p1.0 - pred.0).hypot(p1.1 - pred.1) <= 0.1 * diag + 0.5 * dt * scale;
            events.push(ObservedEvent {
                frame: pair[0].frame + 1,
                object: oi,
                kind: ObservedEventKind::Vanished {
                    frames: gap,
                    explained: hidden_or_out(&pair[0]) && on_path,
                },
            });
        }
        if let Some(last) = obs.last() {
            if last.frame + 2 < n {
                events.push(ObservedEvent {
                    frame: last.frame + 1,
                    object: oi,
                    kind: ObservedEventKind::Vanished {
                        frames: n - 1 - last.frame,
                        explained: hidden_or_out(last),
                    },
                });
            }
        }
    }
    events.sort_by_key(|e| (e.frame, e.object));
    events
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Scores an analysed clip against the scene its prompt asks for.
pub fn score(a: &Analysis, expected: &ExpectedScene) -> ClipScores {
    let n = a.segmentations.len();
    let scale = a.width.min(a.height) as f64 / 64.0;
    let objs = &a.objects;
    let n_e = expected.objects.len();
    let n_o = objs.len();

    let object_count = (n_e > 0).then(|| {
        let miss = if expected.count_is_exact || n_o < n_e {
            n_o.abs_diff(n_e)
        } else {
            0
        };
        (1.0 - miss as f64 / n_e as f64).max(0.0)
    });
    let m = match_objects(&expected.objects, objs);
    let attr = |f: &dyn Fn(usize, Option<&ObservedObject>) -> Option<bool>| {
        mean(
            (0..n_e)
                .filter_map(|i| f(i, m[i].map(|j| &objs[j])).map(|ok| if ok { 1.0 } else { 0.0 })),
        )
    };
    let colour = attr(&|i, o| {
        let c = expected.objects[i].colour?;
        Some(o.is_some_and(|o| o.colour == c))
    });
    let shape = attr(&|i, o| {
        let s = expected.objects[i].shape?;
        Some(o.is_some_and(|o| o.shape == Some(s)))
    });
    let position = attr(&|i, o| {
        let r = expected.objects[i].region?;
        Some(
            o.and_then(|o| o.first_position)
                .is_some_and(|(x, y)| Region::of_point(x, y, a.width as f64, a.height as f64) == r),
        )
    });
    // An expected object left without a track of its own (same-coloured objects travelling
    // together merge into one component) is judged by the same-coloured tracks that exist: the
    // merged blob moves the way its members do. Missing objects are object_count's business.
    // A still shows no motion, so it says nothing about direction either way.
    let direction = if n > 1 {
        attr(&|i, o| {
            let e = &expected.objects[i];
            match o {
                Some(o) => direction_matches(e, o),
                None => direction_matches(e, &placeholder()).map(|_| {
                    objs.iter().any(|o| {
                        e.colour.is_some_and(|c| c == o.colour)
                            && direction_matches(e, o) == Some(true)
                    })
                }),
            }
        })
    } else {
        None
    };

    let subject_consistency = mean(objs.iter().map(|o| {
        let t = &a.tracks[o.track];
        let areas: Vec<f64> = t
            .observations
            .iter()
            .filter(|x| t.is_clean(x))
            .map(|x| x.component.area as f64)
            .collect();
        let mu = mean(areas.iter().copied()).unwrap_or(0.0);
        let var = mean(areas.iter().map(|x| (x - mu) * (x - mu))).unwrap_or(0.0);
        let cv = if mu > 0.0 { var.sqrt() / mu } else { 1.0 };
        o.shape_agreement * (1.0 - cv).max(0.0)
    }));

    let first = a.background_histograms.first();
    let background_consistency = first
        .filter(|h| h.iter().sum::<f64>() > 0.0)
        .and_then(|h0| {
            mean(
                a.background_histograms
                    .iter()
                    .skip(1)
                    .map(|h| h.iter().zip(h0).map(|(x, y)| x.min(*y)).sum::<f64>()),
            )
        });

    let backdrop = backdrop_score(a, expected);

    let flicker_level = mean(a.background_change.iter().copied()).unwrap_or(0.0);
    let flicker = (n > 1).then(|| (1.0 - flicker_level / 20.0).clamp(0.0, 1.0));

    // Cubic-interpolation residual: (p[t-2] - 4p[t-1] + 6p[t] - 4p[t+1] + p[t+2]) / 6.
    let mut residuals = Vec::new();
    for o in objs {
        let pos = a.tracks[o.track].clean_positions(n);
        for win in pos.windows(5) {
            if let [Some(p0), Some(p1), Some(p2), Some(p3), Some(p4)] = *win {
                let rx = (p0.0 - 4.0 * p1.0 + 6.0 * p2.0 - 4.0 * p3.0 + p4.0) / 6.0;
                let ry = (p0.1 - 4.0 * p1.1 + 6.0 * p2.1 - 4.0 * p3.1 + p4.1) / 6.0;
                residuals.push(rx.hypot(ry) / scale);
            }
        }
    }
    let smoothness = mean(residuals.iter().map(|r| (-r).exp()));

    let dynamic_degree = mean(
        a.changed_fraction
            .iter()
            .map(|&f| if f >= 0.002 { 1.0 } else { 0.0 }),
    );

    let physics = mean(objs.iter().enumerate().filter_map(|(oi, o)| {
        let pos = a.tracks[o.track].clean_positions(n);
        let acc = accelerations(&pos);
        let samples = acc.iter().flatten().count();
        // Objects that stay put obey physics trivially; judging them would only dilute it.
        let seen: Vec<(f64, f64)> = pos.iter().flatten().copied().collect();
        let roams = seen
            .iter()
            .any(|p| (p.0 - seen[0].0).hypot(p.1 - seen[0].1) > px(scale, 2.0));
        if samples == 0 || !roams {
            return None;
        }
        let expect = m
            .iter()
            .position(|&j| j == Some(oi))
            .and_then(|i| expected.objects[i].motion);
        if expect == Some(MotionKind::Orbit) {
            return None; // centripetal acceleration turns with the object: not a steady one
        }
        let unexplained = a
            .events
            .iter()
            .filter(|e| e.object == oi && e.kind == ObservedEventKind::UnexplainedJerk)
            .count();
        let pass = 1.0 - unexplained as f64 / samples as f64;
        let steady = median2(&acc).unwrap_or((0.0, 0.0));
        let tol = px(scale, 0.05);
        let plausible = if expect == Some(MotionKind::Fall) {
            steady.1 > tol && steady.0.abs() <= 2.0 * tol
        } else {
            steady.1 >= -tol && steady.0.abs() <= 2.0 * tol
        };
        Some(if plausible { pass } else { 0.5 * pass })
    }));

    let vanish: Vec<bool> = a
        .events
        .iter()
        .filter_map(|e| match e.kind {
            ObservedEventKind::Vanished { explained, .. } => Some(explained),
            _ => None,
        })
        .collect();
    let permanence =
        (n_o > 0).then(|| mean(vanish.iter().map(|&x| if x { 1.0 } else { 0.0 })).unwrap_or(1.0));

    let mean_speed = mean(objs.iter().filter_map(|o| {
        let t = &a.tracks[o.track];
        (t.span() > 1).then(|| o.path_length / (t.span() - 1) as f64)
    }))
    .map(|px_per_frame| px_per_frame * a.fps / a.width as f64);

    ClipScores {
        object_count,
        colour,
        shape,
        direction,
        position,
        subject_consistency,
        background_consistency,
        backdrop,
        flicker,
        smoothness,
        dynamic_degree,
        physics,
        permanence,
        flicker_level,
        mean_speed,
        observed_count: n_o,
        expected_count: n_e,
    }
}

/// Backdrop colours: each band the prompt determines is compared with the world's own
/// rendering of every colour the band could have (the other band as the prompt says), and
/// counts when the prompt's colour is the nearest.
fn backdrop_score(a: &Analysis, expected: &ExpectedScene) -> Option<f64> {
    let bg = expected.parsed.background.as_ref()?;
    let kind = bg.kind?;
    let (top, bottom) = match (kind, bg.colours.as_slice()) {
        (BackgroundKind::Solid, [c, ..]) => (*c, *c),
        (_, [t, b, ..]) => (*t, *b),
        _ => return None,
    };
    let bands = |top, bottom| rendered_bands(kind, top, bottom, a.width, a.height);
    let dist =
        |x: &[f64; 3], y: &[f64; 3]| -> f64 { x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum() };
    // Which colour for the band(s) `vary` makes the rendering closest to the clip.
    let nearest = |vary: &dyn Fn(BgColour) -> (BgColour, BgColour), use_bands: &[usize]| {
        BgColour::ALL
            .iter()
            .map(|&c| {
                let (t, b) = vary(c);
                let r = bands(t, b);
                let d: f64 = use_bands.iter().map(|&i| dist(&r[i], &a.backdrop[i])).sum();
                (c, d)
            })
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(c, _)| c)
    };
    Some(if kind == BackgroundKind::Solid {
        f64::from(u8::from(nearest(&|c| (c, c), &[0, 1]) == Some(top)))
    } else {
        let t_ok = nearest(&|c| (c, bottom), &[0]) == Some(top);
        let b_ok = nearest(&|c| (top, c), &[1]) == Some(bottom);
        (f64::from(u8::from(t_ok)) + f64::from(u8::from(b_ok))) / 2.0
    })
}

/// [`backdrop_bands`] of the world's own rendering of a backdrop at `w × h`. The same for every
/// clip scored at one size, and most of the cost of [`score`] (a report's chance level scores
/// each clip against every other caption), so each is rendered once per process.
fn rendered_bands(
    kind: BackgroundKind,
    top: BgColour,
    bottom: BgColour,
    w: u32,
    h: u32,
) -> [[f64; 3]; 2] {
    type Key = (BackgroundKind, BgColour, BgColour, u32, u32);
    static CACHE: OnceLock<Mutex<HashMap<Key, [[f64; 3]; 2]>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (kind, top, bottom, w, h);
    if let Some(b) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return *b;
    }
    let mut frame = Vec::new();
    let bg = Background { kind, top, bottom };
    Renderer::new(w, h).render(&bg, 0.0, &[], &mut frame);
    let b = backdrop_bands(std::slice::from_ref(&frame), None, w as usize, h as usize);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, b);
    b
}

/// An object that was never seen, for asking whether a prompt states a direction at all.
fn placeholder() -> ObservedObject {
    ObservedObject {
        track: 0,
        colour: Colour::Red,
        shape: None,
        size: None,
        direction: None,
        initial_velocity: None,
        first_position: None,
        path_length: 0.0,
        max_descent: 0.0,
        shape_agreement: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 48×32 grey backdrop of smooth vertical stripes (period 40 px) moved `shift` px right.
    fn stripes(shift: f64) -> Vec<u8> {
        let (w, h) = (48, 32);
        let mut f = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let phase = (x as f64 + 0.5 - shift) / 40.0 * std::f64::consts::TAU;
                let v = (128.0 + 60.0 * phase.sin()).round() as u8;
                f[3 * (y * w + x)..3 * (y * w + x) + 3].copy_from_slice(&[v, v, v]);
            }
        }
        f
    }

    #[test]
    fn pan_shift_is_measured_to_a_fraction_of_a_pixel() {
        let none = vec![false; 48 * 32];
        for shift in [-5.0, -2.5, 0.0, 1.25, 3.0] {
            let got = horizontal_shift(&stripes(0.0), &stripes(shift), &none, &none, 48, 32);
            assert!((got - shift).abs() < 0.25, "{shift} → {got}");
        }
        // A flat backdrop gives nothing to follow.
        let flat = vec![100u8; 48 * 32 * 3];
        assert_eq!(horizontal_shift(&flat, &flat, &none, &none, 48, 32), 0.0);
    }

    #[test]
    fn a_still_frame_repeated_is_static_and_flicker_free() {
        let frame = stripes(0.0);
        let video = Video {
            width: 48,
            height: 32,
            fps: 16.0,
            frames: vec![frame; 5],
        };
        let a = analyze(&video, "still", &AnalysisParams::default()).expect("analysis");
        let s = score(&a, &ExpectedScene::from_prompt("a plain backdrop"));
        assert_eq!(s.dynamic_degree, Some(0.0));
        assert_eq!(s.flicker, Some(1.0));
        assert_eq!(s.background_consistency, Some(1.0));
        assert_eq!((s.observed_count, s.object_count), (0, None));
        assert!(a.pan.abs() < 0.05, "{}", a.pan);
    }

    #[test]
    fn empty_and_malformed_videos_are_typed_errors() {
        let mut v = Video::new(8, 8, 16.0);
        assert!(matches!(
            analyze(&v, "e", &AnalysisParams::default()),
            Err(EvalError::EmptyVideo { .. })
        ));
        v.frames.push(vec![0; 10]);
        assert!(matches!(
            analyze(&v, "m", &AnalysisParams::default()),
            Err(EvalError::BadFrame {
                frame: 0,
                expected: 192,
                got: 10,
                ..
            })
        ));
    }
}
