//! `tessera vae roundtrip`: inputs are fitted to the VAE's own factors, not Wan's.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_media::{write_video, Video};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Smooth colour ramps, so a VAE's round trip is close but not exact.
fn ramps(frames: usize, w: u32, h: u32) -> Video {
    let mut v = Video::new(w, h, 16.0);
    for f in 0..frames {
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                rgb.extend([(x * 6 + f as u32) as u8, (y * 10) as u8, 128]);
            }
        }
        v.frames.push(rgb);
    }
    v
}

fn roundtrip(input: &Path, out: &Path, model: &Path) -> (serde_json::Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["vae", "roundtrip"])
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--model")
        .arg(model)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (serde_json::from_slice(&o.stdout).unwrap(), stderr)
}

#[test]
fn roundtrip_trims_and_crops_to_the_vaes_factors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_video(&input, &ramps(11, 38, 22)).unwrap();
    // The default model's VAE: 4× space, 2× time, so 11 frames stay and the sides are cropped.
    let (j, note) = roundtrip(
        &input,
        &dir.path().join("a.mp4"),
        &repo().join("models/tessera-shapes-tiny"),
    );
    assert_eq!(
        (&j["frames"], &j["width"], &j["height"]),
        (&11.into(), &36.into(), &20.into())
    );
    assert!(
        note.contains("2k+1") && note.contains("divisible by 4"),
        "{note}"
    );
    assert!(j["psnr_db"].as_f64().unwrap() > 15.0, "{j}");
    // A 4×-time VAE drops the two frames past 4k+1.
    let (j, note) = roundtrip(
        &input,
        &dir.path().join("b.mp4"),
        &repo().join("models/candidates/vae-s4"),
    );
    assert_eq!(
        (&j["frames"], &j["width"], &j["height"]),
        (&9.into(), &36.into(), &20.into())
    );
    assert!(note.contains("4k+1"), "{note}");
    let back = tessera_media::read_video(dir.path().join("b.mp4")).unwrap();
    assert_eq!((back.width, back.height, back.frames.len()), (36, 20, 9));
}
