//! The one place where failures become HTTP statuses and [`ErrorBody`] replies.

use adaptsched_api::ErrorBody;
use adaptsched_store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error reply: a status and a body that names the field and value at fault when it can.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                field: None,
                value: None,
            },
        }
    }

    /// A 400 about one field of the request, e.g. `field("min_gpus", "9", "more than ...")`.
    pub fn field(field: &str, value: impl Into<String>, why: &str) -> Self {
        let value = value.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: format!("invalid {field} {value}: {why}"),
                field: Some(field.to_string()),
                value: Some(value),
            },
        }
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn unauthorized(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, error)
    }

    pub fn forbidden(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl From<StoreError> for ApiError {
    /// What the user got wrong is a 4xx naming it; anything wrong with the database is a 500.
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::UnknownJob(_) => ApiError::not_found(message),
            StoreError::InvalidTransition { .. } | StoreError::JobFinished { .. } => {
                ApiError::new(StatusCode::CONFLICT, message)
            }
            StoreError::InvalidValue { field, value } => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    error: message,
                    field: Some(field.to_string()),
                    value: Some(value),
                },
            },
            StoreError::UnknownState(value) => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: ErrorBody {
                    error: message,
                    field: Some("state".to_string()),
                    value: Some(value),
                },
            },
            _ => {
                tracing::error!("store: {message}");
                ApiError::internal(message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.body.error)
    }
}
