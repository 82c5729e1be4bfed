//! The binary's behaviour at the process edge.

use std::process::{Command, Stdio};

/// `tessera … --json | head` closes stdout early: the process ends without a panic message.
#[cfg(unix)]
#[test]
fn closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "world", "sample", "--split", "val", "--count", "2", "--json", "-o",
        ])
        .arg(dir.path().join("world"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the clips are rendered and the summary is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        dir.path().join("world/captions.jsonl").is_file(),
        "the files are written before anything is printed"
    );
}

/// A GPU asked of a CPU-only build is refused before any work, naming the build that has it.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_without_a_cuda_build_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ball.mp4");
    for args in [
        vec!["generate", "a red ball", "--device", "cuda", "-o"],
        vec![
            "train", "dit", "--vae", "none", "--device", "cuda:1", "--out",
        ],
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert!(
            stderr.contains("built without CUDA") && stderr.contains("--features tessera-cli/cuda"),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "nothing written");
    }
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["generate", "a red ball", "--device", "tpu", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&run.stderr).contains("use cpu, cuda or cuda:N"));
}

/// `generate` marks what it makes and `detect` finds it, with the manifest naming the prompt
/// and signed by the key it was given; a shapes-world clip (never generated) has neither.
#[test]
fn detect_finds_the_mark_and_manifest_of_generated_video_only() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let key = dir.path().join("key");
    let out = Command::new(tessera)
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let public = printed
        .split("public key ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let made = dir.path().join("made.mp4");
    let status = Command::new(tessera)
        .args([
            "generate",
            "a red ball bounces",
            "--frames",
            "9",
            "--json",
            "-o",
        ])
        .arg(&made)
        .env("TESSERA_SIGNING_KEY", &key)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let image = dir.path().join("image.png");
    let status = Command::new(tessera)
        .args(["generate", "a blue star", "--frames", "1", "--json", "-o"])
        .arg(&image)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let world = dir.path().join("world");
    let status = Command::new(tessera)
        .args([
            "world", "sample", "--split", "val", "--count", "1", "--json", "-o",
        ])
        .arg(&world)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let real = world.join("videos/val-0-000000.mp4");
    // Someone upscales the image to share it: the manifest is gone, the mark is found.
    let big = dir.path().join("big.png");
    let img = image::open(&image).unwrap();
    img.resize_exact(144, 144, image::imageops::FilterType::Triangle)
        .save(&big)
        .unwrap();
    let out = Command::new(tessera)
        .args(["detect", "--json"])
        .args([&made, &real, &image, &big])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 4);
    assert_eq!(reports[3]["watermark"]["detected"], true, "{}", reports[3]);
    assert_eq!(reports[3]["watermark"]["size"], serde_json::json!([64, 64]));
    assert_eq!(reports[3]["size"], serde_json::json!([144, 144]));
    assert!(reports[3]["provenance"].is_null());
    assert_eq!(reports[2]["watermark"]["size"], serde_json::json!([64, 64]));
    assert_eq!(reports[2]["watermark"]["detected"], true, "{}", reports[2]);
    assert_eq!(reports[2]["provenance_intact"], true);
    assert_eq!(reports[0]["watermark"]["detected"], true, "{}", reports[0]);
    assert_eq!(reports[0]["provenance_intact"], true);
    assert_eq!(
        reports[0]["signature"],
        serde_json::json!({"public_key": public, "valid": true})
    );
    assert!(reports[2]["signature"].is_null(), "made without a key");
    assert_eq!(
        reports[0]["provenance"]["assertions"][1]["data"]["prompt"],
        "a red ball bounces"
    );
    assert_eq!(reports[1]["watermark"]["detected"], false, "{}", reports[1]);
    assert!(reports[1]["provenance"].is_null());
}

/// A bad input is named once: a library error that already quotes its source is not followed
/// by the source again.
#[test]
fn an_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.png");
    std::fs::write(&notes, "hi\n").unwrap();
    let out = dir.path().join("out.mp4");
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["extend"])
        .arg(&notes)
        .args(["--prompt", "a red ball", "--forward", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(stderr.matches("this is a text file").count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

/// `world sample --count 0` is refused rather than writing an empty dataset.
#[test]
fn an_empty_world_sample_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["world", "sample", "--count", "0", "-o"])
        .arg(dir.path().join("w"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--count"), "{stderr}");
    assert!(!dir.path().join("w").exists());
}
