//! Scoring many clips and writing `report.json` and `report.html`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use tessera_media::Video;

use crate::error::{EvalError, Result};
use crate::features::clip_features;
use crate::frechet::frechet_distance;
use crate::metrics::{analyze, score, Analysis, AnalysisParams, ClipScores, ObservedEvent};
use crate::scene::{ExpectedScene, ObservedObject};

/// How clips are brought to a common footing before analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// Analysis frame size and rate: videos of another size or rate are resampled to it (the
    /// shapes world's defaults, which the pixel thresholds are stated at).
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Frames in each clip's strip in the HTML page.
    pub strip_frames: usize,
    /// Real clips for the FVD-style distance; `None` skips it.
    pub reference_dir: Option<PathBuf>,
    pub analysis: AnalysisParams,
    /// `(PSNR dB, SSIM)` of the evaluated model's VAE on real clips (see
    /// [`crate::reconstruction`]); summarised as `vae_psnr` and `vae_ssim` when not empty.
    pub vae_reconstruction: Vec<(f64, f64)>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            width: 64,
            height: 64,
            fps: 16.0,
            strip_frames: 8,
            reference_dir: None,
            analysis: AnalysisParams::default(),
            vae_reconstruction: Vec::new(),
        }
    }
}

/// One scored clip.
#[derive(Debug, Clone, Serialize)]
pub struct ClipReport {
    pub name: String,
    pub caption: String,
    /// Caption words the grammar could not place; the clip is scored on the rest.
    pub unknown_words: Vec<String>,
    pub scores: ClipScores,
    pub objects: Vec<ObservedObject>,
    pub events: Vec<ObservedEvent>,
    /// PNG strip of frames, relative to the report folder.
    pub strip: Option<String>,
    /// The clip's FVD-style feature vector ([`clip_features`]), so a moved distance can be
    /// traced to the clips and entries that moved it.
    pub features: Vec<f64>,
}

/// A clip that could not be scored (e.g. an unreadable video); the run goes on without it.
#[derive(Debug, Clone, Serialize)]
pub struct ClipFailure {
    pub name: String,
    pub error: String,
}

/// Mean of one metric over the clips where it is defined.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    pub metric: String,
    pub mean: Option<f64>,
    pub clips: usize,
    pub unit: &'static str,
    /// For the metrics a caption decides ([`CAPTION_METRICS`]): the mean with each clip scored
    /// against every other caption of the report instead of its own. A generator that ignores the
    /// prompt scores `mean ≈ chance`; what it follows is `mean − chance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
}

impl MetricSummary {
    /// `mean − chance`: how much of the metric the prompt, not luck, explains.
    pub fn above_chance(&self) -> Option<f64> {
        Some(self.mean? - self.chance?)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Vec<MetricSummary>,
    /// Fréchet distance (squared) between the feature Gaussians of the reference clips and
    /// these; `None` without a reference set.
    pub fvd: Option<f64>,
    pub clips: Vec<ClipReport>,
    pub errors: Vec<ClipFailure>,
}

impl Report {
    /// The summary as an aligned text table, for the CLI to print.
    pub fn summary_table(&self) -> String {
        let mut s = format!(
            "{:<24} {:>9} {:>9} {:>9} {:>6}  unit\n",
            "metric", "mean", "chance", "above", "clips"
        );
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for m in &self.summary {
            s += &format!(
                "{:<24} {:>9} {:>9} {:>9} {:>6}  {}\n",
                m.metric,
                fmt(m.mean),
                fmt(m.chance),
                fmt(m.above_chance()),
                m.clips,
                m.unit
            );
        }
        if let Some(f) = self.fvd {
            s += &format!(
                "{:<24} {:>9.3} {:>9} {:>9} {:>6}  feature units²\n",
                "fvd",
                f,
                "-",
                "-",
                self.clips.len()
            );
        }
        if let Some(lift) = self.prompt_following_lift() {
            s += &format!(
                "prompt following above chance ({}, averaged): {lift:.3}\n",
                PROMPT_FOLLOWING.join(", ")
            );
        }
        if !self.errors.is_empty() {
            s += &format!("{} clip(s) could not be scored:\n", self.errors.len());
            for e in &self.errors {
                s += &format!("  {}: {}\n", e.name, e.error);
            }
        }
        s
    }

    /// The mean of the prompt-following metrics (object count, colour, shape, direction) the
    /// clips define: one number to rank checkpoints of a model by.
    pub fn prompt_following(&self) -> Option<f64> {
        let defined: Vec<f64> = PROMPT_FOLLOWING
            .iter()
            .filter_map(|m| self.mean(m))
            .collect();
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
    }

    /// [`Report::prompt_following`] above its chance level: the mean over the same metrics of
    /// `mean − chance`. A generator that ignores the prompt scores about 0 however many objects
    /// it draws (more objects match more colours by chance); `None` without a chance level
    /// (every caption the same, or one clip).
    pub fn prompt_following_lift(&self) -> Option<f64> {
        let lifts: Vec<f64> = PROMPT_FOLLOWING
            .iter()
            .filter_map(|m| self.summary.iter().find(|s| s.metric == *m)?.above_chance())
            .collect();
        (!lifts.is_empty()).then(|| lifts.iter().sum::<f64>() / lifts.len() as f64)
    }

    /// The mean of metric `name` (as in the summary), if any clip defines it.
    pub fn mean(&self, name: &str) -> Option<f64> {
        self.summary.iter().find(|m| m.metric == name)?.mean
    }
}

/// Metric name, unit and accessor, in report order.
type Getter = fn(&ClipScores) -> Option<f64>;
const METRICS: &[(&str, &str, Getter)] = &[
    ("object_count", "[0,1]", |s| s.object_count),
    ("colour", "[0,1]", |s| s.colour),
    ("shape", "[0,1]", |s| s.shape),
    ("direction", "[0,1]", |s| s.direction),
    ("position", "[0,1]", |s| s.position),
    ("subject_consistency", "[0,1]", |s| s.subject_consistency),
    ("background_consistency", "[0,1]", |s| {
        s.background_consistency
    }),
    ("backdrop", "[0,1]", |s| s.backdrop),
    ("flicker", "[0,1]", |s| s.flicker),
    ("smoothness", "[0,1]", |s| s.smoothness),
    ("dynamic_degree", "[0,1]", |s| s.dynamic_degree),
    ("physics", "[0,1]", |s| s.physics),
    ("permanence", "[0,1]", |s| s.permanence),
    ("flicker_level", "RGB8 levels", |s| Some(s.flicker_level)),
    ("mean_speed", "frame widths/s", |s| s.mean_speed),
];

/// The metrics [`Report::prompt_following`] and its lift average.
const PROMPT_FOLLOWING: [&str; 4] = ["object_count", "colour", "shape", "direction"];

/// The metrics a caption decides, which get a [`MetricSummary::chance`].
pub const CAPTION_METRICS: &[&str] = &[
    "object_count",
    "colour",
    "shape",
    "direction",
    "position",
    "backdrop",
];

/// Each clip's scores against every caption in the report that differs from its own (clips of
/// one prompt under several seeds share a caption): the expectation over the prompts, not one
/// draw of them, so two models' chance levels differ by what they drew, not by the pairing.
/// Empty where every caption is the same.
fn mismatched_scores(clips: &[ClipReport], analyses: &[Analysis]) -> Vec<ClipScores> {
    let mut captions: Vec<&str> = clips.iter().map(|c| c.caption.as_str()).collect();
    captions.sort_unstable();
    captions.dedup();
    let scenes: Vec<(&str, ExpectedScene)> = captions
        .into_iter()
        .map(|c| (c, ExpectedScene::from_prompt(c)))
        .collect();
    clips
        .iter()
        .zip(analyses)
        .flat_map(|(clip, a)| {
            scenes
                .iter()
                .filter(move |(c, _)| *c != clip.caption)
                .map(move |(_, scene)| score(a, scene))
        })
        .collect()
}

/// Brings a clip to the analysis size and rate when it differs.
fn conform(video: &Video, name: &str, o: &EvalOptions) -> Result<Video> {
    if video.width == o.width && video.height == o.height && (video.fps - o.fps).abs() < 1e-9 {
        return Ok(video.clone());
    }
    tessera_media::fit(video, o.width, o.height, o.fps).map_err(|source| EvalError::Media {
        name: name.to_string(),
        source,
    })
}

struct Scored {
    report: ClipReport,
    analysis: Analysis,
}

fn score_one(name: &str, video: &Video, caption: &str, o: &EvalOptions) -> Result<Scored> {
    let v = conform(video, name, o)?;
    let a = analyze(&v, name, &o.analysis)?;
    let expected = ExpectedScene::from_prompt(caption);
    let scores = score(&a, &expected);
    Ok(Scored {
        report: ClipReport {
            name: name.to_string(),
            caption: caption.to_string(),
            unknown_words: expected.unknown_words.clone(),
            scores,
            objects: a.objects.clone(),
            events: a.events.clone(),
            strip: None,
            features: clip_features(&a, &v.frames[0]),
        },
        analysis: a,
    })
}

/// Scores in-memory clips against their captions and writes the report to `out_dir`.
pub fn eval_clips(clips: &[(Video, String)], out_dir: &Path) -> Result<Report> {
    eval_clips_with(clips, &[], out_dir, &EvalOptions::default())
}

/// [`eval_clips`] with options and a reference set of real clips for the FVD-style distance
/// (empty: no distance).
pub fn eval_clips_with(
    clips: &[(Video, String)],
    reference: &[Video],
    out_dir: &Path,
    options: &EvalOptions,
) -> Result<Report> {
    let named: Vec<Input> = clips
        .iter()
        .enumerate()
        .map(|(i, (v, c))| (format!("clip_{i:04}"), Ok(v), c.as_str()))
        .collect();
    let reference: Vec<Result<Video>> = reference.iter().map(|v| Ok(v.clone())).collect();
    build_report(named, reference, out_dir, options)
}

/// Where the videos to score are.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// Every video named in the captions file, relative to this folder; files in the folder
    /// without a caption are reported as errors.
    Dir(PathBuf),
    /// These files, captioned by the captions-file entry with the same file name.
    List(Vec<PathBuf>),
}

/// One line of `captions.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
struct CaptionLine {
    video: String,
    caption: String,
}

fn read_captions(path: &Path) -> Result<Vec<CaptionLine>> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::CaptionsRead {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: CaptionLine = serde_json::from_str(line).map_err(|e| EvalError::CaptionsLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(c);
    }
    Ok(out)
}

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "m4v", "gif", "webm", "mkv", "avi"];

fn list_videos(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::ListDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<Video> {
    tessera_media::read_video(path).map_err(|source| EvalError::Media {
        name: file_name(path),
        source,
    })
}

/// Scores a folder (or list) of videos against `captions_jsonl` and writes the report to
/// `out_dir`. Unreadable videos and videos without a caption are listed in
/// [`Report::errors`]; only an unreadable captions file or output folder is fatal.
pub fn eval_videos(
    source: &VideoSource,
    captions_jsonl: &Path,
    out_dir: &Path,
    options: &EvalOptions,
) -> Result<Report> {
    let captions = read_captions(captions_jsonl)?;
    let by_name: HashMap<String, &str> = captions
        .iter()
        .map(|c| (file_name(Path::new(&c.video)), c.caption.as_str()))
        .collect();
    let mut jobs: Vec<(String, PathBuf, Option<&str>)> = Vec::new();
    match source {
        VideoSource::Dir(dir) => {
            for c in &captions {
                jobs.push((
                    c.video.clone(),
                    dir.join(&c.video),
                    Some(c.caption.as_str()),
                ));
            }
            let named: Vec<PathBuf> = captions.iter().map(|c| dir.join(&c.video)).collect();
            for p in list_videos(dir)? {
                if !named.contains(&p) {
                    jobs.push((file_name(&p), p, None));
                }
            }
        }
        VideoSource::List(paths) => {
            for p in paths {
                let name = file_name(p);
                let cap = by_name.get(&name).copied();
                jobs.push((name, p.clone(), cap));
            }
        }
    }
    let videos: Vec<(String, std::result::Result<Video, String>, &str)> = jobs
        .par_iter()
        .map(|(name, path, cap)| match cap {
            Some(c) => (name.clone(), read(path).map_err(|e| e.to_string()), *c),
            None => (
                name.clone(),
                Err(format!(
                    "no caption for this video in {}; add a line {{\"video\": {name:?}, \"caption\": \"...\"}}",
                    captions_jsonl.display()
                )),
                "",
            ),
        })
        .collect();
    let reference: Vec<Result<Video>> = match &options.reference_dir {
        Some(dir) => {
            // A shapes-world folder keeps its clips under videos/.
            let inner = dir.join("videos");
            let dir = if inner.is_dir() { &inner } else { dir };
            let paths = list_videos(dir)?;
            if paths.len() < 2 {
                return Err(EvalError::FewReferenceClips {
                    path: dir.to_path_buf(),
                    found: paths.len(),
                });
            }
            paths.iter().map(|p| read(p)).collect()
        }
        None => Vec::new(),
    };
    let named = videos
        .iter()
        .map(|(n, v, c)| (n.clone(), v.as_ref().map_err(Clone::clone), *c))
        .collect();
    build_report(named, reference, out_dir, options)
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A clip to score: name, the video or why it could not be had, caption.
type Input<'a> = (String, std::result::Result<&'a Video, String>, &'a str);

fn build_report(
    clips: Vec<Input>,
    reference: Vec<Result<Video>>,
    out_dir: &Path,
    options: &EvalOptions,
) -> Result<Report> {
    std::fs::create_dir_all(out_dir.join("strips")).map_err(|source| EvalError::Write {
        path: out_dir.join("strips"),
        source,
    })?;
    type Outcome = std::result::Result<(Scored, Video), String>;
    let results: Vec<(String, Outcome)> = clips
        .into_par_iter()
        .map(|(name, video, caption)| {
            let r = video.and_then(|v| {
                let scored = || -> Result<(Scored, Video)> {
                    Ok((
                        score_one(&name, v, caption, options)?,
                        conform(v, &name, options)?,
                    ))
                };
                scored().map_err(|e| e.to_string())
            });
            (name, r)
        })
        .collect();

    let mut report = Report {
        summary: Vec::new(),
        fvd: None,
        clips: Vec::new(),
        errors: Vec::new(),
    };
    let mut features = Vec::new();
    let mut analyses = Vec::new();
    for (i, (name, r)) in results.into_iter().enumerate() {
        match r {
            Ok((mut s, video)) => {
                let rel = format!("strips/{i:04}.png");
                write_strip(&video, options.strip_frames, &out_dir.join(&rel))?;
                s.report.strip = Some(rel);
                features.push(s.report.features.clone());
                analyses.push(s.analysis);
                report.clips.push(s.report);
            }
            Err(error) => report.errors.push(ClipFailure { name, error }),
        }
    }
    let ref_features: Vec<Vec<f64>> = reference
        .into_par_iter()
        .filter_map(|v| {
            let v = conform(&v.ok()?, "reference", options).ok()?;
            let a = analyze(&v, "reference", &options.analysis).ok()?;
            Some(clip_features(&a, &v.frames[0]))
        })
        .collect();
    if !ref_features.is_empty() {
        report.fvd = frechet_distance(&ref_features, &features).ok();
    }
    let mismatched = mismatched_scores(&report.clips, &analyses);
    let mean_of =
        |vals: Vec<f64>| (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64);
    report.summary = METRICS
        .iter()
        .map(|(name, unit, get)| {
            let vals: Vec<f64> = report.clips.iter().filter_map(|c| get(&c.scores)).collect();
            let chance = CAPTION_METRICS
                .contains(name)
                .then(|| mean_of(mismatched.iter().filter_map(get).collect()))
                .flatten();
            MetricSummary {
                metric: name.to_string(),
                clips: vals.len(),
                mean: mean_of(vals),
                unit,
                chance,
            }
        })
        .collect();
    let recon = &options.vae_reconstruction;
    if !recon.is_empty() {
        let mean =
            |f: fn(&(f64, f64)) -> f64| recon.iter().map(f).sum::<f64>() / recon.len() as f64;
        for (metric, unit, value) in [
            ("vae_psnr", "dB", mean(|r| r.0)),
            ("vae_ssim", "[-1,1]", mean(|r| r.1)),
        ] {
            report.summary.push(MetricSummary {
                metric: metric.to_string(),
                mean: Some(value),
                clips: recon.len(),
                unit,
                chance: None,
            });
        }
    }

    let json = serde_json::to_vec_pretty(&report).map_err(|e| EvalError::Write {
        path: out_dir.join("report.json"),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&out_dir.join("report.json"), &json)?;
    write_atomic(&out_dir.join("report.html"), html(&report).as_bytes())?;
    Ok(report)
}

/// Writes through a temporary file in the same folder, then renames: no half-written reports.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |source| EvalError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tessera_media::temp_file_beside(path).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// `count` evenly spaced frames side by side, 2 px apart, as one PNG.
fn write_strip(video: &Video, count: usize, path: &Path) -> Result<()> {
    let n = video.frames.len();
    let count = count.clamp(1, n.max(1));
    let (w, h) = (video.width as usize, video.height as usize);
    let gap = 2;
    let sw = count * w + (count - 1) * gap;
    let mut img = vec![255u8; sw * h * 3];
    for k in 0..count {
        let t = if count == 1 {
            0
        } else {
            k * (n - 1) / (count - 1)
        };
        let f = &video.frames[t];
        for y in 0..h {
            let dst = (y * sw + k * (w + gap)) * 3;
            img[dst..dst + w * 3].copy_from_slice(&f[y * w * 3..(y + 1) * w * 3]);
        }
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, sw as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| EvalError::Png {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&img).map_err(png_err)?;
    }
    write_atomic(path, &bytes)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(r: &Report) -> String {
    let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tessera eval</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
         td:first-child{text-align:left}img{image-rendering:pixelated;height:128px}\
         .clip{margin:1.5em 0}.err{color:#a00}</style></head><body><h1>Tessera evaluation</h1>\
         <table><tr><th>metric</th><th>mean</th><th>chance (the other captions)</th>\
         <th>above chance</th><th>clips</th><th>unit</th></tr>",
    );
    for m in &r.summary {
        s += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.metric,
            fmt(m.mean),
            fmt(m.chance),
            fmt(m.above_chance()),
            m.clips,
            m.unit
        );
    }
    if let Some(f) = r.fvd {
        s += &format!(
            "<tr><td>fvd</td><td>{f:.3}</td><td>–</td><td>–</td><td>{}</td>\
             <td>feature units²</td></tr>",
            r.clips.len()
        );
    }
    s += "</table>";
    for e in &r.errors {
        s += &format!(
            "<p class=\"err\">{}: {}</p>",
            escape(&e.name),
            escape(&e.error)
        );
    }
    for c in &r.clips {
        s += &format!(
            "<div class=\"clip\"><h3>{}</h3><p>{}</p>",
            escape(&c.name),
            escape(&c.caption)
        );
        if !c.unknown_words.is_empty() {
            s += &format!(
                "<p>unparsed words: {}</p>",
                escape(&c.unknown_words.join(", "))
            );
        }
        if let Some(p) = &c.strip {
            s += &format!("<img src=\"{}\" alt=\"frames\">", escape(p));
        }
        s += "<table><tr>";
        for (name, _, _) in METRICS {
            s += &format!("<th>{name}</th>");
        }
        s += "</tr><tr>";
        for (_, _, get) in METRICS {
            s += &format!("<td>{}</td>", fmt(get(&c.scores)));
        }
        s += "</tr></table></div>";
    }
    s += "</body></html>\n";
    s
}
