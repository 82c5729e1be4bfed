//! The API end to end over the router (no socket), with a seeded random tiny model: what a
//! client sends, what it gets back, and what is on disk afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use http_body_util::BodyExt;
use serde_json::Value;
use tessera_pipeline::Model;
use tessera_server::{router, Config, Job, Order, Record, Server, Source, Status, Store};
use tower::ServiceExt;

struct Harness {
    app: Router,
    server: Arc<Server>,
    worker: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::in_dir(dir, configure)
    }

    fn in_dir(dir: tempfile::TempDir, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(dir.path());
        configure(&mut config);
        let (server, worker) = Server::start(Model::random_tiny(7).unwrap(), config).unwrap();
        Self {
            app: router(server.clone()),
            server,
            worker: Some(worker),
            dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body, headers)
    }

    async fn json(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, body, _) = self.send(req).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.json(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// Polls until the video leaves the queue.
    async fn wait(&self, id: &str) -> Value {
        let start = Instant::now();
        loop {
            let (status, v) = self.get(&format!("/v1/videos/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            if v["status"] == "completed" || v["status"] == "failed" {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{id} never finished: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queues half a second of video from `prompt` in `steps` steps; returns the Video object.
    async fn short(&self, prompt: &str, steps: &str) -> Value {
        let fields = [("prompt", prompt), ("seconds", "0.5"), ("steps", steps)];
        let (status, v) = self.json(multipart("/v1/videos", &fields, &[])).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    fn stop(&mut self) {
        self.server.stop();
        if let Some(w) = self.worker.take() {
            w.join().unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A multipart body as the `openai` SDK sends it: text fields, then files.
fn multipart(uri: &str, text: &[(&str, &str)], files: &[(&str, &[u8])]) -> Request<Body> {
    let boundary = "tessera-test-boundary";
    let mut body = Vec::new();
    for (k, v) in text {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (k, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request::post(uri)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

fn json_post(uri: &str, v: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A fast request: a second of video (17 frames) in 2 steps.
const FAST: [(&str, &str); 4] = [
    ("model", "sora-2"),
    ("seconds", "1"),
    ("size", "64x64"),
    ("steps", "2"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_creates_polls_downloads_lists_and_deletes() {
    let h = Harness::new(|_| {});
    let fields: Vec<(&str, &str)> = [("prompt", "a red ball bounces across a blue floor")]
        .into_iter()
        .chain(FAST)
        .collect();
    let (status, body, headers) = h.send(multipart("/v1/videos", &fields, &[])).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(headers["openai-poll-after-ms"], "250");
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("video_"), "{id}");
    assert_eq!(v["object"], "video");
    assert_eq!(v["seconds"], "1");
    assert_eq!(v["size"], "64x64");
    assert_eq!(v["model"], "random-tiny");
    assert!(
        v["status"] == "queued" || v["status"] == "in_progress",
        "{v}"
    );

    let done = h.wait(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_i64().unwrap() >= v["created_at"].as_i64().unwrap());
    assert!(done["error"].is_null());

    let (status, mp4, headers) = h
        .send(
            Request::get(format!("/v1/videos/{id}/content"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "video/mp4");
    assert_eq!(&mp4[4..8], b"ftyp");
    let video = tessera_media::decode_bytes(&mp4).unwrap();
    assert_eq!(
        (video.frames.len(), video.width, video.height),
        (17, 64, 64)
    );

    // Byte ranges, as a browser's <video> asks for them when seeking.
    assert_eq!(headers["accept-ranges"], "bytes");
    let range = |r: &str| {
        Request::get(format!("/v1/videos/{id}/content"))
            .header("range", r)
            .body(Body::empty())
            .unwrap()
    };
    let (status, part, headers) = h.send(range("bytes=0-99")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part, mp4[..100]);
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-99/{}", mp4.len())
    );
    let (status, tail, _) = h.send(range("bytes=-16")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, mp4[mp4.len() - 16..]);
    let (status, _, headers) = h.send(range(&format!("bytes={}-", mp4.len() + 10))).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], format!("bytes */{}", mp4.len()));

    for (variant, width) in [("thumbnail", 64), ("spritesheet", 256)] {
        let (status, png, headers) = h
            .send(
                Request::get(format!("/v1/videos/{id}/content?variant={variant}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{variant}");
        assert_eq!(headers["content-type"], "image/png");
        let img = tessera_media::decode_bytes(&png).unwrap();
        assert_eq!(img.width, width, "{variant}");
    }

    // The same request (same seed) gives the same bytes; JSON works as well as multipart.
    let mut again = serde_json::Map::new();
    for (k, v) in &fields {
        again.insert(k.to_string(), Value::from(*v));
    }
    let (_, second) = h.json(json_post("/v1/videos", Value::Object(again))).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait(&second_id).await["status"], "completed");
    let (_, mp4_again, _) = h
        .send(
            Request::get(format!("/v1/videos/{second_id}/content"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(mp4, mp4_again, "same request, same seed, different video");

    let (_, list) = h.get("/v1/videos?limit=1").await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], second_id.as_str());
    assert_eq!(list["has_more"], true);
    assert_eq!(list["last_id"], second_id.as_str());
    let (_, next) = h
        .get(&format!("/v1/videos?limit=1&after={second_id}"))
        .await;
    assert_eq!(next["data"][0]["id"], id.as_str());
    assert_eq!(next["has_more"], false);

    let (status, del) = h
        .json(
            Request::delete(format!("/v1/videos/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        del,
        serde_json::json!({"id": id, "object": "video.deleted", "deleted": true})
    );
    let (status, err) = h.get(&format!("/v1/videos/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    assert!(!h.server.config.asset(&id, "video").exists());
    assert!(!h.server.config.asset(&id, "thumbnail").exists());
    assert!(h.server.config.asset(&second_id, "video").exists());
}

/// `k=v;k=v` text fields (`@k=v`: a file part holding `v`), the `param` the error names ("" =
/// none checked), and an excerpt of its message.
const BAD: &[(&str, &str, &str)] = &[
    ("seconds=4", "prompt", "missing required parameter `prompt`"),
    ("prompt=  ", "prompt", "`prompt` is empty"),
    ("prompt=a ball;size=65x64", "", "nearest valid size: 64x64"),
    ("prompt=a ball;size=big", "size", "WIDTHxHEIGHT"),
    ("prompt=a ball;seconds=0", "seconds", "above 0"),
    ("prompt=a ball;seconds=600", "seconds", "--max-seconds"),
    ("prompt=a ball;model=gpt-4o", "model", "random-tiny"),
    ("prompt=a ball;steps=0", "", "steps must be at least 1"),
    (
        "prompt=a gory beheading",
        "prompt",
        "content policy (graphic violence: gory, behead)",
    ),
    ("prompt=a ball;seed=-1", "seed", "an integer"),
    (
        "prompt=a ball;@input_reference=hello",
        "input_reference",
        "not a format",
    ),
    (
        "prompt=a ball;input_reference[file_id]=file_1",
        "input_reference",
        "Files API",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_by_name_before_anything_is_queued() {
    let h = Harness::new(|_| {});
    for &(fields, param, message) in BAD {
        let parts: Vec<(&str, &str)> = fields
            .split(';')
            .map(|kv| kv.split_once('=').unwrap())
            .collect();
        let text: Vec<(&str, &str)> = parts
            .iter()
            .copied()
            .filter(|(k, _)| !k.starts_with('@'))
            .collect();
        let files: Vec<(&str, &[u8])> = parts
            .iter()
            .filter_map(|(k, v)| k.strip_prefix('@').map(|k| (k, v.as_bytes())))
            .collect();
        let (status, v) = h.json(multipart("/v1/videos", &text, &files)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text:?}: {v}");
        let err = &v["error"];
        assert_eq!(err["type"], "invalid_request_error");
        if !param.is_empty() {
            assert_eq!(err["param"], param, "{text:?}: {v}");
        }
        let got = err["message"].as_str().unwrap();
        assert!(got.contains(message), "{text:?}: {got}");
    }
    let (_, v) = h
        .json(multipart(
            "/v1/videos",
            &[("prompt", "a gory beheading")],
            &[],
        ))
        .await;
    assert_eq!(v["error"]["code"], "moderation_blocked", "{v}");
    // A good upload in a refused request is not kept.
    let png = {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.png");
        tessera_media::write_video(
            &p,
            &tessera_media::Video {
                width: 16,
                height: 16,
                fps: 1.0,
                frames: vec![vec![9; 16 * 16 * 3]],
            },
        )
        .unwrap();
        std::fs::read(p).unwrap()
    };
    let (status, _) = h
        .json(multipart(
            "/v1/videos",
            &[("prompt", "a ball"), ("size", "65x64")],
            &[("input_reference", &png)],
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .json(multipart(
            "/v1/videos/edits",
            &[("prompt", "a ball"), ("steps", "0")],
            &[("video", &png)],
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A body in no known shape.
    let (status, v) = h
        .json(
            Request::post("/v1/videos")
                .header("content-type", "text/plain")
                .body(Body::from("hi"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid_body");
    // References to videos that do not exist.
    let (status, _) = h
        .json(multipart(
            "/v1/videos/edits",
            &[("prompt", "p"), ("video[id]", "video_nope")],
            &[],
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .json(json_post(
            "/v1/videos/video_nope/remix",
            serde_json::json!({"prompt": "p"}),
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = h
        .json(json_post(
            "/v1/videos/characters",
            serde_json::json!({"name": "x"}),
        ))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let (status, v) = h.get("/v1/nothing").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Nothing was queued or saved.
    let (_, list) = h.get("/v1/videos").await;
    assert_eq!(list["data"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(h.server.config.inputs_dir())
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_fitted_to_the_limit_and_said_so() {
    let h = Harness::new(|c| c.max_pixels = 64 * 64);
    let (status, v) = h
        .json(multipart(
            "/v1/videos",
            &[
                ("prompt", "a ball"),
                ("size", "720x1280"),
                ("seconds", "0.5"),
                ("steps", "1"),
            ],
            &[],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // 720x1280 scaled by sqrt(4096 / 921600) = 0.0667: 48 x 85 → multiples of 16 below.
    assert_eq!(v["size"], "48x80");
    // An extreme aspect: the short side stops at 16, the long one is trimmed to fit.
    let (_, thin) = h
        .json(multipart(
            "/v1/videos",
            &[
                ("prompt", "a ball"),
                ("size", "16x100000"),
                ("seconds", "0.5"),
                ("steps", "1"),
            ],
            &[],
        ))
        .await;
    assert_eq!(thin["size"], "16x256", "{thin}");
    assert!(
        v["notes"][0].as_str().unwrap().contains("--max-pixels"),
        "{v}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    let done = h.wait(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    // An edit keeps its input's size and length unless told otherwise.
    let (status, edit) = h
        .json(multipart(
            "/v1/videos/edits",
            &[
                ("prompt", "a blue ball"),
                ("video[id]", &id),
                ("steps", "1"),
            ],
            &[],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{edit}");
    assert_eq!(
        (edit["size"].as_str(), edit["seconds"].as_str()),
        (Some("48x80"), Some("0.56"))
    );
    let done = h.wait(edit["id"].as_str().unwrap()).await;
    let video =
        tessera_media::read_video(h.server.config.asset(done["id"].as_str().unwrap(), "video"))
            .unwrap();
    assert_eq!((video.width, video.height, video.frames.len()), (48, 80, 9));
    // So does an image → video: its thumbnail as the first frame gives a 48x80 video.
    let png = std::fs::read(h.server.config.asset(&id, "thumbnail")).unwrap();
    let (status, image) = h
        .json(multipart(
            "/v1/videos",
            &[("prompt", "a ball"), ("seconds", "0.5"), ("steps", "1")],
            &[("input_reference", &png)],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{image}");
    assert_eq!(image["size"], "48x80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_key_signs_every_video() {
    let key = tessera_safety::SigningKey::generate();
    let public = key.public_hex();
    let h = Harness::new(|c| c.signing_key = Some(Arc::new(key)));
    let v = h.short("a ball", "1").await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait(&id).await["status"], "completed");
    let p = tessera_media::read_provenance(h.server.config.asset(&id, "video"))
        .unwrap()
        .unwrap();
    let m: Value = serde_json::from_slice(&p.manifest).unwrap();
    assert_eq!(
        tessera_safety::verify(&m),
        Some(tessera_safety::Verified {
            public_key: public,
            valid: true
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_review_decides_what_clients_get() {
    // Refuses prompts that mention green, after generation (a stand-in for a classifier).
    let h = Harness::new(|c| {
        c.review_command = Some(
            "case \"$TESSERA_PROMPT\" in *green*) echo 'green found'; exit 1;; esac; test -s"
                .into(),
        )
    });
    let mut ids = Vec::new();
    for prompt in ["a red ball", "a green ball"] {
        let v = h.short(prompt, "1").await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(h.wait(&ids[0]).await["status"], "completed");
    let refused = h.wait(&ids[1]).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert_eq!(refused["error"]["code"], "moderation_blocked");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("green found"),
        "{refused}"
    );
    assert!(!h.server.config.asset(&ids[1], "video").exists());
    let (status, _) = h.get(&format!("/v1/videos/{}/content", ids[1])).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let names: Vec<String> = std::fs::read_dir(h.server.config.videos_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with(&ids[0])), "{names:?}");
}

/// Reads one HTTP request from `listener`, answers 200, returns (headers, body).
fn receive_one(listener: std::net::TcpListener) -> (Vec<(String, String)>, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let (stream, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    (headers, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hears_of_each_finished_video_signed_the_standard_way() {
    use base64::Engine;
    use hmac::Mac;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let key = b"a test webhook key";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let receiver = std::thread::spawn(move || receive_one(listener));
    let h =
        Harness::new(|c| c.webhook = Some(tessera_server::Webhook::new(&url, &secret).unwrap()));
    let v = h.short("a ball", "1").await;
    let id = v["id"].as_str().unwrap().to_string();
    h.wait(&id).await;
    let (headers, body) = tokio::task::spawn_blocking(move || receiver.join().unwrap())
        .await
        .unwrap();
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["data"]["id"].as_str()),
        (Some("video.completed"), Some(id.as_str()))
    );
    assert_eq!(event["id"].as_str().unwrap(), header("webhook-id"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            header("webhook-id"),
            header("webhook-timestamp"),
            body
        )
        .as_bytes(),
    );
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(header("webhook-signature"), format!("v1,{expected}"));
    assert!(tessera_server::Webhook::new("https://example.com", &secret).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_videos_expire_after_the_kept_time() {
    let h = Harness::new(|c| c.keep_seconds = Some(1));
    let v = h.short("a ball", "1").await;
    let id = v["id"].as_str().unwrap().to_string();
    assert!(v["expires_at"].is_null(), "not finished, no expiry: {v}");
    let done = h.wait(&id).await;
    assert_eq!(
        done["expires_at"].as_i64(),
        Some(done["completed_at"].as_i64().unwrap() + 1)
    );
    let start = Instant::now();
    while h.get(&format!("/v1/videos/{id}")).await.0 == StatusCode::OK {
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!h.server.config.asset(&id, "video").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_keys_only_a_known_key_gets_in() {
    let h = Harness::new(|c| c.api_keys = vec!["sk-local".into()]);
    let req = |auth: Option<&str>, uri: &str| {
        let mut r = Request::get(uri);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::empty()).unwrap()
    };
    let (status, v) = h.json(req(None, "/v1/videos")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let (status, _) = h.json(req(Some("Bearer sk-other"), "/v1/videos")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h.json(req(Some("Bearer sk-local"), "/v1/videos")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, html, _) = h.send(req(None, "/?api_key=sk-local")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(html)
        .unwrap()
        .contains("api_key=sk-local"));
    let (status, _, _) = h.send(req(None, "/")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health needs no key; models do.
    let (status, health) = h.json(req(None, "/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        health,
        serde_json::json!({"status": "ok", "model": "random-tiny", "queued": 0, "in_progress": 0})
    );
    let (status, models) = h.json(req(Some("Bearer sk-local"), "/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["random-tiny", "sora-2", "sora-2-pro"]);
    let (status, m) = h
        .json(req(Some("Bearer sk-local"), "/v1/models/sora-2"))
        .await;
    assert_eq!(
        (status, m["object"].as_str()),
        (StatusCode::OK, Some("model"))
    );
    let (status, _) = h
        .json(req(Some("Bearer sk-local"), "/v1/models/gpt-4o"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.json(req(None, "/v1/models")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remix_extend_edit_image_and_loop_run_as_their_modes() {
    let h = Harness::new(|_| {});
    let v = h.short("a ball", "2").await;
    let base = v["id"].as_str().unwrap().to_string();
    // A reference to a video still in the queue is refused, not queued to fail later.
    let (status, early) = h
        .json(json_post(
            &format!("/v1/videos/{base}/remix"),
            serde_json::json!({"prompt": "a blue ball"}),
        ))
        .await;
    if status != StatusCode::OK {
        assert_eq!(status, StatusCode::CONFLICT, "{early}");
        assert_eq!(early["error"]["code"], "video_not_ready");
    }
    assert_eq!(h.wait(&base).await["status"], "completed");
    let frames = |h: &Harness, id: &str| {
        tessera_media::read_video(h.server.config.asset(id, "video"))
            .unwrap()
            .frames
            .len()
    };
    assert_eq!(frames(&h, &base), 9);

    let (status, remix) = h
        .json(json_post(
            &format!("/v1/videos/{base}/remix"),
            serde_json::json!({"prompt": "a blue ball", "steps": 2}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{remix}");
    assert_eq!(remix["remixed_from_video_id"], base.as_str());
    let remix_id = remix["id"].as_str().unwrap().to_string();

    let (status, ext) = h
        .json(multipart(
            "/v1/videos/extensions",
            &[
                ("prompt", "the ball keeps going"),
                ("seconds", "0.5"),
                ("video[id]", &base),
                ("steps", "2"),
            ],
            &[],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{ext}");
    let ext_id = ext["id"].as_str().unwrap().to_string();

    let mp4 = std::fs::read(h.server.config.asset(&base, "video")).unwrap();
    let (status, edit) = h
        .json(multipart(
            "/v1/videos/edits",
            &[
                ("prompt", "a green ball"),
                ("strength", "0.5"),
                ("steps", "2"),
            ],
            &[("video", &mp4)],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{edit}");
    let edit_id = edit["id"].as_str().unwrap().to_string();

    let png = std::fs::read(h.server.config.asset(&base, "thumbnail")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (status, image) = h
        .json(json_post("/v1/videos", serde_json::json!({"prompt": "a ball", "seconds": 0.5, "steps": 2, "input_reference": {"image_url": format!("data:image/png;base64,{b64}")}})))
        .await;
    assert_eq!(status, StatusCode::OK, "{image}");
    let image_id = image["id"].as_str().unwrap().to_string();

    let (status, looped) = h
        .json(multipart(
            "/v1/videos",
            &[
                ("prompt", "a ball"),
                ("seconds", "1"),
                ("steps", "2"),
                ("loop", "true"),
            ],
            &[],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{looped}");
    let loop_id = looped["id"].as_str().unwrap().to_string();

    for id in [&remix_id, &ext_id, &edit_id, &image_id, &loop_id] {
        let done = h.wait(id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    // Edits keep the input's length; an extension adds 8 frames (half a second at 16 fps).
    assert_eq!(frames(&h, &remix_id), 9);
    assert_eq!(frames(&h, &edit_id), 9);
    assert_eq!(frames(&h, &ext_id), 17);
    assert_eq!(frames(&h, &image_id), 9);
    assert_eq!(frames(&h, &loop_id), 17);
    // The upload was kept for the job and goes with it.
    let inputs = || {
        std::fs::read_dir(h.server.config.inputs_dir())
            .unwrap()
            .count()
    };
    assert_eq!(inputs(), 2);
    h.json(
        Request::delete(format!("/v1/videos/{edit_id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(inputs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_finishes_what_a_crash_left_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("videos")).unwrap();
    {
        // A server that died mid-job: its row says in_progress, no output exists.
        let store = Store::open(&dir.path().join("jobs.sqlite")).unwrap();
        let job = Job {
            prompt: "a ball".into(),
            negative: String::new(),
            seconds: Some(0.5),
            width: 64,
            height: 64,
            fps: 16.0,
            seed: 0,
            steps: Some(2),
            cfg: None,
            source: Source::Text,
        };
        store
            .insert(&Record {
                id: "video_crashed".into(),
                created_at: 1,
                completed_at: None,
                status: Status::InProgress,
                progress: 55,
                model: "random-tiny".into(),
                prompt: job.prompt.clone(),
                seconds: "0.5".into(),
                size: "64x64".into(),
                remixed_from: None,
                job,
                error: None,
                notes: vec![],
            })
            .unwrap();
    }
    let h = Harness::in_dir(dir, |_| {});
    let done = h.wait("video_crashed").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        tessera_media::read_video(h.server.config.asset("video_crashed", "video"))
            .unwrap()
            .frames
            .len(),
        9
    );
    let _ = &h.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_at_run_time_reports_why() {
    let h = Harness::new(|_| {});
    let v = h.short("a ball", "2").await;
    let base = v["id"].as_str().unwrap().to_string();
    h.wait(&base).await;
    // The source video is corrupted on disk: the file exists, so the request is accepted, and
    // the job fails when the pipeline reads it.
    std::fs::write(h.server.config.asset(&base, "video"), b"not a video").unwrap();
    let (_, ext) = h
        .json(multipart(
            "/v1/videos/extensions",
            &[
                ("prompt", "more"),
                ("seconds", "0.5"),
                ("video[id]", &base),
                ("steps", "2"),
            ],
            &[],
        ))
        .await;
    let done = h.wait(ext["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "generation_failed");
    assert!(!done["error"]["message"].as_str().unwrap().is_empty());
}

/// A web app on another origin calls the API from a browser: its preflight is answered before
/// authentication, its responses carry the CORS headers, and other origins get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_the_allowed_origins_may_call_the_api() {
    let app = "http://localhost:5173";
    let h = Harness::new(|c| {
        c.api_keys = vec!["k".into()];
        c.cors_origins = vec![app.into()];
    });
    let preflight = |origin: &str| {
        Request::options("/v1/videos")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-stainless-os",
            )
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, headers) = h.send(preflight(app)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], app);
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization,content-type,x-stainless-os"
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let (_, _, headers) = h.send(preflight("http://evil.example")).await;
    assert!(!headers.contains_key("access-control-allow-origin"));

    let get = Request::get("/v1/videos")
        .header("origin", app)
        .header("authorization", "Bearer k")
        .body(Body::empty())
        .unwrap();
    let (status, _, headers) = h.send(get).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], app);
    assert!(headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("openai-poll-after-ms"));
    // The key is still required; CORS only lets the browser show the answer.
    let get = Request::get("/v1/videos")
        .header("origin", app)
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(get).await.0, StatusCode::UNAUTHORIZED);

    // Without --cors-origin, no CORS headers at all, and another site's page cannot queue a
    // job by posting a form (no preflight for that); the server's own gallery can.
    let plain = Harness::new(|_| {});
    let (_, _, headers) = plain.send(preflight(app)).await;
    assert!(!headers.contains_key("access-control-allow-origin"));
    let form = |origin: &str| {
        Request::post("/v1/videos")
            .header("origin", origin)
            .header("host", "127.0.0.1:8000")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("prompt=spam&seconds=0.5&steps=1"))
            .unwrap()
    };
    let (status, v) = plain.json(form("http://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "origin_not_allowed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--cors-origin http://evil.example"));
    assert!(plain
        .server
        .store
        .list(None, 10, Order::Desc)
        .unwrap()
        .0
        .is_empty());
    let (status, v) = plain.json(form("null")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--cors-origin '*'"));
    let (status, v) = plain.json(form("http://127.0.0.1:8000")).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    for ok in ["*", "http://localhost:5173", "https://app.example.com"] {
        assert_eq!(tessera_server::check_origin(ok).unwrap(), ok);
    }
    for bad in [
        "localhost:5173",
        "http://localhost:5173/",
        "https://",
        "ftp://x",
    ] {
        let e = tessera_server::check_origin(bad).unwrap_err();
        assert!(e.contains("http://localhost:5173"), "{e}");
    }
}
