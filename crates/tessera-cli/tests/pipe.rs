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
