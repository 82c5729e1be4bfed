//! Errors as the OpenAI API reports them: an HTTP status and
//! `{"error": {"message", "type", "param", "code"}}`, each message naming the fix.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A request the server will not run; `param` names the offending field.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    },
    #[error("no video with id {0:?}; list the existing ones with GET /v1/videos")]
    NotFound(String),
    #[error("video {id} is {status}, so it has no content yet; poll GET /v1/videos/{id} until its status is completed")]
    NotReady { id: String, status: &'static str },
    #[error("missing or unknown API key; send `Authorization: Bearer KEY` with a key the server was started with (--api-key)")]
    Unauthorized,
    #[error("requests from pages at {origin} are refused (another site's page must not drive this server); start it with --cors-origin {allow} to allow that web app")]
    ForeignOrigin { origin: String, allow: String },
    #[error("job store: {detail}")]
    Store { detail: String },
    #[error("{0}")]
    Internal(String),
}

pub type ServerResult<T> = Result<T, ServerError>;

impl ServerError {
    pub fn bad(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ServerError::BadRequest {
            message: message.into(),
            param: Some(param),
            code,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ServerError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::NotReady { .. } => StatusCode::CONFLICT,
            ServerError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServerError::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
            ServerError::Store { .. } | ServerError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Store {
            detail: e.to_string(),
        }
    }
}

impl From<serde_json::Error> for ServerError {
    fn from(e: serde_json::Error) -> Self {
        ServerError::Internal(format!("encoding a job: {e}"))
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, param, code) = match &self {
            ServerError::BadRequest { param, code, .. } => ("invalid_request_error", *param, *code),
            ServerError::NotFound(_) => ("invalid_request_error", None, "not_found"),
            ServerError::NotReady { .. } => ("invalid_request_error", None, "video_not_ready"),
            ServerError::Unauthorized => ("invalid_request_error", None, "invalid_api_key"),
            ServerError::ForeignOrigin { .. } => {
                ("invalid_request_error", None, "origin_not_allowed")
            }
            ServerError::Store { .. } | ServerError::Internal(_) => {
                ("server_error", None, "internal_error")
            }
        };
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        (status, Json(body)).into_response()
    }
}
