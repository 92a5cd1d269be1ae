//! `ProbeError`: every failure of a route as a status code and a JSON `{"code","message"}`;
//! a node's own error code is passed through.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::NodeId;
use crate::client::ClientError;
use crate::message::ErrorCode;

/// Why a probe request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request body is over the cap (413).
    #[error("request body over the {0} byte cap")]
    TooLarge(usize),
    /// No such route or peer (404).
    #[error("{0}")]
    NotFound(String),
    /// The method is not served on this route (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The node refused a block (422).
    #[error("{0}")]
    Rejected(String),
    /// The node cannot be reached or broke the exchange (502).
    #[error("node {node} is unreachable: is it running? ({detail})")]
    Unreachable { node: NodeId, detail: String },
    /// The node did not answer in time (504).
    #[error("node {node} did not answer in time")]
    Timeout { node: NodeId },
    /// The node answered with an error the probe cannot map more precisely (502).
    #[error("node {node} failed: {message}")]
    Node {
        node: NodeId,
        code: ErrorCode,
        message: String,
    },
    /// The node refused an admin request: the probe lacks its cookie (403).
    #[error("{0}")]
    Unauthorized(String),
    /// A page of another origin asked for a change (403).
    #[error("refused a cross-site request ({0}); use the dashboard on this probe, or curl")]
    CrossSite(String),
    /// The request names the probe by a host name it does not answer to (421): a DNS name
    /// pointed at the probe by someone else (rebinding).
    #[error(
        "this probe does not answer to the host {0:?}; use its address, localhost, or start \
         it with --allow-host NAME"
    )]
    Misdirected(String),
}

impl ProbeError {
    /// Maps a client failure talking to `node`.
    pub(crate) fn from_client(node: NodeId, e: ClientError) -> Self {
        let port = node.port();
        match e {
            ClientError::Timeout { .. } => ProbeError::Timeout { node },
            ClientError::Node { code, message, .. } => match code {
                ErrorCode::UnknownPeer => ProbeError::NotFound(message),
                ErrorCode::BadPeer | ErrorCode::TooLarge | ErrorCode::BadRequest => {
                    ProbeError::BadRequest(message)
                }
                ErrorCode::Unauthorized => ProbeError::Unauthorized(format!(
                    "node {node} refused: {message}; the probe reads it from \
                     <home>/nodes/{port}/.cookie (or <home>/networks/*/nodes/{port}/.cookie)"
                )),
                code => ProbeError::Node {
                    node,
                    code,
                    message,
                },
            },
            ClientError::Unreachable { reason, .. } => ProbeError::Unreachable {
                node,
                detail: reason,
            },
            other => ProbeError::Unreachable {
                node,
                detail: other.to_string(),
            },
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ProbeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProbeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProbeError::NotFound(_) => StatusCode::NOT_FOUND,
            ProbeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProbeError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ProbeError::Unreachable { .. } | ProbeError::Node { .. } => StatusCode::BAD_GATEWAY,
            ProbeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProbeError::Unauthorized(_) | ProbeError::CrossSite(_) => StatusCode::FORBIDDEN,
            ProbeError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// Returns the machine-readable code of the error body: the node's own code when the
    /// node refused, else the probe's.
    pub fn code(&self) -> &'static str {
        match self {
            ProbeError::BadRequest(_) => "bad_request",
            ProbeError::TooLarge(_) => "too_large",
            ProbeError::NotFound(_) => "not_found",
            ProbeError::MethodNotAllowed => "method_not_allowed",
            ProbeError::Rejected(_) => "rejected",
            ProbeError::Unreachable { .. } => "unreachable",
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Node { code, .. } => code.as_str(),
            ProbeError::Unauthorized(_) => "unauthorized",
            ProbeError::CrossSite(_) => "cross_site",
            ProbeError::Misdirected(_) => "misdirected",
        }
    }
}

impl IntoResponse for ProbeError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{status}: {self}");
        }
        let body = json!({ "code": self.code(), "message": self.to_string() });
        (status, Json(body)).into_response()
    }
}
