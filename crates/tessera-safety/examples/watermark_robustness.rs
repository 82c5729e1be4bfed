//! How visible the watermark is and how well it survives re-encoding, on `val` clips of the
//! shapes world (64×64, 33 frames):
//!
//!     cargo run --release -p tessera-safety --example watermark_robustness [CLIPS]
//!
//! For each setting: PSNR of the marked clip against the clean one, and detection scores
//! (min / mean over clips) for clean clips, marked clips, marked clips through Tessera's own
//! MP4 writer, and — when `ffmpeg` is on PATH — re-encoded by libx264 at CRF 23 and 28 and
//! by ffmpeg's default MPEG-4 Part 2 encoder — and each frame saved as a JPEG at quality 75
//! (what happens to a still). The shipped setting is the first row.

use std::process::Command;

use tessera_media::Video;
use tessera_safety::{Watermark, SEARCH_THRESHOLD, THRESHOLD};

fn ffmpeg_reencode(v: &Video, args: &[&str]) -> Option<Video> {
    if !tessera_media::ffmpeg_available() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let (src, dst) = (dir.path().join("in.mp4"), dir.path().join("out.mp4"));
    tessera_media::write_video(&src, v).ok()?;
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&src)
        .args(args)
        .arg(&dst)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    tessera_media::read_video(&dst).ok()
}

/// Every frame through a JPEG at `quality`.
fn jpeg(v: &Video, quality: u8) -> Video {
    let frames = v
        .frames
        .iter()
        .map(|f| {
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
                .encode(f, v.width, v.height, image::ExtendedColorType::Rgb8)
                .unwrap();
            tessera_media::decode_bytes(&bytes)
                .unwrap()
                .frames
                .remove(0)
        })
        .collect();
    Video {
        frames,
        ..v.clone()
    }
}

fn main() {
    let clips: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let videos: Vec<Video> = (0..clips)
        .map(|seed| {
            let opts = tessera_world::SampleOptions {
                split: tessera_world::Split::Val,
                seed,
                ..Default::default()
            };
            tessera_world::generate_clip(&opts, 0).unwrap().video
        })
        .collect();
    let shipped = Watermark::default();
    let mut settings = vec![shipped];
    for (strength, cell, clip) in [(2, 2, 2.0), (4, 2, 4.0), (3, 2, 6.0), (3, 4, 3.0)] {
        settings.push(Watermark {
            strength,
            cell,
            clip,
        });
    }
    println!("threshold {THRESHOLD}; {clips} clips; scores min / mean");
    println!(
        "{:>8} {:>4} {:>4} {:>7} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "strength",
        "cell",
        "clip",
        "PSNR",
        "clean",
        "marked",
        "own MP4",
        "x264 crf23",
        "x264 crf28",
        "mpeg4",
        "JPEG q75"
    );
    for wm in settings {
        let mut psnr = 0.0;
        let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 7];
        for v in &videos {
            let m = marked(&wm, v);
            psnr += tessera_media::psnr(v, &m).unwrap() / videos.len() as f64;
            let score = |x: &Video| wm.detect(x.width, x.height, &x.frames).score;
            cols[0].push(score(v));
            cols[1].push(score(&m));
            let own = tessera_media::decode_bytes(&tessera_media::encode_mp4(&m).unwrap()).unwrap();
            cols[2].push(score(&own));
            let reencodes: [&[&str]; 3] = [
                &["-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p"],
                &["-c:v", "libx264", "-crf", "28", "-pix_fmt", "yuv420p"],
                &["-c:v", "mpeg4", "-pix_fmt", "yuv420p"],
            ];
            for (i, args) in reencodes.iter().enumerate() {
                if let Some(r) = ffmpeg_reencode(&m, args) {
                    cols[3 + i].push(score(&r));
                }
            }
            cols[6].push(score(&jpeg(&m, 75)));
        }
        let cell = |c: &Vec<f64>| {
            if c.is_empty() {
                "-".to_string()
            } else {
                let min = c.iter().cloned().fold(f64::INFINITY, f64::min);
                format!("{min:.1} / {:.1}", c.iter().sum::<f64>() / c.len() as f64)
            }
        };
        println!(
            "{:>8} {:>4} {:>4} {:>7.2} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
            wm.strength,
            wm.cell,
            wm.clip,
            psnr,
            cell(&cols[0]),
            cell(&cols[1]),
            cell(&cols[2]),
            cell(&cols[3]),
            cell(&cols[4]),
            cell(&cols[5]),
            cell(&cols[6])
        );
    }

    // Rescaled and cropped copies, found by `Watermark::find` where they were made.
    println!("\nshipped setting, edited copies (Watermark::find; search threshold {SEARCH_THRESHOLD}): min / mean, where found");
    let ours: [(&str, u32, bool); 4] = [
        ("clean, bilinear 160x160", 160, false),
        ("bilinear 128x128", 128, true),
        ("bilinear 160x160", 160, true),
        ("area 48x48", 48, true),
    ];
    for (name, side, mark) in ours {
        let found: Vec<_> = videos
            .iter()
            .map(|v| {
                let m = if mark { marked(&shipped, v) } else { v.clone() };
                let r = tessera_media::resize(&m, side, side).unwrap();
                shipped.find(r.width, r.height, &r.frames)
            })
            .collect();
        report(name, &found);
    }
    let ffmpeg: [(&str, &str, bool); 5] = [
        (
            "ffmpeg bicubic 256x256, x264 crf23",
            "scale=256:256:flags=bicubic",
            true,
        ),
        (
            "ffmpeg lanczos 480x480, x264 crf23",
            "scale=480:480:flags=lanczos",
            true,
        ),
        ("crop 48x48 at (8, 8), x264 crf23", "crop=48:48:8:8", true),
        ("crop 56x40 at (5, 19), x264 crf23", "crop=56:40:5:19", true),
        (
            "clean, crop 48x48 at (8, 8), crf23",
            "crop=48:48:8:8",
            false,
        ),
    ];
    for (name, filter, mark) in ffmpeg {
        let found: Vec<_> = videos
            .iter()
            .filter_map(|v| {
                let args = [
                    "-vf", filter, "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p",
                ];
                let m = if mark { marked(&shipped, v) } else { v.clone() };
                let r = ffmpeg_reencode(&m, &args)?;
                Some(shipped.find(r.width, r.height, &r.frames))
            })
            .collect();
        report(name, &found);
    }
}

fn marked(wm: &Watermark, v: &Video) -> Video {
    let mut m = v.clone();
    for f in &mut m.frames {
        wm.embed(m.width, m.height, f);
    }
    m
}

fn report(name: &str, found: &[tessera_safety::Detection]) {
    if found.is_empty() {
        return println!("{name:>36}: - (no ffmpeg)");
    }
    let scores: Vec<f64> = found.iter().map(|d| d.score).collect();
    let min = scores.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let detected = found.iter().filter(|d| d.detected).count();
    let (first, rest) = found.split_first().expect("not empty");
    let same = rest
        .iter()
        .all(|d| (d.size, d.offset) == (first.size, first.offset));
    let place = if same {
        format!("all at {:?} offset {:?}", first.size, first.offset)
    } else {
        "at different places".to_string()
    };
    println!(
        "{name:>36}: {min:.1} / {mean:.1}, detected {detected} of {}, {place}",
        found.len()
    );
}
