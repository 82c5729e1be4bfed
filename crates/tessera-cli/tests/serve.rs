//! `tessera serve` as a process: the shipped model behind a real socket, a client over HTTP,
//! and Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Serving {
    child: Child,
    url: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &std::path::Path, keys: &str) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--addr", "127.0.0.1:0", "--json", "--data"])
        .arg(data)
        .env("TESSERA_API_KEYS", keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["model"], "tessera-shapes-tiny");
    Serving {
        child,
        url: v["url"].as_str().unwrap().to_string(),
    }
}

#[test]
fn a_client_gets_a_video_over_http_and_ctrl_c_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(dir.path(), "sk-a,sk-b");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |key: &str, body: serde_json::Value| {
        agent
            .post(format!("{}/v1/videos", s.url))
            .header("Authorization", format!("Bearer {key}"))
            .send_json(body)
            .unwrap()
    };
    let res = post("sk-wrong", serde_json::json!({"prompt": "a red ball"}));
    assert_eq!(res.status(), 401);
    let mut res = post(
        "sk-b",
        serde_json::json!({"prompt": "a red ball bounces across a blue floor", "seconds": "1", "model": "sora-2"}),
    );
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.body_mut().read_json().unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let mut res = agent
            .get(format!("{}/v1/videos/{id}", s.url))
            .header("Authorization", "Bearer sk-a")
            .call()
            .unwrap();
        let v: serde_json::Value = res.body_mut().read_json().unwrap();
        if v["status"] == "completed" {
            break;
        }
        assert_ne!(v["status"], "failed", "{v}");
        assert!(start.elapsed() < Duration::from_secs(120), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut res = agent
        .get(format!("{}/v1/videos/{id}/content?api_key=sk-a", s.url))
        .call()
        .unwrap();
    assert_eq!(res.status(), 200);
    let mp4 = res.body_mut().read_to_vec().unwrap();
    let video = tessera_media::decode_bytes(&mp4).unwrap();
    assert_eq!(
        (video.frames.len(), video.width, video.height),
        (17, 64, 64)
    );

    // Ctrl-C: the server stops listening and exits cleanly.
    #[cfg(unix)]
    {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "still running after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
    }
    assert!(dir.path().join("jobs.sqlite").is_file());
}

/// `tessera serve` with `args` and a fresh data folder, expected to fail before it serves:
/// returns its stderr, after checking that nothing claimed to serve and no data was written.
fn serve_refuses(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing may claim to be serving");
    assert!(
        !dir.path().join("data").exists(),
        "refused before anything opened"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bad_model_folder_fails_before_the_port_opens() {
    let stderr = serve_refuses(&["--model", "/nonexistent/tessera-model"]);
    assert!(
        stderr.contains("model folder") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_cors_origin_is_refused_with_the_form_it_needs() {
    let stderr = serve_refuses(&["--cors-origin", "localhost:5173/"]);
    assert!(
        stderr.contains("--cors-origin") && stderr.contains("e.g. http://localhost:5173"),
        "{stderr}"
    );
}
