//! The loader against a generated dataset and against broken ones.

use std::fs;
use std::path::Path;

use tessera_data::{ClipSpec, DataError, Dataset, ShortClip, Window};
use tessera_world::{generate_clip, sample_dataset, SampleOptions, Selection, Split};

fn world(dir: &Path, count: usize) -> SampleOptions {
    let opts = SampleOptions {
        count,
        frames: 17,
        seed: 5,
        split: Split::Val,
        ..Default::default()
    };
    sample_dataset(&opts, &Selection::default(), dir, |_| {}).expect("sample a world dataset");
    opts
}

#[test]
fn streams_world_clips_at_the_requested_shape() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = world(dir.path(), 3);
    let ds = Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.len(), 3);

    // Same size and rate: the clip comes back as rendered (up to H.264 loss).
    let same = ClipSpec::new(17, 64, 64, 16.0);
    let samples: Vec<_> = ds
        .clips(&same)
        .expect("spec")
        .collect::<Result<_, _>>()
        .expect("load");
    assert_eq!(samples.len(), 3);
    for (i, s) in samples.iter().enumerate() {
        let clip = generate_clip(&opts, i as u64).expect("clip");
        assert_eq!(s.caption, clip.caption);
        assert_eq!(s.short_caption, clip.short_caption);
        assert_eq!(s.index, i);
        let psnr = tessera_media::psnr(&clip.video, &s.frames).expect("same shape");
        assert!(psnr > 30.0, "clip {i}: {psnr:.1} dB");
    }

    // Half the rate, smaller, and longer than the source (9 frames at 8 fps from 17 at 16 fps
    // is exactly the whole clip; 13 needs 4 held frames).
    for (frames, short) in [
        (9, ShortClip::HoldLast),
        (13, ShortClip::HoldLast),
        (13, ShortClip::Loop),
    ] {
        let spec = ClipSpec {
            short,
            ..ClipSpec::new(frames, 32, 32, 8.0)
        };
        let s = ds
            .clips(&spec)
            .expect("spec")
            .next()
            .expect("one")
            .expect("load");
        assert_eq!((s.frames.width, s.frames.height), (32, 32));
        assert_eq!(s.frames.frames.len(), frames as usize);
        assert_eq!(s.frames.fps, 8.0);
        if frames == 13 {
            let f = &s.frames.frames;
            match short {
                ShortClip::HoldLast => assert_eq!(f[12], f[8]),
                ShortClip::Loop => assert_eq!(f[9], f[0]),
            }
        }
    }

    // A random window of 5 frames is one contiguous run of the full clip, the same each time.
    let full = ds.load(1, &ClipSpec::new(17, 64, 64, 16.0)).expect("full");
    let spec = ClipSpec {
        window: Window::Random { seed: 9 },
        ..ClipSpec::new(5, 64, 64, 16.0)
    };
    let a = ds.load(1, &spec).expect("window");
    assert_eq!(a, ds.load(1, &spec).expect("window"));
    let start = (0..=12)
        .find(|&k| full.frames.frames[k] == a.frames.frames[0])
        .expect("window start is a frame of the clip");
    assert_eq!(a.frames.frames[..], full.frames.frames[start..start + 5]);
    assert!(matches!(
        ds.load(3, &spec),
        Err(DataError::Index { index: 3, len: 3 })
    ));
}

#[test]
fn bad_specs_are_rejected_before_reading() {
    let dir = tempfile::tempdir().expect("tmp");
    world(dir.path(), 1);
    let ds = Dataset::open(dir.path()).expect("open");
    let err = ds
        .clips(&ClipSpec::new(16, 64, 64, 16.0))
        .expect_err("16 frames is not 4k+1");
    assert!(err.to_string().contains("13 or 17"), "{err}");
}

#[test]
fn missing_captions_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let err = Dataset::open(dir.path()).expect_err("no captions.jsonl");
    assert!(matches!(err, DataError::MissingCaptions { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("captions.jsonl") && msg.contains("tessera world sample"),
        "{msg}"
    );
}

#[test]
fn malformed_line_reports_its_number() {
    let dir = tempfile::tempdir().expect("tmp");
    world(dir.path(), 3);
    let path = dir.path().join("captions.jsonl");
    let text = fs::read_to_string(&path).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"video\": \"videos/x.mp4\", \"caption\": ";
    fs::write(&path, lines.join("\n")).expect("write");
    let err = Dataset::open(dir.path()).expect_err("line 3 is cut short");
    assert!(matches!(err, DataError::BadLine { line: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("line 3"), "{err}");

    // A line that is JSON but lacks the caption field is also reported by number.
    lines[2] = "{\"video\": \"videos/x.mp4\"}";
    fs::write(&path, lines.join("\n")).expect("write");
    let err = Dataset::open(dir.path()).expect_err("no caption field");
    assert!(matches!(err, DataError::BadLine { line: 3, .. }), "{err:?}");
}

#[test]
fn missing_or_broken_videos() {
    let dir = tempfile::tempdir().expect("tmp");
    fs::write(
        dir.path().join("captions.jsonl"),
        "\n{\"video\": \"clips/gone.mp4\", \"caption\": \"a red ball\"}\n",
    )
    .expect("write");
    let err = Dataset::open(dir.path()).expect_err("video missing");
    assert!(
        matches!(err, DataError::MissingVideo { line: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("gone.mp4"), "{err}");

    // Present but not a video: found at open, reported with its path when loaded.
    fs::create_dir_all(dir.path().join("clips")).expect("mkdir");
    fs::write(dir.path().join("clips/gone.mp4"), "just some text").expect("write");
    let ds = Dataset::open(dir.path()).expect("open");
    assert_eq!(ds.entries()[0].short_caption, "a red ball");
    let err = ds
        .clips(&ClipSpec::new(5, 32, 32, 8.0))
        .expect("spec")
        .next()
        .expect("one entry")
        .expect_err("text is not a video");
    assert!(matches!(err, DataError::Media { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("gone.mp4"), "{err}");

    fs::write(dir.path().join("captions.jsonl"), "\n\n").expect("write");
    assert!(matches!(
        Dataset::open(dir.path()),
        Err(DataError::Empty { .. })
    ));
}
