//! The routes. OpenAI's Videos API, as its `openai` SDKs call it:
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/videos` | text → video (`input_reference`: image → video) |
//! | `POST /v1/videos/edits` | a video (upload or `video[id]`) changed to follow the prompt |
//! | `POST /v1/videos/extensions` | `seconds` more of a video |
//! | `POST /v1/videos/{id}/remix` | a completed video edited with a new prompt |
//! | `GET /v1/videos`, `GET /v1/videos/{id}` | list (`after`, `limit`, `order`), retrieve |
//! | `GET /v1/videos/{id}/content` | `variant=video` (MP4), `thumbnail`, `spritesheet` (PNG); `Range` requests |
//! | `DELETE /v1/videos/{id}` | removes the video and its files; cancels it if running |
//! | `GET /v1/models`, `GET /v1/models/{id}` | the served model and its `sora-2`/`sora-2-pro` aliases |
//! | `GET /healthz` | liveness and queue depth (no key needed) |
//! | `GET /` | the gallery: every video with its prompt and status |
//!
//! Fields beyond OpenAI's (all optional): `seed`, `negative_prompt`, `steps`, `cfg`, `loop`
//! (`true`: the clip plays seamlessly on repeat) and `strength` (edits, 0–1).
//!
//! Browsers: pages on `Config::cors_origins` may call the API (CORS); a request whose `Origin`
//! is another site's is refused, so a page cannot post forms to a local server.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{ACCEPT_RANGES, AUTHORIZATION, CONTENT_RANGE, HOST, ORIGIN};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_http::services::ServeFile;

use crate::error::{ServerError, ServerResult};
use crate::fields::Fields;
use crate::job::{Job, Source};
use crate::store::{Order, Record, Status};
use crate::{now, Server};

/// Uploaded videos for edits and extensions can be larger than axum's 2 MB default; a body is
/// held in memory while it is parsed, so not much larger.
const MAX_BODY: usize = 64 << 20;

/// How often the SDKs' `poll` helpers ask (`openai-poll-after-ms`).
const POLL_MS: &str = "250";

/// The API and the gallery over `server`.
pub fn router(server: Arc<Server>) -> Router {
    let cors = cors(&server.config.cors_origins);
    let app = Router::new()
        .route("/", get(gallery))
        .route("/v1/videos", post(create).get(list))
        .route("/v1/videos/edits", post(edit))
        .route("/v1/videos/extensions", post(extend))
        .route("/v1/videos/{id}", get(retrieve).delete(delete))
        .route("/v1/videos/{id}/content", get(content))
        .route("/v1/videos/{id}/remix", post(remix))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(server.clone(), authenticate))
        .route("/healthz", get(health))
        .layer(middleware::from_fn_with_state(server.clone(), same_origin))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(server);
    // Outermost, so a browser's preflight is answered before authentication asks for a key.
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// CORS for `origins` (`*` = any), or none. Request headers are mirrored rather than `*`,
/// which does not cover `Authorization`; the SDKs' poll and Range headers are exposed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                HeaderName::from_static("openai-poll-after-ms"),
                CONTENT_RANGE,
                ACCEPT_RANGES,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// A browser names the page behind a request in `Origin`; one from another site (not this
/// server's own gallery, not a `--cors-origin`) is refused. A page may POST a form anywhere
/// without asking (no preflight), so without this any web page could queue jobs on a local
/// server, key or not. Clients outside browsers send no `Origin` and pass.
async fn same_origin(
    State(server): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Result<Response, ServerError> {
    let Some(origin) = req.headers().get(ORIGIN).map(|o| o.to_str().unwrap_or("?")) else {
        return Ok(next.run(req).await);
    };
    let allowed = &server.config.cors_origins;
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    let own = host.is_some_and(|h| {
        [format!("http://{h}"), format!("https://{h}")].contains(&origin.to_string())
    });
    if own || allowed.iter().any(|a| a == "*" || a == origin) {
        Ok(next.run(req).await)
    } else {
        // Pages opened from files and sandboxed frames send `null`, which only `*` admits.
        let allow = if origin == "null" { "'*'" } else { origin };
        Err(ServerError::ForeignOrigin {
            origin: origin.to_string(),
            allow: allow.to_string(),
        })
    }
}

/// With keys configured, a request needs `Authorization: Bearer KEY` (or `?api_key=KEY`, for
/// the gallery's `<video>` tags, which cannot send headers).
async fn authenticate(
    State(server): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Result<Response, ServerError> {
    let keys = &server.config.api_keys;
    if keys.is_empty() {
        return Ok(next.run(req).await);
    }
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("api_key=")))
        .map(str::to_string);
    if bearer.or(query).is_some_and(|k| keys.contains(&k)) {
        Ok(next.run(req).await)
    } else {
        Err(ServerError::Unauthorized)
    }
}

/// The Video object of OpenAI's API, plus `prompt` and `notes` (adjustments made).
fn video_json(server: &Server, r: &Record) -> Value {
    json!({
        "id": r.id,
        "object": "video",
        "created_at": r.created_at,
        "completed_at": r.completed_at,
        "expires_at": server.expires_at(r),
        "status": r.status,
        "progress": r.progress,
        "model": r.model,
        "prompt": r.prompt,
        "seconds": r.seconds,
        "size": r.size,
        "remixed_from_video_id": r.remixed_from,
        "error": r.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
        "notes": r.notes,
    })
}

fn video_response(server: &Server, r: &Record) -> Response {
    let mut res = Json(video_json(server, r)).into_response();
    res.headers_mut()
        .insert("openai-poll-after-ms", HeaderValue::from_static(POLL_MS));
    res
}

fn new_id() -> String {
    format!("video_{:032x}", rand::random::<u128>())
}

/// Fields every generating route shares.
struct Common {
    prompt: String,
    negative: String,
    seed: u64,
    steps: Option<usize>,
    cfg: Option<f64>,
}

impl Common {
    fn job(
        self,
        seconds: Option<f64>,
        (width, height): (u32, u32),
        fps: f64,
        source: Source,
    ) -> Job {
        Job {
            prompt: self.prompt,
            negative: self.negative,
            seconds,
            width,
            height,
            fps,
            seed: self.seed,
            steps: self.steps,
            cfg: self.cfg,
            source,
        }
    }
}

impl Server {
    fn common(&self, f: &Fields) -> ServerResult<Common> {
        let prompt = f.required("prompt")?.trim().to_string();
        if prompt.is_empty() {
            return Err(ServerError::bad(
                "prompt",
                "invalid_value",
                "`prompt` is empty; describe the video, e.g. \"a red ball bounces across a blue floor\"",
            ));
        }
        if let Some(model) = f.text("model") {
            if !serves(self, model) {
                return Err(ServerError::bad(
                    "model",
                    "invalid_model",
                    format!("model {model:?} is not served here; use {:?} (sora-2 and sora-2-pro are served by it too)", self.model_name),
                ));
            }
        }
        Ok(Common {
            prompt,
            negative: f.text("negative_prompt").unwrap_or_default().to_string(),
            seed: f.number("seed", "an integer >= 0")?.unwrap_or(0),
            steps: f.number("steps", "an integer >= 1")?,
            cfg: f.number("cfg", "a number >= 0")?,
        })
    }

    /// `seconds` as a positive number within the server's limit (OpenAI sends `"4"`).
    fn seconds(&self, f: &Fields, default: &str) -> ServerResult<(String, f64)> {
        let text = f.text("seconds").unwrap_or(default).trim().to_string();
        let max = self.config.max_seconds;
        match text.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= max => Ok((text, s)),
            _ => Err(ServerError::bad(
                "seconds",
                "invalid_value",
                format!("`seconds` is {text:?}; give a number of seconds above 0 and at most {max} (this server's --max-seconds)"),
            )),
        }
    }

    /// `size` as `WxH` (default: `default`), scaled down to fit the pixel limit.
    fn size(
        &self,
        f: &Fields,
        default: (u32, u32),
        notes: &mut Vec<String>,
    ) -> ServerResult<(u32, u32)> {
        let Some(text) = f.text("size") else {
            return Ok(self.fit(default, notes));
        };
        let bad = || {
            ServerError::bad(
                "size",
                "invalid_value",
                format!("`size` is {text:?}; give WIDTHxHEIGHT, e.g. 64x64"),
            )
        };
        let (w, h) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let (w, h): (u32, u32) = (
            w.trim().parse().map_err(|_| bad())?,
            h.trim().parse().map_err(|_| bad())?,
        );
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) <= self.config.max_pixels {
            // The pipeline's check names the nearest valid size for a side that is no
            // multiple of 16.
            return Ok((w, h));
        }
        Ok(self.fit((w, h), notes))
    }

    /// `(w, h)` scaled down to the pixel limit (aspect kept) and each side down to a multiple
    /// of 16, noting any change.
    fn fit(&self, (w, h): (u32, u32), notes: &mut Vec<String>) -> (u32, u32) {
        let max = self.config.max_pixels;
        let area = f64::from(w) * f64::from(h);
        let scale = if area > max as f64 {
            (max as f64 / area).sqrt()
        } else {
            1.0
        };
        let side = |v: u32| ((f64::from(v) * scale / 16.0).floor() as u32).max(1) * 16;
        let (mut fw, mut fh) = (side(w), side(h));
        // A side held at its 16-pixel floor can leave the other too long: trim that one.
        let longest = |short: u32| ((max / u64::from(short)) as u32 / 16).max(1) * 16;
        if u64::from(fw) * u64::from(fh) > max {
            if fw >= fh {
                fw = longest(fh);
            } else {
                fh = longest(fw);
            }
        }
        let fitted = (fw, fh);
        if fitted != (w, h) {
            notes.push(format!(
                "size {w}x{h} is above this server's {max} pixels a frame (--max-pixels) or not in multiples of 16; generated at {}x{}",
                fitted.0, fitted.1
            ));
        }
        fitted
    }

    /// A video to edit or extend: an upload under `video`, or `video[id]` naming a completed
    /// video here.
    fn video_input(&self, f: &Fields, id: &str) -> ServerResult<std::path::PathBuf> {
        if let Some(bytes) = f.file("video")? {
            return self.save_input(id, "video", &bytes);
        }
        let Some(src) = f.text("video[id]").or(f.text("video")) else {
            return Err(ServerError::bad(
                "video",
                "missing_required_parameter",
                "missing required parameter `video`: upload a file or send `video[id]` naming a completed video",
            ));
        };
        self.completed_video(src)
    }

    /// The MP4 of a completed video, relative to the data folder.
    fn completed_video(&self, id: &str) -> ServerResult<std::path::PathBuf> {
        let r = self
            .store
            .get(id)?
            .ok_or_else(|| ServerError::NotFound(id.to_string()))?;
        if r.status != Status::Completed {
            return Err(ServerError::NotReady {
                id: r.id,
                status: r.status.as_str(),
            });
        }
        Ok(std::path::PathBuf::from("videos").join(format!("{id}.mp4")))
    }

    /// An input's duration as the API reports it, and its size: what an edit, an extension or
    /// an image → video keeps unless the request says otherwise. Unreadable input gives `""` and the
    /// default size; the job's validation or run then says what is wrong with it.
    fn input_info(&self, rel: &std::path::Path) -> (String, (u32, u32)) {
        match tessera_media::read_video(self.config.data.join(rel)) {
            Ok(v) => (
                format!("{}", (v.duration() * 100.0).round() / 100.0),
                (v.width, v.height),
            ),
            Err(_) => (String::new(), self.config.default_size),
        }
    }

    /// Stores an upload under `inputs/`, named by what its bytes are.
    fn save_input(
        &self,
        id: &str,
        what: &'static str,
        bytes: &[u8],
    ) -> ServerResult<std::path::PathBuf> {
        use tessera_media::Format;
        let ext = match tessera_media::sniff(bytes) {
            Some(Format::Mp4) => "mp4",
            Some(Format::Gif) => "gif",
            Some(Format::Png) => "png",
            Some(Format::Jpeg) => "jpg",
            None => {
                return Err(ServerError::bad(
                    what,
                    "invalid_file",
                    format!(
                    "the uploaded `{what}` is not a format this server reads (PNG, JPEG, GIF, MP4)"
                ),
                ))
            }
        };
        let rel = std::path::PathBuf::from("inputs").join(format!("{id}-{what}.{ext}"));
        let path = self.config.data.join(&rel);
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                ServerError::Internal(format!("saving the upload {}: {e}", path.display()))
            })?;
        Ok(rel)
    }

    /// Validates `job` as the pipeline will run it, then queues it.
    fn submit(
        &self,
        id: String,
        seconds: String,
        job: Job,
        notes: Vec<String>,
        remixed_from: Option<String>,
    ) -> ServerResult<Response> {
        let output = self.config.asset(&id, "video");
        match job.validate(&self.config.data, &self.sampling, &output) {
            Ok(_) => {}
            Err(e @ tessera_pipeline::RequestError::Policy(_)) => {
                return Err(ServerError::bad(
                    "prompt",
                    "moderation_blocked",
                    e.to_string(),
                ))
            }
            Err(e) => {
                return Err(ServerError::BadRequest {
                    message: e.to_string(),
                    param: None,
                    code: "invalid_request",
                })
            }
        }
        let record = Record {
            id,
            created_at: now(),
            completed_at: None,
            status: Status::Queued,
            progress: 0,
            model: self.model_name.clone(),
            prompt: job.prompt.clone(),
            seconds,
            size: format!("{}x{}", job.width, job.height),
            remixed_from,
            job,
            error: None,
            notes,
        };
        self.store.insert(&record)?;
        self.notify();
        Ok(video_response(self, &record))
    }
}

fn flag(f: &Fields, key: &'static str) -> ServerResult<bool> {
    match f.text(key).map(str::trim) {
        None | Some("false" | "0" | "") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(v) => Err(ServerError::bad(
            key,
            "invalid_value",
            format!("`{key}` is {v:?}; give true or false"),
        )),
    }
}

async fn create(State(server): State<Arc<Server>>, f: Fields) -> ServerResult<Response> {
    let c = server.common(&f)?;
    let mut notes = Vec::new();
    let (seconds_text, seconds) = server.seconds(&f, "4")?;
    let id = new_id();
    let uploads = server.pending_uploads(&id);
    let (source, default_size) = match (f.file("input_reference")?, flag(&f, "loop")?) {
        (Some(bytes), _) => {
            let image = server.save_input(&id, "input_reference", &bytes)?;
            // The video takes the image's size unless told otherwise, as OpenAI's API does.
            let (_, size) = server.input_info(&image);
            (Source::Image { image }, size)
        }
        (None, true) => (Source::Loop, server.config.default_size),
        (None, false) => (Source::Text, server.config.default_size),
    };
    let size = server.size(&f, default_size, &mut notes)?;
    let job = c.job(Some(seconds), size, server.config.fps, source);
    uploads.keep(server.submit(id, seconds_text, job, notes, None))
}

async fn edit(State(server): State<Arc<Server>>, f: Fields) -> ServerResult<Response> {
    let c = server.common(&f)?;
    let mut notes = Vec::new();
    let id = new_id();
    let uploads = server.pending_uploads(&id);
    let video = server.video_input(&f, &id)?;
    let (seconds, input_size) = server.input_info(&video);
    let size = server.size(&f, input_size, &mut notes)?;
    let strength = f
        .number("strength", "a number from 0 to 1")?
        .unwrap_or(server.config.remix_strength);
    let job = c.job(
        None,
        size,
        server.config.fps,
        Source::Edit { video, strength },
    );
    uploads.keep(server.submit(id, seconds, job, notes, None))
}

async fn extend(State(server): State<Arc<Server>>, f: Fields) -> ServerResult<Response> {
    let c = server.common(&f)?;
    let mut notes = Vec::new();
    let (seconds_text, seconds) = server.seconds(&f, "4")?;
    let id = new_id();
    let uploads = server.pending_uploads(&id);
    let video = server.video_input(&f, &id)?;
    let (_, input_size) = server.input_info(&video);
    let size = server.size(&f, input_size, &mut notes)?;
    let job = c.job(
        Some(seconds),
        size,
        server.config.fps,
        Source::Extend { video },
    );
    uploads.keep(server.submit(id, seconds_text, job, notes, None))
}

/// A remix is an edit of a completed video with a new prompt, at its size.
async fn remix(
    State(server): State<Arc<Server>>,
    Path(src): Path<String>,
    f: Fields,
) -> ServerResult<Response> {
    let c = server.common(&f)?;
    let video = server.completed_video(&src)?;
    let original = server
        .store
        .get(&src)?
        .ok_or_else(|| ServerError::NotFound(src.clone()))?;
    let job = c.job(
        None,
        (original.job.width, original.job.height),
        original.job.fps,
        Source::Edit {
            video,
            strength: server.config.remix_strength,
        },
    );
    server.submit(new_id(), original.seconds, job, Vec::new(), Some(src))
}

async fn retrieve(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> ServerResult<Response> {
    let r = server.store.get(&id)?.ok_or(ServerError::NotFound(id))?;
    Ok(video_response(&server, &r))
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    order: Order,
}

async fn list(
    State(server): State<Arc<Server>>,
    Query(q): Query<ListQuery>,
) -> ServerResult<Json<Value>> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let (rows, more) = server.store.list(q.after.as_deref(), limit, q.order)?;
    Ok(Json(json!({
        "object": "list",
        "data": rows.iter().map(|r| video_json(&server, r)).collect::<Vec<_>>(),
        "first_id": rows.first().map(|r| r.id.clone()),
        "last_id": rows.last().map(|r| r.id.clone()),
        "has_more": more,
    })))
}

async fn delete(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> ServerResult<Json<Value>> {
    if !server.remove(&id)? {
        return Err(ServerError::NotFound(id));
    }
    Ok(Json(
        json!({"id": id, "object": "video.deleted", "deleted": true}),
    ))
}

#[derive(Deserialize)]
struct ContentQuery {
    variant: Option<String>,
}

async fn content(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    Query(q): Query<ContentQuery>,
    req: Request,
) -> ServerResult<Response> {
    let variant = q.variant.as_deref().unwrap_or("video");
    match variant {
        "video" | "thumbnail" | "spritesheet" => {}
        other => {
            return Err(ServerError::bad(
                "variant",
                "invalid_value",
                format!("variant {other:?} is unknown; use video, thumbnail or spritesheet"),
            ))
        }
    };
    let r = server
        .store
        .get(&id)?
        .ok_or_else(|| ServerError::NotFound(id.clone()))?;
    if r.status != Status::Completed {
        return Err(ServerError::NotReady {
            id,
            status: r.status.as_str(),
        });
    }
    let path = server.config.asset(&id, variant);
    // Byte ranges (206/416), HEAD and If-Modified-Since; the type follows the extension.
    let res = ServeFile::new(&path)
        .oneshot(req)
        .await
        .map_err(|e| ServerError::Internal(format!("reading {}: {e}", path.display())))?;
    if res.status() == StatusCode::NOT_FOUND {
        return Err(ServerError::Internal(format!(
            "{} is missing from the data folder",
            path.display()
        )));
    }
    Ok(res.map(Body::new))
}

/// Names a request's `model` may use: the loaded model's, then the aliases it serves.
fn model_ids(server: &Server) -> Vec<String> {
    [server.model_name.as_str(), "sora-2", "sora-2-pro"]
        .map(String::from)
        .to_vec()
}

/// The loaded model answers to its own name and to every Sora model name (`sora-2`,
/// `sora-2-pro` and their dated snapshots), so code written for OpenAI runs unchanged.
fn serves(server: &Server, model: &str) -> bool {
    model == server.model_name || model.starts_with("sora")
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "tessera"})
}

async fn models(State(server): State<Arc<Server>>) -> Json<Value> {
    let data: Vec<Value> = model_ids(&server).iter().map(|id| model_json(id)).collect();
    Json(json!({"object": "list", "data": data}))
}

async fn model(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
) -> ServerResult<Json<Value>> {
    if serves(&server, &id) {
        Ok(Json(model_json(&id)))
    } else {
        Err(ServerError::bad(
            "model",
            "model_not_found",
            format!("model {id:?} is not served here; GET /v1/models lists what is"),
        ))
    }
}

/// Liveness for load balancers and scripts, outside authentication.
async fn health(State(server): State<Arc<Server>>) -> ServerResult<Json<Value>> {
    let (queued, in_progress) = server.store.pending()?;
    Ok(Json(
        json!({"status": "ok", "model": server.model_name, "queued": queued, "in_progress": in_progress}),
    ))
}

#[derive(Deserialize)]
struct GalleryQuery {
    api_key: Option<String>,
}

/// Every video, newest first, playing in place; a form queues a new one.
async fn gallery(
    State(server): State<Arc<Server>>,
    Query(q): Query<GalleryQuery>,
) -> ServerResult<Html<String>> {
    let (rows, _) = server.store.list(None, 100, Order::Desc)?;
    let key = q
        .api_key
        .map(|k| format!("api_key={}", escape(&k)))
        .unwrap_or_default();
    let mut cards = String::new();
    for r in &rows {
        let media = match r.status {
            Status::Completed => format!(
                "<video src=\"/v1/videos/{id}/content?{key}\" poster=\"/v1/videos/{id}/content?variant=thumbnail&amp;{key}\" autoplay loop muted controls></video>",
                id = r.id
            ),
            Status::Failed => format!("<p class=err>{}</p>", escape(&r.error.as_ref().map(|e| e.1.clone()).unwrap_or_default())),
            s => format!("<p>{} {}%</p>", s.as_str(), r.progress),
        };
        cards.push_str(&format!(
            "<figure>{media}<figcaption>{prompt}<br><small>{id} · {size} · {seconds} s</small></figcaption></figure>\n",
            prompt = escape(&r.prompt),
            id = r.id,
            size = r.size,
            seconds = escape(&r.seconds),
        ));
    }
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("?{key}")
    };
    Ok(Html(format!(
        r#"<!doctype html><meta charset=utf-8><title>Tessera · {model}</title>
<style>body{{font:14px system-ui;margin:2em}}figure{{display:inline-block;width:256px;margin:0 1em 1em 0;vertical-align:top}}video{{width:256px;image-rendering:pixelated;background:#000}}.err{{color:#b00}}form{{margin-bottom:1.5em}}</style>
<h1>Tessera · {model}</h1>
<form id=f><input name=prompt size=60 placeholder="a red ball bounces across a blue floor" required> <button>Generate</button></form>
<script>f.onsubmit=async e=>{{e.preventDefault();await fetch('/v1/videos{auth}',{{method:'POST',body:new FormData(f)}});location.reload()}};
if(document.body.innerText.match(/queued|in_progress/))setTimeout(()=>location.reload(),2000)</script>
{cards}"#,
        model = escape(&server.model_name),
    )))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `405` in the API's error shape (e.g. Sora's character routes, which this server lacks).
async fn method_not_allowed(req: Request) -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(
            json!({"error": {"message": format!("{} {} is not supported by this server; see README, \"Serving\", for its routes", req.method(), req.uri().path()), "type": "invalid_request_error", "param": null, "code": "method_not_allowed"}}),
        ),
    )
}

/// `404` for routes that do not exist, in the API's error shape.
async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"error": {"message": "no such route; the API lives under /v1/videos", "type": "invalid_request_error", "param": null, "code": "not_found"}}),
        ),
    )
}
