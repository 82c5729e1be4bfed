//! `tessera serve`: OpenAI's Videos API (the Sora API, retired in 2026) over the pipeline, so
//! code written for it runs against a local model unchanged, and a small web gallery.
//!
//! - [`Server::start`]: opens the job store, queues again what a stopped server left running,
//!   and starts the worker that owns the model.
//! - [`router`]: the HTTP routes ([`api`]); [`serve`] runs them until a shutdown signal.
//!
//! Jobs run one at a time in submission order on one worker thread (a model saturates the
//! machine's cores by itself). Every request is checked by the same validation the CLI uses
//! before it is queued, so a job that cannot run is a `400` at submission, not a failure later.
//!
//! Data folder layout: `jobs.sqlite` (the queue), `videos/ID.mp4` with `ID.thumbnail.png` and
//! `ID.spritesheet.png`, `inputs/` (uploaded images and videos).

pub mod api;
mod error;
mod fields;
mod job;
mod store;
mod webhook;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use api::router;
pub use error::{ServerError, ServerResult};
pub use job::{Job, Source};
pub use store::{Order, Record, Status, Store};
use tessera_pipeline::{Model, Sampling};
pub use webhook::Webhook;

/// What `tessera serve` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data folder: the queue, outputs and uploads.
    pub data: PathBuf,
    /// Bearer keys a client must send; empty = no authentication (a local server).
    pub api_keys: Vec<String>,
    /// Largest frame, in pixels: bigger sizes (OpenAI's 720x1280) are scaled down to it, keeping
    /// the aspect ratio, and the video reports the size it has.
    pub max_pixels: u64,
    /// Longest video a request may ask for.
    pub max_seconds: f64,
    /// Size of a request that names none (the model's training size).
    pub default_size: (u32, u32),
    pub fps: f64,
    /// SDEdit strength of a remix, and of an edit that names none.
    pub remix_strength: f64,
    /// Finished videos (and their uploads) are deleted this many seconds after they finish;
    /// `None` keeps them. Reported as each video's `expires_at`.
    pub keep_seconds: Option<i64>,
    /// Signs every video's provenance manifest.
    pub signing_key: Option<Arc<tessera_safety::SigningKey>>,
    /// Reviews every finished video before it is published ([`tessera_safety::review`]).
    pub review_command: Option<String>,
    /// Told of every finished and failed video.
    pub webhook: Option<Webhook>,
    /// Web origins (`http://localhost:5173`, or `*` for any) whose pages may call the API from
    /// a browser; empty = none, the browser's same-origin rule holds.
    pub cors_origins: Vec<String>,
}

impl Config {
    pub fn new(data: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
            api_keys: Vec::new(),
            max_pixels: 128 * 128,
            max_seconds: 60.0,
            default_size: (64, 64),
            fps: 16.0,
            remix_strength: 0.6,
            keep_seconds: None,
            signing_key: None,
            review_command: None,
            webhook: None,
            cors_origins: Vec::new(),
        }
    }
}

/// Shared by the HTTP handlers and the worker.
pub struct Server {
    pub config: Config,
    pub store: Store,
    /// Name of the loaded model (its folder), reported as each video's `model`.
    pub model_name: String,
    /// The model's sampling defaults, which a request's `steps`/`cfg` override.
    pub sampling: Sampling,
    wake: (Mutex<bool>, Condvar),
    /// The job the worker is running and its cancel flag (set when it is deleted).
    current: Mutex<Option<(String, Arc<AtomicBool>)>>,
    shutdown: AtomicBool,
}

impl Server {
    /// Opens the store under `config.data` and starts the worker with `model`. Join the handle
    /// after [`Server::stop`] so an interrupted job is queued again before the process exits.
    pub fn start(model: Model, config: Config) -> ServerResult<(Arc<Server>, JoinHandle<()>)> {
        for dir in [config.videos_dir(), config.inputs_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| ServerError::Store {
                detail: format!("creating {}: {e}; check the --data folder", dir.display()),
            })?;
        }
        let store = Store::open(&config.data.join("jobs.sqlite"))?;
        let server = Arc::new(Server {
            config,
            store,
            model_name: model.name.clone(),
            sampling: model.sampling.clone(),
            wake: (Mutex::new(false), Condvar::new()),
            current: Mutex::new(None),
            shutdown: AtomicBool::new(false),
        });
        let handle = worker::spawn(server.clone(), model);
        Ok((server, handle))
    }

    /// Tells the worker a job was queued.
    pub fn notify(&self) {
        let (lock, cvar) = &self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
    }

    /// Waits for [`Server::notify`] or `timeout`.
    fn wait(&self, timeout: Duration) {
        let (lock, cvar) = &self.wake;
        let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = cvar
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *woken = false;
    }

    /// Stops the worker: the running job is cancelled and queued again.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.notify();
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// When a finished video's files go, if they do.
    pub fn expires_at(&self, r: &Record) -> Option<i64> {
        Some(r.completed_at? + self.config.keep_seconds?)
    }

    /// Deletes a video: its row, its files and uploads; cancels it if it is running. False if
    /// there was no such video.
    pub fn remove(&self, id: &str) -> ServerResult<bool> {
        if !self.store.delete(id)? {
            return Ok(false);
        }
        self.cancel(id);
        for variant in ["video", "thumbnail", "spritesheet"] {
            let _ = std::fs::remove_file(self.config.asset(id, variant));
        }
        self.discard_uploads(id);
        Ok(true)
    }

    /// Deletes the files uploaded for `id` (named `ID-field.ext` under `inputs/`).
    fn discard_uploads(&self, id: &str) {
        if let Ok(entries) = std::fs::read_dir(self.config.inputs_dir()) {
            let prefix = format!("{id}-");
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Uploads of a request not yet queued: deleted when the guard drops, unless the request
    /// was queued ([`PendingUploads::keep`]), so a refused request leaves no files behind.
    fn pending_uploads(&self, id: &str) -> PendingUploads<'_> {
        PendingUploads {
            server: self,
            id: id.to_string(),
            kept: false,
        }
    }

    /// Deletes every finished video past its `expires_at`; returns how many.
    pub fn expire(&self, now: i64) -> ServerResult<usize> {
        let Some(keep) = self.config.keep_seconds else {
            return Ok(0);
        };
        let ids = self.store.finished_before(now - keep)?;
        for id in &ids {
            self.remove(id)?;
        }
        Ok(ids.len())
    }

    /// Cancels `id` if the worker is running it.
    fn cancel(&self, id: &str) {
        if let Some((running, flag)) = &*self.current.lock().unwrap_or_else(|p| p.into_inner()) {
            if running == id {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }
}

struct PendingUploads<'a> {
    server: &'a Server,
    id: String,
    kept: bool,
}

impl PendingUploads<'_> {
    /// Keeps the uploads if `queued` succeeded.
    fn keep<T>(mut self, queued: ServerResult<T>) -> ServerResult<T> {
        self.kept = queued.is_ok();
        queued
    }
}

impl Drop for PendingUploads<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.server.discard_uploads(&self.id);
        }
    }
}

impl Config {
    pub fn videos_dir(&self) -> PathBuf {
        self.data.join("videos")
    }

    pub fn inputs_dir(&self) -> PathBuf {
        self.data.join("inputs")
    }

    /// Where a video's asset `variant` (`video`, `thumbnail`, `spritesheet`) lives.
    pub fn asset(&self, id: &str, variant: &str) -> PathBuf {
        match variant {
            "video" => self.videos_dir().join(format!("{id}.mp4")),
            other => self.videos_dir().join(format!("{id}.{other}.png")),
        }
    }
}

/// A `--cors-origin` as browsers send it in `Origin`: `*`, or `scheme://host[:port]` with no
/// path or trailing slash (which would never match).
pub fn check_origin(origin: &str) -> Result<String, String> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match rest {
        _ if origin == "*" => Ok(origin.into()),
        Some(host) if !host.is_empty() && !host.contains(['/', ' ', ',']) => Ok(origin.into()),
        _ => Err(format!(
            "{origin:?} is not an origin; write it as the browser sends it, e.g. http://localhost:5173 (no path or trailing slash), or * for any"
        )),
    }
}

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Serves `router(server)` on `listener` until `shutdown` resolves, then stops the worker.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(server.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    server.stop();
    result
}
