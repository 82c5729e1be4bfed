//! Webhooks: `video.completed` / `video.failed` events POSTed to the operator's URL, in
//! OpenAI's event shape and signed the Standard Webhooks way (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`),
//! so `client.webhooks.unwrap(...)` of the `openai` SDKs verifies them unchanged.
//!
//! Delivery runs on its own thread (the worker goes on to the next job) and is retried three
//! times with growing pauses; a receiver that never answers 2xx is logged, not fatal.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;

use crate::error::{ServerError, ServerResult};

/// Where events go and the key they are signed with.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    key: Vec<u8>,
}

/// Pauses before each retry.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(8),
];

impl Webhook {
    /// `secret` as OpenAI issues them, `whsec_` + base64 of the key (any other string is the
    /// key's bytes). Only `http://` URLs: this build has no TLS.
    pub fn new(url: &str, secret: &str) -> ServerResult<Self> {
        let bad = |message: String| ServerError::BadRequest {
            message,
            param: None,
            code: "invalid_webhook",
        };
        if !url.starts_with("http://") {
            return Err(bad(format!(
                "webhook URL {url:?} must start with http:// (no TLS in this build; put a local relay in front of an https endpoint)"
            )));
        }
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("webhook secret after whsec_ is not base64 ({e})")))?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(bad("webhook secret is empty; give --webhook-secret".into()));
        }
        Ok(Self {
            url: url.to_string(),
            key,
        })
    }

    /// The body and signature headers of one event.
    pub fn event(
        &self,
        kind: &str,
        video_id: &str,
        at: i64,
    ) -> (String, [(&'static str, String); 3]) {
        let id = format!("evt_{:032x}", rand::random::<u128>());
        let body = json!({"id": id, "object": "event", "created_at": at, "type": kind, "data": {"id": video_id}})
            .to_string();
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{id}.{at}.{body}").as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", format!("v1,{signature}")),
        ];
        (body, headers)
    }

    /// Sends `kind` (`video.completed`, `video.failed`) for `video_id` in the background.
    pub fn deliver(&self, kind: &str, video_id: &str, at: i64) {
        let (body, headers) = self.event(kind, video_id, at);
        let url = self.url.clone();
        let what = format!("{kind} for {video_id}");
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into();
            let mut last = String::new();
            for pause in std::iter::once(Duration::ZERO).chain(RETRIES) {
                std::thread::sleep(pause);
                let mut req = agent.post(&url).header("content-type", "application/json");
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                match req.send(&body) {
                    Ok(res) if res.status().is_success() => return,
                    Ok(res) => last = format!("HTTP {}", res.status()),
                    Err(e) => last = e.to_string(),
                }
            }
            tracing::warn!("webhook {what} to {url} failed after retries: {last}");
        });
    }
}
