//! Captions against ground truth, determinism, splits and the dataset writer.

use std::collections::BTreeMap;

use tessera_world::caption::{
    parse_prompt, BackgroundKind, Camera, EventKind, Motion, MotionKind, ParsedEvent, Wall,
};
use tessera_world::{
    generate_clip, is_held_out, sample_dataset, sample_scene, Clip, SampleOptions, Selection,
    Split, WorldError,
};

fn opts(split: Split, seed: u64) -> SampleOptions {
    SampleOptions {
        split,
        seed,
        ..Default::default()
    }
}

/// The first `n` clips of train seed 7, generated once per test.
fn clips(n: u64) -> Vec<Clip> {
    (0..n)
        .map(|i| generate_clip(&opts(Split::Train, 7), i).expect("valid options"))
        .collect()
}

/// The motion of flat object `object`.
fn motion_of(clip: &Clip, object: usize) -> Motion {
    let g = clip.objects[object].group;
    clip.scene.objects[g].motion
}

fn first_event_frame(clip: &Clip, object: usize) -> Option<u32> {
    clip.events()
        .iter()
        .filter(|e| e.object == object)
        .map(|e| e.frame)
        .min()
}

#[test]
fn same_seed_same_clip_and_splits_differ() {
    let a = generate_clip(&opts(Split::Train, 3), 5).expect("clip");
    let b = generate_clip(&opts(Split::Train, 3), 5).expect("clip");
    assert_eq!(a.video, b.video);
    assert_eq!(a.caption, b.caption);
    assert_eq!(a.tracks, b.tracks);
    assert_eq!(a.scene, b.scene);
    let c = generate_clip(&opts(Split::Val, 3), 5).expect("clip");
    let d = generate_clip(&opts(Split::Train, 3), 6).expect("clip");
    assert_ne!(a.video, c.video);
    assert_ne!(a.video, d.video);
    assert_eq!(a.id, "train-3-000005");
}

#[test]
fn a_selection_keeps_exactly_the_scenes_it_names() {
    let o = SampleOptions {
        count: 5,
        ..opts(Split::Train, 0)
    };
    let one = Selection {
        start: 40,
        objects: Some(1),
        ..Selection::default()
    };
    let kept = one.indices(&o).expect("indices");
    assert_eq!(kept.len(), 5);
    // Every index from `start` to the last kept one is in the set exactly when its scene has
    // one object: nothing skipped, nothing else let in.
    for index in 40..=kept[4] {
        let objects = sample_scene(&o, index).expect("scene").object_count();
        assert_eq!(kept.contains(&index), objects == 1, "index {index}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    sample_dataset(&SampleOptions { count: 2, ..o }, &one, dir.path(), |_| {}).expect("sample");
    let captions = std::fs::read_to_string(dir.path().join("captions.jsonl")).expect("captions");
    for (line, &index) in captions.lines().zip(&kept) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let clip = generate_clip(&o, index).expect("clip");
        assert_eq!(v["index"].as_u64(), Some(index));
        assert_eq!(
            (v["id"].as_str(), v["caption"].as_str()),
            (Some(&*clip.id), Some(&*clip.caption))
        );
    }
    assert_eq!(captions.lines().count(), 2);
    let plain = Selection {
        start: 7,
        ..Selection::default()
    };
    assert_eq!(plain.indices(&o).expect("indices"), vec![7, 8, 9, 10, 11]);
    // `heading`: exactly the scenes whose every object moves in a line or bounces.
    let headed = Selection {
        start: 3,
        objects: Some(2),
        heading: true,
    };
    let kept = headed.indices(&o).expect("indices");
    assert_eq!(kept.len(), 5);
    for index in 3..=kept[4] {
        let scene = sample_scene(&o, index).expect("scene");
        let moving = scene.objects.iter().all(|g| g.motion.direction().is_some());
        assert_eq!(
            kept.contains(&index),
            scene.object_count() == 2 && moving,
            "index {index}"
        );
    }
    for objects in [0, 5] {
        let bad = Selection {
            start: 0,
            objects: Some(objects),
            heading: true,
        };
        assert!(matches!(bad.indices(&o), Err(WorldError::Objects { objects: n }) if n == objects));
    }
}

#[test]
fn dataset_files_are_byte_identical_across_runs() {
    let o = SampleOptions {
        count: 6,
        ..opts(Split::Val, 11)
    };
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let s1 = sample_dataset(&o, &Selection::default(), d1.path(), |n| {
        progress.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    })
    .expect("sample");
    sample_dataset(&o, &Selection::default(), d2.path(), |_| {}).expect("sample");
    assert_eq!(progress.into_inner(), 6);
    assert_eq!((s1.clips, s1.frames), (6, 6 * 33));
    let read = |d: &tempfile::TempDir, rel: &str| std::fs::read(d.path().join(rel)).expect(rel);
    let captions = String::from_utf8(read(&d1, "captions.jsonl")).expect("utf8");
    assert_eq!(captions.lines().count(), 6);
    assert_eq!(read(&d1, "captions.jsonl"), read(&d2, "captions.jsonl"));
    assert_eq!(read(&d1, "tracks.jsonl"), read(&d2, "tracks.jsonl"));
    // Written through temp files, but left as ordinary files (not the temp files' 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |rel: &str| {
            let meta = std::fs::metadata(d1.path().join(rel)).expect(rel);
            meta.permissions().mode() & 0o777
        };
        assert_eq!(mode("captions.jsonl"), 0o644);
        assert_eq!(mode("tracks.jsonl"), 0o644);
    }
    for line in captions.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let video = v["video"].as_str().expect("video field");
        assert!(video.starts_with("videos/") && video.ends_with(".mp4"));
        assert_eq!(read(&d1, video), read(&d2, video), "{video}");
        assert!(v["caption"].as_str().is_some_and(|c| c.len() > 20));
        assert!(v["short_caption"].as_str().is_some());
        assert_eq!(v["split"], "val");
        assert_eq!(
            (v["width"].as_u64(), v["frames"].as_u64()),
            (Some(64), Some(33))
        );
        // The MP4 decodes back to the rendered clip.
        let decoded = tessera_media::read_video(d1.path().join(video)).expect("decode");
        let index = v["index"].as_u64().expect("index");
        let clip = generate_clip(&o, index).expect("clip");
        assert_eq!(decoded.frames.len(), 33);
        let psnr = tessera_media::psnr(&clip.video, &decoded).expect("psnr");
        assert!(psnr > 30.0, "{video}: {psnr:.1} dB");
    }
    // Nothing but the outputs (no temporary files) is left behind.
    let mut names: Vec<String> = std::fs::read_dir(d1.path().join("videos"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6);
    assert!(names.iter().all(|n| n.ends_with(".mp4")));
}

#[test]
fn dense_captions_parse_back_to_the_scene() {
    let mut checked_events = 0;
    for split in [Split::Train, Split::Test] {
        for clip in (0..120).map(|i| generate_clip(&opts(split, 1), i).expect("clip")) {
            let p = parse_prompt(&clip.caption);
            let scene = &clip.scene;
            assert!(
                p.unknown_words.is_empty(),
                "{}: {:?}",
                clip.caption,
                p.unknown_words
            );
            assert_eq!(p.objects.len(), scene.objects.len(), "{}", clip.caption);
            for (got, want) in p.objects.iter().zip(&scene.objects) {
                let ctx = &clip.caption;
                assert_eq!(got.count, Some(want.count), "{ctx}");
                assert_eq!(got.colour, Some(want.colour), "{ctx}");
                assert_eq!(got.shape, Some(want.shape), "{ctx}");
                assert_eq!(got.size, Some(want.size), "{ctx}");
                assert_eq!(got.motion, Some(want.motion.kind()), "{ctx}");
                assert_eq!(got.direction, want.motion.direction(), "{ctx}");
                assert_eq!(got.turn, want.motion.turn(), "{ctx}");
                assert_eq!(got.speed, want.motion.speed(), "{ctx}");
                assert_eq!(got.region, want.region, "{ctx}");
            }
            let bg = p.background.clone().unwrap_or_default();
            assert_eq!(bg.kind, Some(scene.background.kind), "{}", clip.caption);
            let mut colours = vec![scene.background.top];
            if scene.background.kind != BackgroundKind::Solid {
                colours.push(scene.background.bottom);
            }
            assert_eq!(bg.colours, colours);
            let camera = match scene.camera {
                Camera::Still => None,
                pan => Some(pan),
            };
            assert_eq!(p.camera, camera, "{}", clip.caption);

            // Events: the same (group, kind, other group) sequence, collisions told once.
            let group = |i: usize| scene.group_of(i).expect("object index");
            let mut want = Vec::new();
            for object in 0..scene.object_count() {
                for e in scene.events.iter().filter(|e| e.object == object) {
                    let tag = match e.kind {
                        EventKind::Wall { wall } => (0, wall as usize),
                        EventKind::Collides { other } if other < object => continue,
                        EventKind::Collides { other } => (1, group(other)),
                        EventKind::PassesBehind { other } => (2, group(other)),
                        EventKind::Reappears { .. } => (3, 0),
                    };
                    want.push((group(object), tag));
                }
            }
            let got: Vec<(usize, (usize, usize))> = p
                .events
                .iter()
                .map(|e| match *e {
                    ParsedEvent::Wall { object, wall } => (object, (0, wall as usize)),
                    ParsedEvent::Collides { object, other } => (object, (1, other.unwrap_or(99))),
                    ParsedEvent::PassesBehind { object, other } => {
                        (object, (2, other.unwrap_or(99)))
                    }
                    ParsedEvent::Reappears { object } => (object, (3, 0)),
                })
                .collect();
            assert_eq!(got, want, "{}", clip.caption);
            checked_events += want.len();
        }
    }
    assert!(checked_events > 100, "only {checked_events} events checked");
}

#[test]
fn short_captions_parse_back() {
    for clip in clips(60) {
        let p = parse_prompt(&clip.short_caption);
        assert!(p.unknown_words.is_empty(), "{:?}", p.unknown_words);
        assert_eq!(
            p.objects.len(),
            clip.scene.objects.len(),
            "{}",
            clip.short_caption
        );
        for (got, want) in p.objects.iter().zip(&clip.scene.objects) {
            assert_eq!(
                (got.count, got.colour, got.shape, got.motion),
                (
                    Some(want.count),
                    Some(want.colour),
                    Some(want.shape),
                    Some(want.motion.kind())
                ),
                "{}",
                clip.short_caption
            );
            if want.motion.kind() == MotionKind::Linear {
                assert_eq!(got.direction, want.motion.direction());
            }
        }
    }
}

#[test]
fn captions_agree_with_tracks() {
    // Mirrored clips too: their captions and tracks are derived, not simulated.
    let clips: Vec<Clip> = clips(150)
        .into_iter()
        .flat_map(|c| {
            let m = c.mirrored().expect("mirror");
            [c, m]
        })
        .collect();
    let (mut linear, mut falls, mut walls, mut hidden) = (0, 0, 0, 0);
    for clip in &clips {
        let track = |o: usize| clip.tracks.iter().map(move |f| f[o]);
        let still_camera = clip.scene.camera == Camera::Still;
        for o in 0..clip.objects.len() {
            let motion = motion_of(clip, o);
            // "moves right" (or any direction): every step goes that way.
            if let (Motion::Linear { direction, .. }, true) = (motion, still_camera) {
                let (ux, uy) = direction.unit();
                let pts: Vec<_> = track(o).collect();
                for w in pts.windows(2) {
                    let step = (w[1].x - w[0].x) * ux + (w[1].y - w[0].y) * uy;
                    assert!(step > 0.0, "{}: object {o} step {step}", clip.caption);
                }
                linear += 1;
            }
            // "falls": accelerates downward until the first floor hit.
            if motion == Motion::Fall {
                let first = first_event_frame(clip, o).unwrap_or(clip.tracks.len() as u32);
                let ys: Vec<f64> = track(o).map(|p| p.y).collect();
                for k in 1..(first as usize).saturating_sub(1).min(ys.len() - 1) {
                    let acc = ys[k + 1] - 2.0 * ys[k] + ys[k - 1];
                    assert!(acc > 0.3, "{}: frame {k} acc {acc}", clip.caption);
                }
                assert!(ys[1] >= ys[0]);
                falls += 1;
            }
        }
        // "bounces off the left/right wall": the x velocity flips there, at the wall.
        for e in clip.events() {
            let EventKind::Wall { wall } = e.kind else {
                continue;
            };
            let f = e.frame as usize;
            let busy = clip
                .events()
                .iter()
                .any(|x| x.object == e.object && x != e && x.frame.abs_diff(e.frame) <= 2);
            if busy || f < 2 || f + 1 >= clip.tracks.len() || !still_camera {
                continue;
            }
            let p = |k: usize| clip.tracks[k][e.object];
            let (before, after) = match wall {
                Wall::Left | Wall::Right => (p(f - 1).x - p(f - 2).x, p(f + 1).x - p(f).x),
                Wall::Top | Wall::Bottom => (p(f - 1).y - p(f - 2).y, p(f + 1).y - p(f).y),
            };
            let toward = match wall {
                Wall::Left | Wall::Top => -1.0,
                Wall::Right | Wall::Bottom => 1.0,
            };
            assert!(
                before * toward > 0.0 && after * toward < 0.0,
                "{}: {e:?}",
                clip.caption
            );
            // At contact the shape's edge is within one frame's travel of the wall.
            let gap = |k: usize| match wall {
                Wall::Left => p(k).bbox[0],
                Wall::Right => 64.0 - p(k).bbox[2],
                Wall::Top => p(k).bbox[1],
                Wall::Bottom => 64.0 - p(k).bbox[3],
            };
            let travel = before.abs().max(after.abs());
            assert!(
                gap(f - 1).min(gap(f)) <= travel + 0.01,
                "{}: {e:?}",
                clip.caption
            );
            assert!(gap(f - 1) >= -0.01 && gap(f) >= -0.01);
            walls += 1;
        }
        // "passes behind X" then "reappears": visibility dips below half, then recovers.
        for e in clip.events() {
            let EventKind::PassesBehind { other } = e.kind else {
                continue;
            };
            let vis = |k: usize| clip.tracks[k][e.object].visible;
            let f = e.frame as usize;
            assert!(vis(f) <= 0.5 + 1e-3, "{}: {e:?} {}", clip.caption, vis(f));
            assert!((0..f).any(|k| vis(k) > 0.5), "{}: {e:?}", clip.caption);
            assert!(clip.objects[other].depth > clip.objects[e.object].depth);
            let back = clip.events().iter().find(|r| {
                r.object == e.object
                    && r.frame > e.frame
                    && r.kind == EventKind::Reappears { other }
            });
            // Only objects with a single occluder: behind two at once, leaving one is not enough.
            let overlapped = clip.events().iter().any(|x| {
                x.object == e.object
                    && matches!(x.kind, EventKind::PassesBehind { other: o } if o != other)
            });
            if let Some(r) = back.filter(|_| !overlapped) {
                assert!(vis(r.frame as usize) > 0.5, "{}", clip.caption);
                hidden += 1;
            }
        }
    }
    // The sample is large enough that every kind of check ran several times.
    assert!(
        linear > 10 && falls > 10 && walls > 10 && hidden > 5,
        "linear {linear} falls {falls} walls {walls} hidden {hidden}"
    );
}

#[test]
fn mirrored_clips_swap_sides_and_nothing_else() {
    let (mut sided, mut centres) = (0, 0);
    for clip in clips(40) {
        let m = clip.mirrored().expect("mirror");
        let back = m.mirrored().expect("mirror");
        assert_eq!(
            (&back.video, &back.caption, &back.scene, &back.tracks),
            (&clip.video, &clip.caption, &clip.scene, &clip.tracks)
        );
        // The captions differ exactly where a side is named.
        let swap = |w: &str| {
            let word = w.trim_end_matches(['.', ',']);
            let other = match word {
                "left" => "right",
                "right" => "left",
                "clockwise" => "counterclockwise",
                "counterclockwise" => "clockwise",
                _ => word,
            };
            format!("{other}{}", &w[word.len()..])
        };
        let swapped: Vec<String> = clip.caption.split(' ').map(swap).collect();
        assert_eq!(swapped.join(" "), m.caption);
        sided += usize::from(clip.caption != m.caption);
        // The mirrored frames show each fully visible object at its mirrored track point.
        let w = clip.video.width as usize;
        for (f, frame) in m.video.frames.iter().enumerate().step_by(8) {
            for (o, p) in m.tracks[f].iter().enumerate() {
                let info = clip.objects[o];
                if p.visible < 1.0 || info.shape == tessera_world::caption::Shape::Ring {
                    continue;
                }
                let (x, y) = (p.x.floor() as usize, p.y.floor() as usize);
                let i = (y * w + x) * 3;
                assert_eq!(
                    frame[i..i + 3],
                    info.colour.rgb(),
                    "{} frame {f}",
                    m.caption
                );
                centres += 1;
            }
        }
    }
    assert!(
        sided > 30 && centres > 100,
        "sided {sided} centres {centres}"
    );
}

#[test]
fn occlusion_scenes_hide_fully_and_reappear() {
    let mut full = 0;
    for clip in clips(100) {
        for e in clip.events() {
            if !matches!(e.kind, EventKind::PassesBehind { .. }) {
                continue;
            }
            let vis: Vec<f64> = clip.tracks.iter().map(|f| f[e.object].visible).collect();
            let min = vis.iter().copied().fold(1.0, f64::min);
            if min < 0.02 && vis[0] > 0.99 && vis[vis.len() - 1] > 0.99 {
                full += 1;
            }
        }
    }
    assert!(
        full >= 5,
        "only {full} objects vanished and came back in full view"
    );
}

#[test]
fn held_out_pairs_only_in_test() {
    for split in [Split::Train, Split::Val] {
        for i in 0..3000 {
            let scene = sample_scene(&opts(split, 0), i).expect("scene");
            for o in &scene.objects {
                assert!(!is_held_out(o.colour, o.shape), "{split} clip {i}: {o:?}");
            }
        }
    }
    let mut seen = BTreeMap::new();
    for i in 0..500 {
        let scene = sample_scene(&opts(Split::Test, 0), i).expect("scene");
        let held: Vec<_> = scene
            .objects
            .iter()
            .filter(|o| is_held_out(o.colour, o.shape))
            .collect();
        assert!(!held.is_empty(), "test clip {i} has no held-out pair");
        *seen.entry((held[0].colour, held[0].shape)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), tessera_world::HELD_OUT.len(), "{seen:?}");
}

#[test]
fn edges_are_antialiased() {
    // A frame with objects has pixels that are neither background nor object colour.
    let clip = clips(10)
        .into_iter()
        .find(|c| c.scene.background.kind == BackgroundKind::Solid)
        .expect("a solid-background clip among the first ten");
    let bg = clip.scene.background.top.rgb();
    let pure: Vec<[u8; 3]> = clip
        .objects
        .iter()
        .map(|o| o.colour.rgb())
        .chain([bg])
        .collect();
    let frame = &clip.video.frames[0];
    let mixed = frame
        .chunks_exact(3)
        .filter(|p| !pure.contains(&[p[0], p[1], p[2]]))
        .count();
    let perimeter: f64 = clip
        .objects
        .iter()
        .map(|o| 2.0 * std::f64::consts::PI * o.radius)
        .sum();
    assert!(
        mixed as f64 > 0.5 * perimeter,
        "{mixed} blended pixels, perimeter {perimeter}"
    );
}

#[test]
fn other_sizes_and_rates() {
    let o = SampleOptions {
        width: 96,
        height: 48,
        frames: 9,
        fps: 8.0,
        ..opts(Split::Train, 2)
    };
    let clip = generate_clip(&o, 0).expect("clip");
    assert_eq!((clip.video.width, clip.video.height), (96, 48));
    assert_eq!(clip.video.frames.len(), 9);
    assert!(clip.video.frames.iter().all(|f| f.len() == 96 * 48 * 3));
    let one = generate_clip(&SampleOptions { frames: 1, ..o }, 0).expect("one frame");
    assert_eq!(one.video.frames.len(), 1);
    let odd = SampleOptions {
        width: 65,
        count: 1,
        ..o
    };
    let dir = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        sample_dataset(&odd, &Selection::default(), dir.path(), |_| {}),
        Err(WorldError::OddSize { even_width: 66, .. })
    ));
    assert!(matches!(
        generate_clip(&SampleOptions { frames: 0, ..o }, 0),
        Err(WorldError::Frames { .. })
    ));
}
