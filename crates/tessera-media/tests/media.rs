//! tessera-media integration tests. Fixtures come from `fixtures/gen/media_fixtures.sh`
//! (Debian ffmpeg/libx264 from testsrc2); `src_*.png` hold the lossless source frames stacked
//! top to bottom. Tests needing `ffmpeg`, `ffprobe` or `/usr/bin/chromium` print a note and pass
//! when the tool is absent. `TESSERA_FUZZ_CASES=10000` runs the long fuzz (`TESSERA_FUZZ_SEED`
//! picks another deterministic sequence).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_media::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/media")
        .join(name)
}

/// Splits a vertical strip of `frames` frames into a video.
fn strip(name: &str, frames: usize, fps: f64) -> Video {
    let s = read_video_native(fx(name)).expect("source strip decodes");
    let h = s.height / frames as u32;
    let len = (s.width * h * 3) as usize;
    Video {
        width: s.width,
        height: h,
        fps,
        frames: s.frames[0].chunks(len).map(<[u8]>::to_vec).collect(),
    }
}

/// Moving anti-aliased shapes on a gradient (4x4 supersampled coverage), standing in for a
/// shapes-world clip.
fn shapes_clip(w: u32, h: u32, n: usize, fps: f64) -> Video {
    let mut v = Video::new(w, h, fps);
    let (wf, hf) = (w as f32, h as f32);
    for t in 0..n {
        let tt = t as f32 / n.max(2) as f32;
        // (kind, cx, cy, size, rgb)
        let shapes = [
            (0, wf * (0.2 + 0.6 * tt), hf * 0.3, wf * 0.12, [230, 40, 40]),
            (1, wf * 0.7, hf * (0.2 + 0.5 * tt), wf * 0.10, [40, 80, 220]),
            (
                2,
                wf * (0.8 - 0.5 * tt),
                hf * 0.75,
                wf * 0.14,
                [250, 210, 30],
            ),
        ];
        let mut frame = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let bg = [
                    40.0 + 120.0 * x as f32 / wf,
                    60.0 + 100.0 * y as f32 / hf,
                    90.0,
                ];
                let mut px = bg;
                for &(kind, cx, cy, s, rgb) in &shapes {
                    let mut cover = 0.0;
                    for sy in 0..4 {
                        for sx in 0..4 {
                            let px_ = x as f32 + (sx as f32 + 0.5) / 4.0 - cx;
                            let py_ = y as f32 + (sy as f32 + 0.5) / 4.0 - cy;
                            let inside = match kind {
                                0 => px_ * px_ + py_ * py_ <= s * s,
                                1 => px_.abs() <= s && py_.abs() <= s,
                                _ => py_ <= s && py_ >= -s && px_.abs() <= (py_ + s) * 0.5,
                            };
                            cover += if inside { 1.0 / 16.0 } else { 0.0 };
                        }
                    }
                    for c in 0..3 {
                        px[c] = px[c] * (1.0 - cover) + rgb[c] as f32 * cover;
                    }
                }
                frame.extend(px.iter().map(|&c| c.round().clamp(0.0, 255.0) as u8));
            }
        }
        v.frames.push(frame);
    }
    v
}

fn on_path(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Top-level box types in file order.
fn top_level_boxes(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        out.push(String::from_utf8_lossy(&data[pos + 4..pos + 8]).into_owned());
        if size < 8 {
            break;
        }
        pos += size;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn mp4_round_trip_of_moving_shapes() {
    let dir = tempfile::tempdir().unwrap();
    for (w, h, n) in [(64, 64, 33), (256, 256, 33), (176, 144, 17)] {
        let clip = shapes_clip(w, h, n, 16.0);
        let path = dir.path().join(format!("shapes_{w}x{h}.mp4"));
        write_video(&path, &clip).unwrap();
        let back = read_video_native(&path).unwrap();
        assert_eq!((back.width, back.height, back.frames.len()), (w, h, n));
        assert!((back.fps - 16.0).abs() < 1e-9, "fps {}", back.fps);
        let p = psnr(&clip, &back).unwrap();
        let s = ssim(&clip, &back).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        // The 4:2:0 floor as we decode our files, and as ffmpeg/browsers upsample chroma.
        let floor = |up| {
            let frames = clip
                .frames
                .iter()
                .map(|f| yuv420_round_trip(f, w as usize, h as usize, up))
                .collect();
            psnr(
                &clip,
                &Video {
                    frames,
                    ..clip.clone()
                },
            )
            .unwrap()
        };
        let (guided, replicated) = (floor(Upsampling::LumaGuided), floor(Upsampling::Replicate));
        println!(
            "round trip {n}x{w}x{h}: PSNR {p:.2} dB, SSIM {s:.4}, {bytes} bytes \
             (4:2:0 alone: {guided:.2} dB guided, {replicated:.2} dB replicated)"
        );
        assert!(p >= 35.0, "PSNR {p:.2} dB < 35 at {w}x{h}");
        assert!(s >= 0.98, "SSIM {s:.4}");
    }
}

#[test]
fn provenance_rides_after_mdat_and_notices_edited_frames() {
    let dir = tempfile::tempdir().unwrap();
    let clip = shapes_clip(64, 48, 9, 16.0);
    let (plain, signed) = (dir.path().join("plain.mp4"), dir.path().join("signed.mp4"));
    write_video(&plain, &clip).unwrap();
    let mut w = VideoWriter::create(&signed, 64, 48, 16.0).unwrap();
    w.set_provenance(br#"{"claim_generator":"test"}"#.to_vec());
    for f in &clip.frames {
        w.push_frame(f).unwrap();
    }
    let promised = w.content_sha256().unwrap();
    w.finish().unwrap();

    assert_eq!(read_provenance(&plain).unwrap(), None);
    let p = read_provenance(&signed).unwrap().unwrap();
    assert_eq!(
        (p.manifest.as_slice(), p.intact),
        (&br#"{"claim_generator":"test"}"#[..], true)
    );
    assert_eq!(
        p.sha256, promised,
        "the hash known before finish is the one bound"
    );
    let bytes = std::fs::read(&signed).unwrap();
    assert_eq!(top_level_boxes(&bytes), ["ftyp", "moov", "mdat", "uuid"]);
    // The box changes no frame, and the file without it is the plain file.
    assert_eq!(
        read_video_native(&signed).unwrap(),
        read_video_native(&plain).unwrap()
    );
    let plain_bytes = std::fs::read(&plain).unwrap();
    assert_eq!(&bytes[..plain_bytes.len()], &plain_bytes[..]);
    if on_path("ffprobe") {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(&signed)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "9");
    }

    // One byte of picture data changed: the manifest is still there but no longer vouches.
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    let mut edited = bytes.clone();
    edited[mdat + 40] ^= 0x01;
    let edited_path = dir.path().join("edited.mp4");
    std::fs::write(&edited_path, &edited).unwrap();
    assert!(!read_provenance(&edited_path).unwrap().unwrap().intact);
    // A PNG carries it in text chunks, bound to its pixels.
    let png = dir.path().join("f.png");
    let mut w = VideoWriter::create(&png, 64, 48, 16.0).unwrap();
    w.set_provenance(b"{}".to_vec());
    w.push_frame(&clip.frames[0]).unwrap();
    let promised = w.content_sha256().unwrap();
    w.finish().unwrap();
    let p = read_provenance(&png).unwrap().unwrap();
    assert_eq!((p.manifest.as_slice(), p.intact), (&b"{}"[..], true));
    assert_eq!(p.sha256, promised);
    assert_eq!(read_video_native(&png).unwrap().frames[0], clip.frames[0]);
    // The same chunks over other pixels: the manifest no longer vouches for them.
    let mut other = clip.frames[1].clone();
    other[0] ^= 0xff;
    let forged = dir.path().join("g.png");
    let mut enc = png::Encoder::new(std::fs::File::create(&forged).unwrap(), 64, 48);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let info = png::Decoder::new(std::io::Cursor::new(std::fs::read(&png).unwrap()))
        .read_info()
        .unwrap()
        .info()
        .clone();
    for c in &info.utf8_text {
        enc.add_itxt_chunk(c.keyword.clone(), c.get_text().unwrap())
            .unwrap();
    }
    for c in &info.uncompressed_latin1_text {
        enc.add_text_chunk(c.keyword.clone(), c.text.clone())
            .unwrap();
    }
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&other).unwrap();
    writer.finish().unwrap();
    assert!(!read_provenance(&forged).unwrap().unwrap().intact);
    // A GIF carries it in an application extension after the last frame, bound to the
    // pixels as decoded (after its palette quantisation); one without it has none.
    let plain_gif = dir.path().join("plain.gif");
    write_video(&plain_gif, &clip).unwrap();
    assert_eq!(read_provenance(&plain_gif).unwrap(), None);
    let gif = dir.path().join("f.gif");
    let mut w = VideoWriter::create(&gif, 64, 48, 16.0).unwrap();
    let manifest = "{\"prompt\":\"un ballon rouge — 赤いボール\"}"
        .repeat(20)
        .into_bytes();
    w.set_provenance(manifest.clone());
    for f in &clip.frames {
        w.push_frame(f).unwrap();
    }
    let promised = w.content_sha256().unwrap();
    w.finish().unwrap();
    let p = read_provenance(&gif).unwrap().unwrap();
    assert_eq!(
        (&p.manifest, p.intact),
        (&manifest, true),
        "{} bytes",
        manifest.len()
    );
    assert_eq!(p.sha256, promised);
    assert_eq!(
        read_video_native(&gif).unwrap(),
        read_video_native(&plain_gif).unwrap(),
        "the extension changes no frame"
    );
    // One frame's pixel changed in place (an index byte of the LZW stream is hard to find,
    // so the file is re-made with that frame altered and the original extension).
    let mut altered = clip.clone();
    altered.frames[4][..48 * 3].fill(255);
    let forged = dir.path().join("g.gif");
    write_video(&forged, &altered).unwrap();
    let mut bytes = std::fs::read(&forged).unwrap();
    let original = std::fs::read(&gif).unwrap();
    let ext = original
        .windows(11)
        .position(|w| w == b"TESSERA1PRV")
        .unwrap()
        - 3;
    bytes.pop(); // the trailer
    bytes.extend_from_slice(&original[ext..]);
    std::fs::write(&forged, &bytes).unwrap();
    let p = read_provenance(&forged).unwrap().unwrap();
    assert_eq!(p.manifest, manifest);
    assert!(!p.intact, "altered frames must not pass as the signed ones");
    // Truncated inside the frames: no manifest found, no panic.
    std::fs::write(&forged, &original[..original.len() / 2]).unwrap();
    assert!(matches!(read_provenance(&forged), Ok(None) | Err(_)));
}

#[test]
fn encoding_is_deterministic_and_streaming_matches_batch() {
    let clip = shapes_clip(64, 48, 9, 12.5);
    let a = encode_mp4(&clip).unwrap();
    let b = encode_mp4(&clip).unwrap();
    assert_eq!(a, b, "same frames must give byte-identical MP4s");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamed.mp4");
    let mut w = VideoWriter::create(&path, 64, 48, 12.5).unwrap();
    for f in &clip.frames {
        w.push_frame(f).unwrap();
    }
    assert_eq!(w.frames(), 9);
    w.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), a);
    let back = decode_bytes(&a).unwrap();
    assert_eq!(back.fps, 12.5);
    assert_eq!(top_level_boxes(&a), ["ftyp", "moov", "mdat"]);
}

#[test]
fn dropped_or_failed_writers_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let clip = shapes_clip(32, 32, 3, 16.0);
    for name in ["a.mp4", "a.gif", "a.png", "frames"] {
        let mut w = VideoWriter::create(dir.path().join(name), 32, 32, 16.0).unwrap();
        w.push_frame(&clip.frames[0]).unwrap();
        drop(w);
    }
    // A failed write (PNG with 3 frames) also leaves nothing.
    assert!(matches!(
        write_video(dir.path().join("b.png"), &clip),
        Err(MediaError::PngMultiFrame { frames: 3, .. })
    ));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn gif_png_and_folder_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let clip = shapes_clip(48, 40, 6, 10.0);

    let gif = dir.path().join("clip.gif");
    write_video(&gif, &clip).unwrap();
    let back = read_video_native(&gif).unwrap();
    assert_eq!((back.width, back.height, back.frames.len()), (48, 40, 6));
    assert!((back.fps - 10.0).abs() < 1e-9, "gif fps {}", back.fps);
    let p = psnr(&clip, &back).unwrap();
    println!("GIF round trip PSNR {p:.2} dB (256-colour palette)");
    assert!(p >= 28.0, "GIF PSNR {p:.2}");

    let folder = dir.path().join("frames");
    write_video(&folder, &clip).unwrap();
    assert!(folder.join("frame_00005.png").is_file());
    let back = read_video_native(&folder).unwrap();
    assert_eq!(back.frames, clip.frames, "PNG frames are lossless");
    assert_eq!(back.fps, FOLDER_FPS);
    // Writing into an existing directory replaces frames in place.
    write_video(&folder, &clip).unwrap();
    assert_eq!(read_video_native(&folder).unwrap().frames.len(), 6);

    let one = Video {
        frames: vec![clip.frames[2].clone()],
        ..clip.clone()
    };
    let png = dir.path().join("one.png");
    write_video(&png, &one).unwrap();
    assert_eq!(read_video_native(&png).unwrap().frames, one.frames);
}

// ---------------------------------------------------------------------------------------------
// Fixtures made by Debian ffmpeg
// ---------------------------------------------------------------------------------------------

/// (file, source strip, frames, fps, minimum PSNR vs source in dB). Thresholds sit ~1 dB under
/// what we measure; ffmpeg's own decoder scores within 0.1 dB of us on each (the loss is
/// libx264 at crf 18-23 plus 4:2:0 chroma on testsrc2's saturated edges).
const FIXTURES: [(&str, &str, usize, f64, f64); 7] = [
    (
        "baseline_176x144.mp4",
        "src_176x144.png",
        17,
        30000.0 / 1001.0,
        33.5,
    ),
    (
        "main_bframes_176x144.mp4",
        "src_176x144.png",
        17,
        24.0,
        33.5,
    ),
    ("high_176x144.mp4", "src_176x144.png", 17, 16.0, 34.0),
    ("high_640x272.mp4", "src_640x272.png", 9, 16.0, 34.0),
    ("baseline_98x54.mp4", "src_98x54.png", 17, 16.0, 32.5),
    ("fragmented_176x144.mp4", "src_176x144.png", 17, 16.0, 34.0),
    ("quicktime_64x48.mov", "src_64x48.png", 10, 16.0, 32.0),
];

#[test]
fn ffmpeg_fixtures_decode_with_right_count_and_psnr() {
    for (file, src, n, fps, min_psnr) in FIXTURES {
        let source = strip(src, n, fps);
        let v = read_video_native(fx(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((v.width, v.height), (source.width, source.height), "{file}");
        assert_eq!(v.frames.len(), n, "{file}: frame count");
        assert!((v.fps - fps).abs() < 1e-6, "{file}: fps {} vs {fps}", v.fps);
        let p = psnr(&v, &source).unwrap();
        // Presentation order: each frame must match its own source frame best.
        for (i, frame) in v.frames.iter().enumerate() {
            let own = psnr_frame(frame, &source.frames[i]).unwrap();
            for j in [i.wrapping_sub(1), i + 1] {
                // Only where the source itself changes between the two frames.
                let Some(other) = source.frames.get(j) else {
                    continue;
                };
                if psnr_frame(&source.frames[i], other).unwrap() < own {
                    assert!(
                        own > psnr_frame(frame, other).unwrap(),
                        "{file}: frame {i} out of order"
                    );
                }
            }
        }
        println!(
            "{file}: {}x{} {n} frames @ {:.3} fps, PSNR {p:.2} dB (min {min_psnr})",
            v.width, v.height, v.fps
        );
        assert!(p >= min_psnr, "{file}: PSNR {p:.2} < {min_psnr}");
    }
}

#[test]
fn image_and_gif_fixtures() {
    let source = strip("src_176x144.png", 17, 16.0);
    let png = read_video_native(fx("still_176x144.png")).unwrap();
    assert_eq!(png.frames, vec![source.frames[0].clone()]);
    let jpg = read_video_native(fx("still_176x144.jpg")).unwrap();
    let p = psnr_frame(&jpg.frames[0], &source.frames[0]).unwrap();
    println!("still_176x144.jpg: PSNR {p:.2} dB");
    assert!(p >= 28.0);
    let gif = read_video_native(fx("anim_64x48.gif")).unwrap();
    let src = strip("src_64x48.png", 10, 16.0);
    assert_eq!(gif.frames.len(), 10);
    assert_eq!(gif.frames, src.frames, "this GIF's palette is lossless");
    // GIF delays are 1/100 s: 6 cs per frame is 16.67 fps, ffmpeg alternates 6 and 7.
    assert!((gif.fps - 16.0).abs() < 0.7, "gif fps {}", gif.fps);
}

#[test]
fn fit_brings_a_fixture_to_training_shape() {
    let v = read_video_native(fx("high_640x272.mp4")).unwrap();
    let f = fit(&v, 64, 64, 8.0).unwrap();
    assert_eq!((f.width, f.height, f.frames.len(), f.fps), (64, 64, 5, 8.0));
    let r = resample_fps(&v, 32.0).unwrap();
    assert_eq!(r.frames.len(), 17);
    assert_eq!(r.frames[2], v.frames[1]);
}

#[test]
fn other_codecs_go_through_ffmpeg_when_present() {
    let native = read_video_native(fx("mpeg4_part2_64x48.mp4"));
    match native {
        Err(MediaError::UnsupportedCodec { codec, .. }) => {
            assert!(codec.contains("mp4v"), "{codec}")
        }
        other => panic!("expected UnsupportedCodec, got {other:?}"),
    }
    let webm = read_video_native(fx("vp8_64x48.webm"));
    assert!(
        matches!(webm, Err(MediaError::UnsupportedFormat { .. })),
        "{webm:?}"
    );
    let msg = webm.unwrap_err().to_string();
    assert!(
        msg.contains("H.264") && msg.contains("GIF") && msg.contains("ffmpeg"),
        "{msg}"
    );
    if !ffmpeg_available() {
        println!("note: ffmpeg not on PATH, skipping the ffmpeg fallback check");
        return;
    }
    let src = strip("src_64x48.png", 10, 16.0);
    for file in ["mpeg4_part2_64x48.mp4", "vp8_64x48.webm"] {
        let v = read_video(fx(file)).unwrap();
        assert_eq!(
            (v.width, v.height, v.frames.len(), v.fps),
            (64, 48, 10, 16.0),
            "{file}"
        );
        let p = psnr(&v, &src).unwrap();
        println!("{file} via ffmpeg: PSNR {p:.2} dB");
        assert!(p >= 25.0, "{file}: {p:.2}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: each case has its own error variant
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_inputs_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(fx("high_176x144.mp4")).unwrap();

    let r = read_video(d.join("missing.mp4"));
    assert!(matches!(r, Err(MediaError::NotFound { .. })), "{r:?}");

    std::fs::write(d.join("empty.mp4"), b"").unwrap();
    let r = read_video(d.join("empty.mp4"));
    assert!(matches!(r, Err(MediaError::EmptyFile { .. })), "{r:?}");

    std::fs::write(d.join("notes.mp4"), "this is not a video\nat all\n").unwrap();
    let r = read_video(d.join("notes.mp4"));
    assert!(matches!(r, Err(MediaError::TextFile { .. })), "{r:?}");

    // Cut inside mdat (the fixture is faststart, so moov survives).
    std::fs::write(d.join("cut.mp4"), &good[..good.len() * 2 / 3]).unwrap();
    let r = read_video(d.join("cut.mp4"));
    assert!(matches!(r, Err(MediaError::TruncatedMp4 { .. })), "{r:?}");
    // Cut inside moov.
    let r = decode_bytes(&good[..600]);
    assert!(matches!(r, Err(MediaError::TruncatedMp4 { .. })), "{r:?}");

    // stsz claiming more samples than the file can hold.
    let mut bad = good.clone();
    let at = bad.windows(4).position(|w| w == b"stsz").unwrap();
    bad[at + 12..at + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    let r = decode_bytes(&bad);
    assert!(matches!(r, Err(MediaError::CorruptMp4 { .. })), "{r:?}");

    let r = read_video_native(fx("mpeg4_part2_64x48.mp4"));
    assert!(
        matches!(r, Err(MediaError::UnsupportedCodec { .. })),
        "{r:?}"
    );
    // H.264 profiles openh264 cannot decode are caught from the SPS, before decoding.
    for (file, what) in [
        ("high10_64x48.mp4", "10-bit"),
        ("high444_64x48.mp4", "4:4:4"),
    ] {
        match read_video_native(fx(file)) {
            Err(MediaError::UnsupportedCodec { codec, .. }) => {
                assert!(codec.contains(what), "{codec}")
            }
            other => panic!("{file}: expected UnsupportedCodec, got {other:?}"),
        }
    }

    // A GIF header declaring 65535x65535 is refused before any pixel buffer exists.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x3b]);
    let r = decode_bytes(&gif);
    assert!(
        matches!(r, Err(MediaError::InvalidSize { width: 65535, .. })),
        "{r:?}"
    );

    for (w, h) in [(0, 0), (100_000, 100_000), (8193, 16)] {
        let r = VideoWriter::create(d.join("x.mp4"), w, h, 16.0);
        assert!(matches!(r, Err(MediaError::InvalidSize { .. })), "{w}x{h}");
    }
    let r = VideoWriter::create(d.join("odd.mp4"), 65, 33, 16.0);
    assert!(
        matches!(
            r,
            Err(MediaError::OddSize {
                even_w: 66,
                even_h: 34,
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    let r = VideoWriter::create(d.join("x.mp4"), 64, 64, f64::NAN);
    assert!(matches!(r, Err(MediaError::InvalidFps { .. })));
    let r = VideoWriter::create(d.join("x.avi"), 64, 64, 16.0);
    assert!(matches!(r, Err(MediaError::UnsupportedOutput { .. })));
    let mut w = VideoWriter::create(d.join("x.mp4"), 64, 64, 16.0).unwrap();
    let r = w.push_frame(&[0; 10]);
    assert!(matches!(
        r,
        Err(MediaError::FrameSize {
            expected: 12288,
            got: 10,
            ..
        })
    ));
    drop(w);
    let r = write_video(d.join("none.mp4"), &Video::new(8, 8, 16.0));
    assert!(matches!(r, Err(MediaError::NoFrames)));

    std::fs::create_dir(d.join("nothing")).unwrap();
    let r = read_video(d.join("nothing"));
    assert!(matches!(r, Err(MediaError::EmptyFolder { .. })));

    let a = shapes_clip(8, 8, 2, 16.0);
    let b = shapes_clip(8, 8, 3, 16.0);
    assert!(matches!(
        psnr(&a, &b),
        Err(MediaError::ShapeMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Fuzz: mutated fixtures must give Ok or a typed error, never a panic
// ---------------------------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = base.to_vec();
    // Headers (ftyp/moov, SPS/PPS) live in the first ~1.5 KB: aim half the edits there.
    let pick = |rng: &mut Rng, len: usize| {
        if rng.below(2) == 0 {
            rng.below(len.min(1500))
        } else {
            rng.below(len)
        }
    };
    match rng.below(6) {
        0 => d.truncate(rng.below(base.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = pick(rng, d.len());
                d[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            for _ in 0..1 + rng.below(4) {
                let i = pick(rng, d.len());
                d[i] = [0, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
        }
        3 => {
            // A 32-bit field (box size, count, offset) set to something extreme.
            let i = pick(rng, d.len().saturating_sub(4));
            let v = [0u32, 1, 7, 8, 0x7fff_ffff, u32::MAX, rng.next() as u32][rng.below(7)];
            d[i..i + 4].copy_from_slice(&v.to_be_bytes());
        }
        4 => {
            let a = pick(rng, d.len());
            let b = (a + 1 + rng.below(256)).min(d.len());
            d.drain(a..b);
        }
        _ => {
            let a = pick(rng, d.len());
            let junk: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
            d.splice(a..a, junk);
        }
    }
    d
}

#[test]
fn fuzz_mutated_fixtures_never_panic() {
    let cases: usize = std::env::var("TESSERA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut bases: Vec<(String, Vec<u8>)> = [
        "baseline_176x144.mp4",
        "main_bframes_176x144.mp4",
        "high_176x144.mp4",
        "baseline_98x54.mp4",
        "fragmented_176x144.mp4",
        "quicktime_64x48.mov",
        "mpeg4_part2_64x48.mp4",
        "high10_64x48.mp4",
        "anim_64x48.gif",
        "still_176x144.png",
        "still_176x144.jpg",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(fx(f)).unwrap()))
    .collect();
    bases.push((
        "ours_64x48.mp4".into(),
        encode_mp4(&shapes_clip(64, 48, 5, 16.0)).unwrap(),
    ));

    let start = Instant::now();
    let (mut ok, mut errs) = (0usize, std::collections::BTreeMap::<String, usize>::new());
    let seed = std::env::var("TESSERA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001u64);
    let mut rng = Rng(seed | 1);
    for case in 0..cases {
        let (name, base) = &bases[case % bases.len()];
        let input = mutate(base, &mut rng);
        match catch_unwind(AssertUnwindSafe(|| decode_bytes(&input))) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                let kind = format!("{e:?}");
                let kind = kind.split([' ', '{', '(']).next().unwrap_or("").to_string();
                *errs.entry(kind).or_default() += 1;
            }
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("tessera-fuzz-panic-{case}.bin"));
                std::fs::write(&keep, &input).unwrap();
                panic!(
                    "case {case} (mutated {name}) panicked; input saved to {}",
                    keep.display()
                );
            }
        }
    }
    println!(
        "fuzz: {cases} cases in {:.1} s, {ok} decoded, errors by kind {errs:?}",
        start.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// External checks: ffprobe and a real browser
// ---------------------------------------------------------------------------------------------

#[test]
fn ffprobe_accepts_our_mp4() {
    if !on_path("ffprobe") {
        println!("note: ffprobe not on PATH (apt-get install ffmpeg), skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.mp4");
    write_video(&path, &shapes_clip(64, 64, 33, 16.0)).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
        ])
        .args([
            "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames:format=duration",
        ])
        .args(["-of", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe warned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &j["streams"][0];
    println!("ffprobe: {s} duration {}", j["format"]["duration"]);
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(s["pix_fmt"], "yuv420p");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(64), Some(64))
    );
    assert_eq!(s["r_frame_rate"], "16/1");
    assert_eq!(s["nb_read_frames"], "33");
    let duration: f64 = j["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 33.0 / 16.0).abs() < 1e-3, "duration {duration}");
    let boxes = top_level_boxes(&std::fs::read(&path).unwrap());
    let pos = |k: &str| boxes.iter().position(|b| b == k).unwrap();
    assert!(pos("moov") < pos("mdat"), "faststart: {boxes:?}");
}

/// Serves `dir` over HTTP on a free port until `stop` passes; the browser needs http:// so the
/// canvas read-back is same-origin.
fn serve(dir: PathBuf, deadline: Instant) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let name = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let (body, ctype) = match std::fs::read(dir.join(name)) {
                Ok(b) if name.ends_with(".mp4") => (b, "video/mp4"),
                Ok(b) => (b, "text/html"),
                Err(_) => (b"not found".to_vec(), "text/plain"),
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

#[test]
fn headless_chromium_plays_our_mp4() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        println!("note: /usr/bin/chromium absent (apt-get install chromium), skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = shapes_clip(128, 96, 33, 16.0);
    write_video(dir.path().join("clip.mp4"), &clip).unwrap();
    // After the first frame is decoded, read back a pixel through a canvas and report it with
    // size, duration and readyState in the title.
    let html = r#"<!doctype html><html><head><title>pending</title></head><body>
<video id="v" src="clip.mp4" muted playsinline preload="auto"></video><canvas id="c" width="128" height="96"></canvas>
<script>
const v = document.getElementById('v');
v.addEventListener('error', () => { document.title = 'error ' + (v.error && v.error.code); });
v.addEventListener('loadeddata', () => {
  const c = document.getElementById('c').getContext('2d');
  c.drawImage(v, 0, 0);
  const p = c.getImageData(26, 29, 1, 1).data;
  document.title = ['ok', v.videoWidth, v.videoHeight, v.duration, v.readyState, p[0], p[1], p[2]].join(' ');
});
</script></body></html>"#;
    std::fs::write(dir.path().join("index.html"), html).unwrap();
    let port = serve(
        dir.path().to_path_buf(),
        Instant::now() + Duration::from_secs(60),
    );
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or("")
        .to_string();
    println!("chromium title: {title:?}");
    let f: Vec<&str> = title.split(' ').collect();
    assert_eq!(
        f.first(),
        Some(&"ok"),
        "chromium did not decode: {title:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!((f[1], f[2]), ("128", "96"));
    let duration: f64 = f[3].parse().unwrap();
    assert!((duration - 33.0 / 16.0).abs() < 0.01, "duration {duration}");
    assert!(f[4].parse::<u32>().unwrap() >= 2, "readyState {}", f[4]);
    // The pixel the browser drew matches our first frame (the red circle's centre region).
    let i = ((29 * 128 + 26) * 3) as usize;
    for c in 0..3 {
        let got: i32 = f[5 + c].parse().unwrap();
        let want = clip.frames[0][i + c] as i32;
        assert!(
            (got - want).abs() <= 24,
            "channel {c}: browser {got} vs source {want}"
        );
    }
}

#[cfg(unix)]
#[test]
fn outputs_are_readable_by_others_not_private_temp_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut v = tessera_media::Video::new(16, 16, 8.0);
    v.frames.push(vec![128; 16 * 16 * 3]);
    for name in ["a.mp4", "a.gif", "a.png"] {
        let path = dir.path().join(name);
        tessera_media::write_video(&path, &v).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{name} has mode {mode:o}");
    }
}
