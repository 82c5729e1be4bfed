//! Request bodies in every shape a client sends them: the `openai` SDKs post multipart forms
//! (files as parts, nested objects as `key[sub]` fields); curl users post JSON or URL-encoded
//! forms. All three become one flat map of text fields plus uploaded files.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::{Form, Json};
use base64::Engine;
use serde_json::Value;

use crate::error::{ServerError, ServerResult};

/// Text fields and file parts of a request body.
#[derive(Debug, Default)]
pub struct Fields {
    text: HashMap<String, String>,
    files: HashMap<String, Vec<u8>>,
}

impl Fields {
    pub fn text(&self, key: &str) -> Option<&str> {
        self.text.get(key).map(String::as_str)
    }

    pub fn required(&self, key: &'static str) -> ServerResult<&str> {
        self.text(key).ok_or_else(|| {
            ServerError::bad(
                key,
                "missing_required_parameter",
                format!("missing required parameter `{key}`"),
            )
        })
    }

    /// A number field, if present; `what` says what a valid value looks like.
    pub fn number<T: std::str::FromStr>(
        &self,
        key: &'static str,
        what: &str,
    ) -> ServerResult<Option<T>> {
        self.text(key)
            .map(|v| {
                v.trim().parse().map_err(|_| {
                    ServerError::bad(
                        key,
                        "invalid_value",
                        format!("`{key}` is {v:?}; it must be {what}"),
                    )
                })
            })
            .transpose()
    }

    /// A file given as an upload under `key`, or as `key[image_url]` holding a base64 `data:`
    /// URL. `None` when neither is present; `key[id]` references are the caller's.
    pub fn file(&self, key: &'static str) -> ServerResult<Option<Vec<u8>>> {
        if let Some(bytes) = self.files.get(key) {
            return Ok(Some(bytes.clone()));
        }
        if self.text.contains_key(&format!("{key}[file_id]")) {
            return Err(ServerError::bad(
                key,
                "unsupported_value",
                format!("`{key}[file_id]` needs a Files API this server does not have; upload the file as `{key}` or send it as a base64 data: URL in `{key}[image_url]`"),
            ));
        }
        let Some(url) = self.text(&format!("{key}[image_url]")) else {
            return Ok(None);
        };
        data_url(url).map(Some).ok_or_else(|| {
            ServerError::bad(
                key,
                "invalid_value",
                format!("`{key}[image_url]` must be a base64 data: URL (data:image/png;base64,…); this server fetches nothing from the network"),
            )
        })
    }

    fn insert_json(&mut self, prefix: Option<&str>, v: &Value) {
        if let Value::Object(map) = v {
            for (k, v) in map {
                let key = match prefix {
                    Some(p) => format!("{p}[{k}]"),
                    None => k.clone(),
                };
                self.insert_json(Some(&key), v);
            }
            return;
        }
        let Some(key) = prefix else { return };
        let text = match v {
            Value::Null => return,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.text.insert(key.to_string(), text);
    }
}

fn data_url(url: &str) -> Option<Vec<u8>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    if !meta.ends_with(";base64") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .ok()
}

fn bad_body(detail: impl std::fmt::Display) -> ServerError {
    ServerError::BadRequest {
        message: format!("could not read the request body ({detail}); send multipart/form-data, application/json or application/x-www-form-urlencoded"),
        param: None,
        code: "invalid_body",
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &S) -> ServerResult<Self> {
        let kind = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut fields = Fields::default();
        if kind.starts_with("multipart/form-data") {
            let mut parts = Multipart::from_request(req, state)
                .await
                .map_err(bad_body)?;
            while let Some(part) = parts.next_field().await.map_err(bad_body)? {
                let name = part.name().unwrap_or_default().to_string();
                let is_file = part.file_name().is_some();
                let bytes = part.bytes().await.map_err(bad_body)?;
                if is_file {
                    fields.files.insert(name, bytes.to_vec());
                } else {
                    let text = String::from_utf8(bytes.to_vec())
                        .map_err(|_| bad_body(format!("field `{name}` is not UTF-8")))?;
                    fields.text.insert(name, text);
                }
            }
        } else if kind.starts_with("application/json") {
            let Json(v): Json<Value> = Json::from_request(req, state).await.map_err(bad_body)?;
            if !v.is_object() {
                return Err(bad_body("the JSON body must be an object"));
            }
            fields.insert_json(None, &v);
        } else if kind.starts_with("application/x-www-form-urlencoded") {
            let Form(map): Form<HashMap<String, String>> =
                Form::from_request(req, state).await.map_err(bad_body)?;
            fields.text = map;
        } else {
            return Err(bad_body(format!("content type {kind:?}")));
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_flatten_like_multipart_fields() {
        let mut f = Fields::default();
        f.insert_json(
            None,
            &serde_json::json!({"prompt": "p", "seconds": 4, "loop": true, "video": {"id": "video_1"}, "x": null}),
        );
        assert_eq!(f.text("prompt"), Some("p"));
        assert_eq!(f.text("seconds"), Some("4"));
        assert_eq!(f.text("loop"), Some("true"));
        assert_eq!(f.text("video[id]"), Some("video_1"));
        assert_eq!(f.text("x"), None);
        assert_eq!(f.number::<f64>("seconds", "a number").unwrap(), Some(4.0));
        assert!(matches!(
            f.number::<u64>("prompt", "an integer"),
            Err(ServerError::BadRequest {
                param: Some("prompt"),
                ..
            })
        ));
    }

    #[test]
    fn data_urls_decode_and_other_urls_are_refused_by_name() {
        let mut f = Fields::default();
        f.text.insert(
            "input_reference[image_url]".into(),
            "data:image/png;base64,aGVsbG8=".into(),
        );
        assert_eq!(f.file("input_reference").unwrap(), Some(b"hello".to_vec()));
        f.text.insert(
            "input_reference[image_url]".into(),
            "https://example.com/a.png".into(),
        );
        let err = f.file("input_reference").unwrap_err().to_string();
        assert!(err.contains("data: URL"), "{err}");
        assert_eq!(f.file("video").unwrap(), None);
    }
}
