//! `tessera serve`: the OpenAI Videos API and a gallery over one model (crate
//! `tessera-server`). Loads the model first, so a bad folder fails before the port opens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tessera_models::device::DeviceSpec;
use tessera_pipeline::Model;
use tessera_server::{Config, Server};

use super::generate::SafetyArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Data folder: the job queue (jobs.sqlite), videos and uploads; created if missing.
    #[arg(long, default_value = "tessera-data")]
    data: PathBuf,
    /// Model folder; default: $TESSERA_MODEL or the shipped tessera-shapes-tiny.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the model runs: cpu, or cuda / cuda:N in a CUDA build.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// A key clients must send as `Authorization: Bearer KEY` (repeat, or comma-separate in
    /// $TESSERA_API_KEYS). Without any, the server accepts every request: keep it on localhost.
    #[arg(
        long = "api-key",
        env = "TESSERA_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Largest frame in pixels; bigger sizes (OpenAI's 720x1280) are scaled down to fit.
    #[arg(long, default_value_t = 128 * 128)]
    max_pixels: u64,
    /// Longest video a request may ask for, in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// Delete finished videos (and their uploads) this many hours after they finish; reported
    /// as each video's `expires_at`. Default: keep them.
    #[arg(long, value_parser = positive_hours)]
    keep_hours: Option<f64>,
    /// Signing and review of every video (a review refusal fails the job with code
    /// `moderation_blocked`).
    #[command(flatten)]
    safety: SafetyArgs,
    /// POST `video.completed` / `video.failed` events here (http:// only), signed as OpenAI
    /// signs its webhooks, so `client.webhooks.unwrap()` verifies them.
    #[arg(long, requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// The webhook signing secret (`whsec_` + base64, as OpenAI issues them, or any string).
    #[arg(long, env = "TESSERA_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// A web origin whose pages may call the API from a browser (CORS), written as the browser
    /// sends it: http://localhost:5173; `*` allows any. Repeat, or comma-separate in
    /// $TESSERA_CORS_ORIGINS. Requests from other sites' pages are refused (403), so a web page
    /// cannot queue jobs on a local server behind its user's back.
    #[arg(
        long = "cors-origin",
        env = "TESSERA_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = tessera_server::check_origin
    )]
    cors_origins: Vec<String>,
    /// Print the listening address as one JSON line (for scripts) instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let signing_key = a.safety.key()?;
    let dir = a.model.clone().unwrap_or_else(Model::default_dir);
    let device = a.device.open()?;
    let model = Model::load(&dir, &device)
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    let mut config = Config::new(&a.data);
    config.api_keys = a.api_keys.into_iter().filter(|k| !k.is_empty()).collect();
    config.cors_origins = a.cors_origins;
    config.max_pixels = a.max_pixels;
    config.max_seconds = a.max_seconds;
    config.keep_seconds = a.keep_hours.map(|h| (h * 3600.0).round() as i64);
    config.signing_key = signing_key;
    config.review_command = a.safety.review_command;
    if let (Some(url), Some(secret)) = (&a.webhook_url, &a.webhook_secret) {
        config.webhook = Some(tessera_server::Webhook::new(url, secret)?);
    }
    if config.api_keys.is_empty() && !a.addr.ip().is_loopback() {
        tracing::warn!(
            "serving on {} without --api-key: anyone who can reach it can generate and delete videos",
            a.addr
        );
    }
    let (server, worker) = Server::start(model, config)
        .with_context(|| format!("opening the data folder {}", a.data.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("listening on {}; is another server using it?", a.addr))?;
        let addr = listener.local_addr()?;
        if a.json {
            println!("{}", serde_json::json!({"url": format!("http://{addr}"), "model": server.model_name, "data": a.data}));
        } else {
            println!(
                "serving {} at http://{addr} (API under /v1, gallery at /); Ctrl-C stops",
                server.model_name
            );
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tessera_server::serve(listener, server.clone(), shutdown)
            .await
            .context("serving")
    });
    server.stop();
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the worker thread panicked"))?;
    result
}

fn positive_hours(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 => Ok(h),
        _ => Err(format!("`{s}` is not a number of hours above 0 (e.g. 24)")),
    }
}
