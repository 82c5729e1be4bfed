//! Clips end to end: seed → layout → physics → frames + ground truth → captions; and the dataset
//! writer that turns many clips into `videos/`, `captions.jsonl` and `tracks.jsonl`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_media::Video;

use crate::caption::{
    dense_caption, short_caption, Colour, Event, EventKind, SceneDescription, Shape, Size,
};
use crate::geometry::Placed;
use crate::render::{Renderer, Sprite};
use crate::scene::sample_layout;
use crate::scene::MAX_OBJECTS;
use crate::{SampleOptions, Split, WorldError};

/// Share of an object hidden by one nearer object at which it "passes behind" it.
const BEHIND_ENTER: f64 = 0.5;
/// Share still hidden at which it "reappears" (below the entry share: no flicker at the edge).
const BEHIND_EXIT: f64 = 0.1;

/// One object's identity for the whole clip (flat index order: groups, then members).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub group: usize,
    pub colour: Colour,
    pub shape: Shape,
    pub size: Size,
    /// Radius in pixels (the shape's circumradius is a multiple of it, see `geometry`).
    pub radius: f64,
    /// Higher is nearer the viewer.
    pub depth: u32,
}

/// Where one object is in one frame, in screen pixels (x right, y down, origin top-left corner).
/// Values are rounded to 1/1000 so files are compact and stable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackPoint {
    pub x: f64,
    pub y: f64,
    /// `[x0, y0, x1, y1]`, not clipped to the frame.
    pub bbox: [f64; 4],
    /// Fraction of the object's area on screen and not hidden by nearer objects, 0..=1.
    pub visible: f64,
    /// Clockwise rotation in radians.
    pub angle: f64,
}

/// A generated clip with everything known about it.
#[derive(Debug, Clone)]
pub struct Clip {
    /// `<split>-<seed>-<index>`, also the video file stem.
    pub id: String,
    pub index: u64,
    pub video: Video,
    pub caption: String,
    pub short_caption: String,
    pub scene: SceneDescription,
    pub objects: Vec<ObjectInfo>,
    /// `tracks[frame][object]`.
    pub tracks: Vec<Vec<TrackPoint>>,
}

impl Clip {
    /// The clip's events (also in `scene.events`), sorted by frame.
    pub fn events(&self) -> &[Event] {
        &self.scene.events
    }

    /// The same clip seen in a left-right mirror, with captions and tracks to match: a pair of
    /// clips whose captions differ only in the words that name a side, so a model trained on
    /// both must read those words. Id `<id>-mirror`.
    pub fn mirrored(&self) -> Result<Clip, WorldError> {
        let width = f64::from(self.video.width);
        let scene = self.scene.mirrored();
        let tracks = self
            .tracks
            .iter()
            .map(|frame| {
                frame
                    .iter()
                    .map(|p| TrackPoint {
                        x: round3(width - p.x),
                        bbox: [
                            round3(width - p.bbox[2]),
                            p.bbox[1],
                            round3(width - p.bbox[0]),
                            p.bbox[3],
                        ],
                        angle: round3(-p.angle),
                        ..*p
                    })
                    .collect()
            })
            .collect();
        Ok(Clip {
            id: format!("{}-mirror", self.id),
            index: self.index,
            video: tessera_media::mirror(&self.video).map_err(|source| WorldError::Video {
                id: self.id.clone(),
                source,
            })?,
            caption: dense_caption(&scene),
            short_caption: short_caption(&scene),
            scene,
            objects: self.objects.clone(),
            tracks,
        })
    }
}

/// One line of `captions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionRecord {
    pub video: String,
    pub caption: String,
    pub short_caption: String,
    pub id: String,
    pub seed: u64,
    pub index: u64,
    pub split: Split,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: f64,
}

/// One line of `tracks.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackRecord {
    pub video: String,
    pub id: String,
    pub objects: Vec<ObjectInfo>,
    /// `frames[frame][object]`.
    pub frames: Vec<Vec<TrackPoint>>,
    pub events: Vec<Event>,
    pub scene: SceneDescription,
}

/// What [`sample_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub out_dir: PathBuf,
    pub clips: usize,
    pub frames: usize,
    /// Total size of the MP4 files.
    pub video_bytes: u64,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The clip's private random stream. The key holds `seed`, `index` and the split tag verbatim,
/// so two different `(split, seed, index)` never share a stream: splits are disjoint.
fn clip_rng(split: Split, seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(&split.tag().to_le_bytes());
    key[24..].copy_from_slice(b"tessera1");
    ChaCha8Rng::from_seed(key)
}

/// The scene clip `index` will show, without rendering or simulating (so `events` is empty):
/// cheap enough to scan thousands of clips for their objects and motions.
pub fn sample_scene(opts: &SampleOptions, index: u64) -> Result<SceneDescription, WorldError> {
    opts.validate()?;
    let mut rng = clip_rng(opts.split, opts.seed, index);
    let layout = sample_layout(
        &mut rng,
        opts.split,
        opts.width,
        opts.height,
        opts.frames,
        opts.fps,
    );
    Ok(layout.description)
}

/// Generates clip `index` of the dataset described by `opts` (`opts.count` is ignored), fully
/// in memory. Same options and index → identical clip.
pub fn generate_clip(opts: &SampleOptions, index: u64) -> Result<Clip, WorldError> {
    opts.validate()?;
    let mut rng = clip_rng(opts.split, opts.seed, index);
    let layout = sample_layout(
        &mut rng,
        opts.split,
        opts.width,
        opts.height,
        opts.frames,
        opts.fps,
    );
    let mut scene = layout.description.clone();
    let objects: Vec<ObjectInfo> = layout
        .world
        .bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let group = scene.group_of(i).unwrap_or(0);
            ObjectInfo {
                group,
                colour: layout.colours[i],
                shape: b.shape,
                size: scene.objects[group].size,
                radius: round3(b.radius),
                depth: layout.depth[i],
            }
        })
        .collect();
    let bodies = layout.world.bodies.clone();
    let sim = layout.world.simulate(opts.frames as usize, opts.fps);

    let mut renderer = Renderer::new(opts.width, opts.height);
    let mut video = Video::new(opts.width, opts.height, opts.fps);
    let mut tracks = Vec::with_capacity(sim.poses.len());
    let n = bodies.len();
    let mut behind = vec![vec![(false, false); n]; n];
    let mut events = sim.events;
    for (f, poses) in sim.poses.iter().enumerate() {
        let camera_x = layout.pan_speed * f as f64 / opts.fps;
        let sprites: Vec<Sprite> = poses
            .iter()
            .zip(&bodies)
            .enumerate()
            .map(|(i, (p, b))| Sprite {
                placed: Placed {
                    shape: b.shape,
                    x: p.x - camera_x,
                    y: p.y,
                    radius: b.radius,
                    angle: p.angle,
                },
                colour: layout.colours[i],
                depth: layout.depth[i],
            })
            .collect();
        let mut frame = Vec::new();
        let truth = renderer.render(&scene.background, camera_x, &sprites, &mut frame);
        video.frames.push(frame);
        let time = f as f64 / opts.fps;
        for (a, (state, t)) in behind.iter_mut().zip(&truth).enumerate() {
            for (b, ((hidden_now, announced), &hidden)) in
                state.iter_mut().zip(&t.hidden_by).enumerate()
            {
                if !*hidden_now && hidden >= BEHIND_ENTER {
                    *hidden_now = true;
                    // An object hidden from the first frame never "passed behind" on screen.
                    *announced = f > 0;
                    if *announced {
                        events.push(Event {
                            frame: f as u32,
                            time,
                            object: a,
                            kind: EventKind::PassesBehind { other: b },
                        });
                    }
                } else if *hidden_now && hidden <= BEHIND_EXIT {
                    *hidden_now = false;
                    if *announced {
                        events.push(Event {
                            frame: f as u32,
                            time,
                            object: a,
                            kind: EventKind::Reappears { other: b },
                        });
                    }
                }
            }
        }
        tracks.push(
            sprites
                .iter()
                .zip(&truth)
                .map(|(s, t)| TrackPoint {
                    x: round3(s.placed.x),
                    y: round3(s.placed.y),
                    bbox: s.placed.bbox().map(round3),
                    visible: round3(t.visible),
                    angle: round3(s.placed.angle),
                })
                .collect(),
        );
    }
    events.sort_by(|a, b| {
        (a.frame, a.object)
            .cmp(&(b.frame, b.object))
            .then(a.time.total_cmp(&b.time))
            .then(a.kind.cmp(&b.kind))
    });
    for e in &mut events {
        e.time = (e.time * 1e6).round() / 1e6;
    }
    scene.events = events;
    Ok(Clip {
        id: format!("{}-{}-{:06}", opts.split, opts.seed, index),
        index,
        caption: dense_caption(&scene),
        short_caption: short_caption(&scene),
        video,
        scene,
        objects,
        tracks,
    })
}

/// Renders `opts.count` clips in parallel without encoding or writing anything; returns the
/// number of frames rendered. For benchmarks of the simulator and renderer alone.
pub fn render_clips(opts: &SampleOptions) -> Result<usize, WorldError> {
    opts.validate()?;
    (0..opts.count as u64)
        .into_par_iter()
        .map(|i| generate_clip(opts, i).map(|c| c.video.frames.len()))
        .try_reduce(|| 0, |a, b| Ok(a + b))
}

fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> WorldError + 'a {
    move |source| WorldError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WorldError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tessera_media::temp_file_beside(path).map_err(io_err(dir, "create a temporary file in"))?;
    tmp.write_all(bytes)
        .map_err(io_err(path, "write a temporary file for"))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "rename a temporary file onto")(e.error))?;
    Ok(())
}

fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, WorldError> {
    serde_json::to_string(value).map_err(|source| WorldError::Json { what, source })
}

/// Which world clips a dataset holds: indices from `start` on and, with `objects` set, only the
/// scenes with that many objects — one-object clips, say, where every motion word is about the one
/// object there is; with `heading`, only scenes where every object moves with a heading (lines
/// and bounces), so every clip's caption says which way. A kept clip has the id and pixels it
/// has in the whole world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub start: u64,
    pub objects: Option<usize>,
    pub heading: bool,
}

impl Selection {
    /// The first `opts.count` indices kept, in order; scenes are drawn, not rendered, to decide.
    pub fn indices(&self, opts: &SampleOptions) -> Result<Vec<u64>, WorldError> {
        opts.validate()?;
        if let Some(objects) = self.objects {
            if !(1..=MAX_OBJECTS).contains(&objects) {
                return Err(WorldError::Objects { objects });
            }
        }
        let mut kept = Vec::with_capacity(opts.count);
        let mut index = self.start;
        while kept.len() < opts.count {
            let scene = sample_scene(opts, index)?;
            let count_ok = self.objects.is_none_or(|n| scene.object_count() == n);
            let heading_ok =
                !self.heading || scene.objects.iter().all(|o| o.motion.direction().is_some());
            if count_ok && heading_ok {
                kept.push(index);
            }
            index += 1;
        }
        Ok(kept)
    }
}

/// Generates `opts.count` clips of `selection` into `out_dir`: `videos/<id>.mp4` (H.264),
/// `captions.jsonl` and `tracks.jsonl` (one line per clip, in index order). Clips are made in
/// parallel; `on_progress(n)` is called with the number finished so far. The same options give
/// byte-identical files.
pub fn sample_dataset(
    opts: &SampleOptions,
    selection: &Selection,
    out_dir: impl AsRef<Path>,
    on_progress: impl Fn(usize) + Sync,
) -> Result<Summary, WorldError> {
    let indices = selection.indices(opts)?;
    if opts.width % 2 == 1 || opts.height % 2 == 1 {
        return Err(WorldError::OddSize {
            width: opts.width,
            height: opts.height,
            even_width: opts.width + opts.width % 2,
            even_height: opts.height + opts.height % 2,
        });
    }
    let out_dir = out_dir.as_ref();
    let videos = out_dir.join("videos");
    fs::create_dir_all(&videos).map_err(io_err(&videos, "create the directory"))?;
    let done = AtomicUsize::new(0);
    let lines: Vec<(String, String, u64, usize)> = indices
        .into_par_iter()
        .map(|index| {
            let clip = generate_clip(opts, index)?;
            let mp4 =
                tessera_media::encode_mp4(&clip.video).map_err(|source| WorldError::Encode {
                    id: clip.id.clone(),
                    source,
                })?;
            let rel = format!("videos/{}.mp4", clip.id);
            write_atomic(&out_dir.join(&rel), &mp4)?;
            let caption = CaptionRecord {
                video: rel.clone(),
                caption: clip.caption.clone(),
                short_caption: clip.short_caption.clone(),
                id: clip.id.clone(),
                seed: opts.seed,
                index,
                split: opts.split,
                width: opts.width,
                height: opts.height,
                frames: opts.frames,
                fps: opts.fps,
            };
            let frames = clip.tracks.len();
            let track = TrackRecord {
                video: rel,
                id: clip.id,
                objects: clip.objects,
                frames: clip.tracks,
                events: clip.scene.events.clone(),
                scene: clip.scene,
            };
            let lines = (
                to_json(&caption, "a caption record")?,
                to_json(&track, "a track record")?,
                mp4.len() as u64,
                frames,
            );
            on_progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            Ok(lines)
        })
        .collect::<Result<_, WorldError>>()?;
    let mut captions = String::new();
    let mut tracks = String::new();
    for (c, t, _, _) in &lines {
        captions.push_str(c);
        captions.push('\n');
        tracks.push_str(t);
        tracks.push('\n');
    }
    write_atomic(&out_dir.join("captions.jsonl"), captions.as_bytes())?;
    write_atomic(&out_dir.join("tracks.jsonl"), tracks.as_bytes())?;
    Ok(Summary {
        out_dir: out_dir.to_path_buf(),
        clips: lines.len(),
        frames: lines.iter().map(|l| l.3).sum(),
        video_bytes: lines.iter().map(|l| l.2).sum(),
    })
}
