//! The metrics themselves are tested: real shapes-world clips score at the top on prompt
//! following, and each corruption lowers the metric that should catch it.
//!
//! Run with `cargo test --release -p tessera-eval --test validation -- --nocapture` to see the
//! numbers.

use tessera_eval::metrics::{analyze, score, AnalysisParams, ClipScores};
use tessera_eval::scene::{classify_shape, ExpectedScene};
use tessera_eval::{eval_clips, eval_clips_with, eval_videos, EvalOptions, Report, VideoSource};
use tessera_media::Video;
use tessera_world::caption::{Camera, Colour, MotionKind};
use tessera_world::{generate_clip, Clip, SampleOptions, Split};

fn clips(count: u64, seed: u64) -> Vec<Clip> {
    let opts = SampleOptions {
        seed,
        ..SampleOptions::default()
    };
    (0..count)
        .map(|i| generate_clip(&opts, i).expect("world clip"))
        .collect()
}

fn scores(video: &Video, caption: &str) -> ClipScores {
    let a = analyze(video, "test", &AnalysisParams::default()).expect("analysis");
    score(&a, &ExpectedScene::from_prompt(caption))
}

fn mean(v: impl IntoIterator<Item = Option<f64>>) -> f64 {
    let v: Vec<f64> = v.into_iter().flatten().collect();
    assert!(!v.is_empty(), "no clip defines this metric");
    v.iter().sum::<f64>() / v.len() as f64
}

fn report_for(pairs: Vec<(Video, String)>) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    eval_clips(&pairs, dir.path()).expect("report")
}

fn moving(c: &Clip) -> bool {
    c.scene
        .objects
        .iter()
        .any(|o| !matches!(o.motion.kind(), MotionKind::Still | MotionKind::Spin))
}

/// Palette colour nearest `px` within the segmentation tolerance.
fn palette_of(px: &[u8]) -> Option<Colour> {
    let (c, d2) = Colour::nearest([px[0], px[1], px[2]]);
    (d2 <= 60 * 60).then_some(c)
}

#[test]
fn real_clips_follow_their_prompts() {
    let real = clips(24, 11);
    let report = report_for(
        real.iter()
            .map(|c| (c.video.clone(), c.caption.clone()))
            .collect(),
    );
    println!("real world clips:\n{}", report.summary_table());
    for m in ["object_count", "colour", "shape", "direction", "backdrop"] {
        let v = report.mean(m).expect(m);
        assert!(v >= 0.95, "{m} = {v:.3} on real clips");
    }
    let four: f64 = ["object_count", "colour", "shape", "direction"]
        .iter()
        .map(|m| report.mean(m).unwrap())
        .sum();
    let pf = report.prompt_following().unwrap();
    assert!((pf - four / 4.0).abs() < 1e-12 && pf >= 0.95, "{pf}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// The backdrop metric reads colours, not captions: the same clips scored against a caption
/// whose backdrop colours are all swapped for others score (near) zero, and a blur that leaves
/// no object recognisable keeps the backdrop right.
#[test]
fn backdrop_follows_the_pixels() {
    use tessera_world::caption::BgColour;
    let names: Vec<&str> = BgColour::ALL.iter().map(|c| c.name()).collect();
    let swap = |caption: &str| -> String {
        caption
            .split(' ')
            .map(|w| {
                let (word, tail) = w.split_at(w.trim_end_matches('.').len());
                match names.iter().position(|n| *n == word) {
                    Some(i) => format!("{}{tail}", names[(i + 1) % names.len()]),
                    None => w.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let real = clips(12, 3);
    let right = mean(real.iter().map(|c| scores(&c.video, &c.caption).backdrop));
    let wrong = mean(
        real.iter()
            .map(|c| scores(&c.video, &swap(&c.caption)).backdrop),
    );
    let blurred = mean(real.iter().map(|c| {
        let mut v = c.video.clone();
        for f in &mut v.frames {
            *f = box_blur(f, v.width as usize, v.height as usize, 4);
        }
        scores(&v, &c.caption).backdrop
    }));
    println!("backdrop: right {right:.3}, swapped colours {wrong:.3}, blurred {blurred:.3}");
    assert!(
        right >= 0.95 && blurred >= 0.9,
        "right {right}, blurred {blurred}"
    );
    assert!(wrong <= 0.1, "swapped colours still score {wrong}");
}

/// Mean over a `(2r+1)²` window, clamped at the borders: a stand-in for a soft decoder.
fn box_blur(f: &[u8], w: usize, h: usize, r: usize) -> Vec<u8> {
    let mut out = vec![0u8; f.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0u32; 3];
            let mut n = 0;
            for yy in y.saturating_sub(r)..(y + r + 1).min(h) {
                for xx in x.saturating_sub(r)..(x + r + 1).min(w) {
                    for c in 0..3 {
                        acc[c] += u32::from(f[(yy * w + xx) * 3 + c]);
                    }
                    n += 1;
                }
            }
            for c in 0..3 {
                out[(y * w + x) * 3 + c] = (acc[c] / n) as u8;
            }
        }
    }
    out
}

/// A larger held-out sample (48 `val` clips): objects that bounce off a wall in their first
/// frames, start grazing a wall, or move over a plain backdrop must still have their heading
/// read as the prompt states it.
#[test]
fn real_val_clips_follow_their_prompts() {
    let opts = SampleOptions {
        seed: 5,
        split: Split::Val,
        ..SampleOptions::default()
    };
    let pairs: Vec<(Video, String)> = (0..48)
        .map(|i| generate_clip(&opts, i).expect("world clip"))
        .map(|c| (c.video, c.caption))
        .collect();
    let report = report_for(pairs);
    println!("48 val clips:\n{}", report.summary_table());
    for m in ["object_count", "colour", "shape", "direction"] {
        let v = report.mean(m).expect(m);
        assert!(v >= 0.95, "{m} = {v:.3} on 48 val clips");
    }
}

#[test]
fn shape_classifier_accuracy_on_ground_truth() {
    // Every sighting of an unoccluded, fully visible object is classified and compared with the
    // world's ground truth (object found by colour and nearest centre).
    let (mut right, mut total) = (0usize, 0usize);
    let mut per_object = (0usize, 0usize);
    for clip in clips(40, 5) {
        let a = analyze(&clip.video, &clip.id, &AnalysisParams::default()).expect("analysis");
        for (t, seg) in a.segmentations.iter().enumerate() {
            for comp in seg.components.iter().filter(|c| !c.touches_border) {
                let colour = Colour::ALL[comp.colour];
                let gt = clip
                    .objects
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.colour == colour)
                    .min_by(|(i, _), (j, _)| {
                        let d = |k: usize| {
                            let p = &clip.tracks[t][k];
                            (p.x - comp.centroid.0).hypot(p.y - comp.centroid.1)
                        };
                        d(*i).total_cmp(&d(*j))
                    });
                let Some((k, obj)) = gt else { continue };
                if clip.tracks[t][k].visible < 0.999 {
                    continue;
                }
                total += 1;
                right += (classify_shape(&comp.features) == obj.shape) as usize;
            }
        }
        // Per tracked object: the ground-truth object of its colour nearest its first sighting.
        for o in &a.objects {
            let first = &a.tracks[o.track].observations[0];
            let (t, c) = (first.frame, first.component.centroid);
            let truth = clip
                .objects
                .iter()
                .enumerate()
                .filter(|(_, x)| x.colour == o.colour)
                .min_by(|(i, _), (j, _)| {
                    let d = |k: usize| (clip.tracks[t][k].x - c.0).hypot(clip.tracks[t][k].y - c.1);
                    d(*i).total_cmp(&d(*j))
                });
            if let (Some((_, truth)), Some(shape)) = (truth, o.shape) {
                per_object.1 += 1;
                per_object.0 += (truth.shape == shape) as usize;
            }
        }
    }
    let frame_acc = right as f64 / total as f64;
    let object_acc = per_object.0 as f64 / per_object.1 as f64;
    println!(
        "shape classifier: {right}/{total} sightings = {frame_acc:.3}; \
         {}/{} tracked objects = {object_acc:.3}",
        per_object.0, per_object.1
    );
    assert!(frame_acc >= 0.9, "{frame_acc}");
    assert!(object_acc >= 0.95, "{object_acc}");
}

#[test]
fn shuffled_frames_lower_smoothness_and_physics() {
    let real: Vec<Clip> = clips(30, 21).into_iter().filter(moving).take(12).collect();
    let (mut s_real, mut s_shuf, mut p_real, mut p_shuf) = (vec![], vec![], vec![], vec![]);
    for c in &real {
        let n = c.video.frames.len();
        let mut shuffled = c.video.clone();
        // A fixed permutation: stride 7 through the frames (coprime with 33).
        shuffled.frames = (0..n)
            .map(|i| c.video.frames[(i * 7) % n].clone())
            .collect();
        let r = scores(&c.video, &c.caption);
        let s = scores(&shuffled, &c.caption);
        s_real.push(r.smoothness);
        s_shuf.push(s.smoothness);
        p_real.push(r.physics);
        p_shuf.push(s.physics);
    }
    let (sr, ss, pr, ps) = (mean(s_real), mean(s_shuf), mean(p_real), mean(p_shuf));
    println!("smoothness real {sr:.3} shuffled {ss:.3}; physics real {pr:.3} shuffled {ps:.3}");
    assert!(sr >= 0.8 && ss <= sr - 0.3, "smoothness {sr} vs {ss}");
    assert!(pr >= 0.8 && ps <= pr - 0.3, "physics {pr} vs {ps}");
}

#[test]
fn swapped_colours_lower_colour_accuracy() {
    let real = clips(16, 31);
    let (mut r, mut s) = (vec![], vec![]);
    for c in &real {
        let mut v = c.video.clone();
        // Each palette colour becomes the next one; the anti-aliased blend shifts with it.
        for f in v.frames.iter_mut() {
            for px in f.chunks_exact_mut(3) {
                if let Some(col) = palette_of(px) {
                    let i = Colour::ALL.iter().position(|&x| x == col).unwrap_or(0);
                    let to = Colour::ALL[(i + 1) % Colour::ALL.len()].rgb();
                    let from = col.rgb();
                    for k in 0..3 {
                        px[k] = (px[k] as i32 + to[k] as i32 - from[k] as i32).clamp(0, 255) as u8;
                    }
                }
            }
        }
        r.push(scores(&c.video, &c.caption).colour);
        s.push(scores(&v, &c.caption).colour);
    }
    let (r, s) = (mean(r), mean(s));
    println!("colour accuracy real {r:.3} swapped {s:.3}");
    assert!(r >= 0.95 && s <= 0.3, "{r} vs {s}");
}

#[test]
fn frozen_video_has_no_dynamics() {
    let real: Vec<Clip> = clips(20, 41).into_iter().filter(moving).take(8).collect();
    let (mut r, mut f) = (vec![], vec![]);
    for c in &real {
        let mut frozen = c.video.clone();
        let first = frozen.frames[0].clone();
        frozen.frames.iter_mut().for_each(|x| *x = first.clone());
        r.push(scores(&c.video, &c.caption).dynamic_degree);
        f.push(scores(&frozen, &c.caption).dynamic_degree);
    }
    let (r, f) = (mean(r), mean(f));
    println!("dynamic degree real {r:.3} frozen {f:.3}");
    assert!(r >= 0.8 && f == 0.0, "{r} vs {f}");
}

/// Paints `colour` out of every frame from `from` on, using each pixel's value in the latest
/// earlier frame where it showed no object (so the backdrop shows through).
fn remove_object(video: &Video, colour: Colour, from: usize) -> Video {
    let mut v = video.clone();
    let w = v.width as usize;
    let h = v.height as usize;
    let is_obj = |f: &[u8], i: usize| palette_of(&f[3 * i..3 * i + 3]).is_some();
    let mut backdrop = v.frames[0].clone();
    for t in 0..v.frames.len() {
        let f = v.frames[t].clone();
        for i in 0..w * h {
            if !is_obj(&f, i) {
                backdrop[3 * i..3 * i + 3].copy_from_slice(&f[3 * i..3 * i + 3]);
            }
        }
        if t < from {
            continue;
        }
        let frame = &mut v.frames[t];
        for y in 0..h {
            for x in 0..w {
                // The object and a two-pixel rim, so no anti-aliased outline survives.
                let near = (y.saturating_sub(2)..(y + 3).min(h)).any(|yy| {
                    (x.saturating_sub(2)..(x + 3).min(w)).any(|xx| {
                        palette_of(&f[3 * (yy * w + xx)..3 * (yy * w + xx) + 3]) == Some(colour)
                    })
                });
                if near {
                    let i = y * w + x;
                    frame[3 * i..3 * i + 3].copy_from_slice(&backdrop[3 * i..3 * i + 3]);
                }
            }
        }
    }
    v
}

#[test]
fn object_removed_mid_clip_breaks_permanence() {
    // Single moving objects of a unique colour, still camera: remove them half-way.
    let picked: Vec<Clip> = clips(60, 51)
        .into_iter()
        .filter(|c| c.scene.camera == Camera::Still && moving(c))
        .take(8)
        .collect();
    assert!(picked.len() >= 4);
    let (mut r, mut k) = (vec![], vec![]);
    for c in &picked {
        let Some(obj) = c.scene.objects.iter().find(|o| {
            o.count == 1
                && o.motion.kind() != MotionKind::Still
                && c.objects.iter().filter(|x| x.colour == o.colour).count() == 1
        }) else {
            continue;
        };
        let n = c.video.frames.len();
        let removed = remove_object(&c.video, obj.colour, n / 2);
        r.push(scores(&c.video, &c.caption).permanence);
        k.push(scores(&removed, &c.caption).permanence);
    }
    let (r, k) = (mean(r), mean(k));
    println!("permanence real {r:.3} object removed {k:.3}");
    assert!(r >= 0.9 && k <= r - 0.3, "{r} vs {k}");
}

#[test]
fn wrong_caption_lowers_prompt_following() {
    let real = clips(16, 61);
    let n = real.len();
    let right = report_for(
        real.iter()
            .map(|c| (c.video.clone(), c.caption.clone()))
            .collect(),
    );
    let wrong = report_for(
        (0..n)
            .map(|i| (real[i].video.clone(), real[(i + 1) % n].caption.clone()))
            .collect(),
    );
    println!("right captions:\n{}", right.summary_table());
    println!("wrong captions:\n{}", wrong.summary_table());
    for m in ["colour", "shape"] {
        let (a, b) = (right.mean(m).unwrap_or(0.0), wrong.mean(m).unwrap_or(1.0));
        assert!(b <= a - 0.4, "{m}: right {a} wrong {b}");
    }
    let follow = |r: &Report| {
        ["object_count", "colour", "shape", "direction"]
            .iter()
            .filter_map(|m| r.mean(m))
            .sum::<f64>()
            / 4.0
    };
    assert!(follow(&wrong) <= follow(&right) - 0.3);

    // The report's own chance column is this experiment over every other caption: each clip
    // against the caption k clips on, for every k, pooled.
    let distinct: std::collections::HashSet<_> = real.iter().map(|c| &c.caption).collect();
    assert_eq!(distinct.len(), n, "the test needs distinct captions");
    let shifted: Vec<Report> = (2..n)
        .map(|k| {
            report_for(
                (0..n)
                    .map(|i| (real[i].video.clone(), real[(i + k) % n].caption.clone()))
                    .collect(),
            )
        })
        .chain([wrong.clone()])
        .collect();
    let chance = |r: &Report, m: &str| r.summary.iter().find(|s| s.metric == m).unwrap().chance;
    for m in tessera_eval::CAPTION_METRICS {
        let (sum, count) = shifted
            .iter()
            .filter_map(|r| r.summary.iter().find(|s| s.metric == *m))
            .filter_map(|s| Some((s.mean? * s.clips as f64, s.clips)))
            .fold((0.0, 0), |(a, b), (x, c)| (a + x, b + c));
        let (c, w) = (chance(&right, m), (count > 0).then(|| sum / count as f64));
        assert!(
            c.zip(w).is_some_and(|(c, w)| (c - w).abs() < 1e-12),
            "{m}: chance {c:?} vs pooled wrong-caption mean {w:?}"
        );
    }
    assert_eq!(chance(&right, "flicker"), None);
    let (lift_right, lift_wrong) = (
        right.prompt_following_lift().unwrap(),
        wrong.prompt_following_lift().unwrap(),
    );
    assert!(
        lift_right >= 0.3 && lift_wrong < lift_right - 0.3,
        "lift {lift_right} with the right captions, {lift_wrong} with the wrong ones"
    );
    // The table prints the same lift.
    assert!(right.summary_table().contains(&format!(
        "prompt following above chance (object_count, colour, shape, direction, averaged): \
         {lift_right:.3}"
    )));
    // One caption for every clip: no other caption to score against.
    let same = report_for(
        real.iter()
            .take(3)
            .map(|c| (c.video.clone(), real[0].caption.clone()))
            .collect(),
    );
    assert_eq!(chance(&same, "colour"), None);
    assert_eq!(same.prompt_following_lift(), None);
    assert!(!same.summary_table().contains("above chance"));
}

#[test]
fn added_flicker_lowers_flicker_score() {
    let real = clips(12, 71);
    let (mut r, mut f) = (vec![], vec![]);
    for c in &real {
        let mut v = c.video.clone();
        for (t, frame) in v.frames.iter_mut().enumerate() {
            let d: i32 = if t % 2 == 0 { 12 } else { -12 };
            frame
                .iter_mut()
                .for_each(|p| *p = (*p as i32 + d).clamp(0, 255) as u8);
        }
        r.push(scores(&c.video, &c.caption).flicker);
        f.push(scores(&v, &c.caption).flicker);
    }
    let (r, f) = (mean(r), mean(f));
    println!("flicker score real {r:.3} with flicker {f:.3}");
    assert!(r >= 0.9 && f <= r - 0.4, "{r} vs {f}");
}

#[test]
fn fvd_separates_real_from_corrupted() {
    let opts = EvalOptions::default();
    let a: Vec<Video> = clips(24, 81).into_iter().map(|c| c.video).collect();
    let b = clips(24, 82);
    let dir = tempfile::tempdir().expect("temp dir");
    let same = eval_clips_with(
        &b.iter()
            .map(|c| (c.video.clone(), c.caption.clone()))
            .collect::<Vec<_>>(),
        &a,
        dir.path(),
        &opts,
    )
    .expect("report");
    let frozen: Vec<(Video, String)> = b
        .iter()
        .map(|c| {
            let mut v = c.video.clone();
            let n = v.frames.len();
            v.frames = (0..n)
                .map(|i| c.video.frames[(i * 7) % n].clone())
                .collect();
            (v, c.caption.clone())
        })
        .collect();
    let shuffled = eval_clips_with(&frozen, &a, dir.path(), &opts).expect("report");
    let (d_same, d_bad) = (
        same.fvd.unwrap_or(f64::NAN),
        shuffled.fvd.unwrap_or(f64::NAN),
    );
    println!("fvd real vs real {d_same:.3}; real vs shuffled {d_bad:.3}");
    assert!(d_bad > 2.0 * d_same, "{d_same} vs {d_bad}");
}

#[test]
fn one_clip_of_jumping_blobs_does_not_swamp_the_fvd() {
    let opts = EvalOptions::default();
    let a: Vec<Video> = clips(24, 81).into_iter().map(|c| c.video).collect();
    let b: Vec<(Video, String)> = clips(24, 82)
        .into_iter()
        .map(|c| (c.video, c.caption))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = eval_clips_with(&b, &a, dir.path(), &opts).expect("report");
    // Every other frame mirrored: each object jumps across the frame and back, as a track
    // matched between unrelated speckles of a half-trained model does.
    let mut jumpy = b.clone();
    let v = &mut jumpy[0].0;
    let (w, row) = (v.width as usize, 3 * v.width as usize);
    for frame in v.frames.iter_mut().skip(1).step_by(2) {
        let src = frame.clone();
        for (dst, s) in frame.chunks_exact_mut(row).zip(src.chunks_exact(row)) {
            for x in 0..w {
                dst[3 * x..3 * x + 3].copy_from_slice(&s[3 * (w - 1 - x)..3 * (w - 1 - x) + 3]);
            }
        }
    }
    let with = eval_clips_with(&jumpy, &a, dir.path(), &opts).expect("report");
    let (d, dj) = (base.fvd.unwrap_or(f64::NAN), with.fvd.unwrap_or(f64::NAN));
    println!("fvd {d:.3}; with one jumping clip {dj:.3}");
    // Uncapped, this one clip of 24 moved the distance from 0.8 to 180.
    assert!((dj - d).abs() < 3.0, "{d} vs {dj}");
}

#[test]
fn folder_with_bad_inputs_is_scored_without_aborting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let videos = dir.path().join("videos");
    std::fs::create_dir_all(&videos).expect("mkdir");
    let cs = clips(2, 91);
    tessera_media::write_video(videos.join("a.mp4"), &cs[0].video).expect("write a");
    // A clip at another size and frame rate is resampled, not rejected.
    let big = tessera_media::fit(&cs[1].video, 96, 96, 24.0).expect("fit");
    tessera_media::write_video(videos.join("b.mp4"), &big).expect("write b");
    std::fs::write(videos.join("broken.mp4"), b"this is not a video").expect("write broken");
    let captions = dir.path().join("captions.jsonl");
    let lines = [
        serde_json::json!({"video": "a.mp4", "caption": cs[0].caption}),
        serde_json::json!({"video": "b.mp4", "caption": format!("{} shimmering wonderfully", cs[1].caption)}),
        serde_json::json!({"video": "broken.mp4", "caption": "a red circle"}),
        serde_json::json!({"video": "missing.mp4", "caption": "a blue square"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&captions, text).expect("write captions");
    let out = dir.path().join("report");
    let report = eval_videos(
        &VideoSource::Dir(videos.clone()),
        &captions,
        &out,
        &EvalOptions::default(),
    )
    .expect("report");
    println!("{}", report.summary_table());
    assert_eq!(report.clips.len(), 2);
    let names: Vec<&str> = report.errors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["broken.mp4", "missing.mp4"]);
    let b = &report.clips[1];
    assert_eq!(b.unknown_words, ["shimmering", "wonderfully"]);
    assert!(b.scores.colour.is_some_and(|c| c >= 0.99), "{:?}", b.scores);
    assert!(out.join("report.json").is_file() && out.join("report.html").is_file());
    let html = std::fs::read_to_string(out.join("report.html")).expect("html");
    assert!(html.contains("strips/0000.png") && out.join("strips/0000.png").is_file());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("json"))
            .expect("valid json");
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(2));

    // The reference may be a shapes-world folder (its clips under videos/); too few is an error.
    let reference = |dir: &std::path::Path| EvalOptions {
        reference_dir: Some(dir.to_path_buf()),
        ..EvalOptions::default()
    };
    let source = VideoSource::Dir(videos);
    let report = eval_videos(&source, &captions, &out, &reference(dir.path())).expect("report");
    assert!(report.fvd.is_some_and(f64::is_finite));
    let empty = tempfile::tempdir().expect("temp dir");
    let err = eval_videos(&source, &captions, &out, &reference(empty.path()));
    assert!(matches!(
        err,
        Err(tessera_eval::EvalError::FewReferenceClips { found: 0, .. })
    ));

    // A malformed captions line is a typed error naming the line.
    std::fs::write(
        &captions,
        "{\"video\": \"a.mp4\", \"caption\": \"x\"}\nnot json\n",
    )
    .expect("write");
    let err = eval_videos(
        &VideoSource::Dir(dir.path().join("videos")),
        &captions,
        &out,
        &EvalOptions::default(),
    );
    assert!(matches!(
        err,
        Err(tessera_eval::EvalError::CaptionsLine { line: 2, .. })
    ));
}

/// Position reads where objects are: real clips start where their captions say; mirrored left
/// to right, the objects placed in a side column start in the other one.
#[test]
fn mirrored_frames_lower_position_accuracy() {
    let real = clips(24, 51);
    let (mut r, mut m) = (vec![], vec![]);
    for c in &real {
        let (w, h) = (c.video.width as usize, c.video.height as usize);
        let mut mirrored = c.video.clone();
        for f in mirrored.frames.iter_mut() {
            for row in f.chunks_exact_mut(3 * w).take(h) {
                let flipped: Vec<u8> = row.chunks_exact(3).rev().flatten().copied().collect();
                row.copy_from_slice(&flipped);
            }
        }
        r.push(scores(&c.video, &c.caption).position);
        m.push(scores(&mirrored, &c.caption).position);
    }
    let (r, m) = (mean(r), mean(m));
    println!("position accuracy real {r:.3} mirrored {m:.3}");
    assert!(r >= 0.9 && m <= r - 0.3, "{r} vs {m}");
}
