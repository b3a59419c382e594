//! Who may call what, what they send, and the audit trail.
//!
//! - Probes are open. Read-only endpoints take the read token or the admin token, unless
//!   `EVENTKIT_ADMIN_OPEN` opens them. Actions take the admin token. A request is checked on
//!   its headers alone, before any byte of its body is read: an unauthenticated client cannot
//!   make the server buffer anything.
//! - Bodies are JSON (`415` otherwise), within the endpoint's limit (`413`, from the declared
//!   length before reading, or as soon as the limit is passed), and arrive within the body
//!   timeout (`408`). Every refusal is the API's JSON error.
//! - Every action and every refused token is logged on the `eventkit::audit` target: the
//!   action, its target, the outcome and the client's address, never a token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::{Admin, ApiError};

/// The log target of the audit lines.
pub(crate) const AUDIT: &str = "eventkit::audit";

/// What an endpoint asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A read-only endpoint (its name in `EVENTKIT_ADMIN_OPEN`).
    Read(&'static str),
    /// An action (publish, replay).
    Action(&'static str),
}

/// The target of an action, for its audit line (the handler puts it on the response).
#[derive(Debug, Clone)]
pub(crate) struct Audited(pub String);

/// Which token a request carried, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Anonymous,
    ReadToken,
    AdminToken,
}

impl Principal {
    fn name(self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::ReadToken => "read-token",
            Principal::AdminToken => "admin-token",
        }
    }
}

/// The bearer token of a request: the scheme is case-insensitive (RFC 9110 § 11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn same(given: &str, token: &str) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()))
}

impl Admin {
    /// Checks a request's headers against what `access` asks.
    fn authorize(&self, access: Access, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let settings = &self.config.admin;
        let given = bearer(headers);
        let principal = match given {
            Some(g) if settings.token.as_deref().is_some_and(|t| same(g, t)) => Principal::AdminToken,
            Some(g) if settings.read_token.as_deref().is_some_and(|t| same(g, t)) => Principal::ReadToken,
            _ => Principal::Anonymous,
        };
        match access {
            Access::Read(name) if settings.open.contains(name) => Ok(principal),
            Access::Read(_) if principal != Principal::Anonymous => Ok(principal),
            Access::Action(_) if principal == Principal::AdminToken => Ok(principal),
            Access::Read(name) if settings.token.is_none() && settings.read_token.is_none() => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this endpoint is disabled: set EVENTKIT_ADMIN_READ_TOKEN (or EVENTKIT_ADMIN_TOKEN), or open it with EVENTKIT_ADMIN_OPEN={name}"),
            )),
            Access::Action(_) if settings.token.is_none() => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "this endpoint is disabled: set EVENTKIT_ADMIN_TOKEN to enable it"))
            }
            Access::Action(_) if principal == Principal::ReadToken => Err(ApiError::new(StatusCode::FORBIDDEN, "the read token does not allow actions")),
            _ if given.is_some() => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong bearer token")),
            Access::Read(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <EVENTKIT_ADMIN_READ_TOKEN or EVENTKIT_ADMIN_TOKEN>`")),
            Access::Action(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <EVENTKIT_ADMIN_TOKEN>`")),
        }
    }
}

/// The caller's address, as the audit log and the operators' commands name it.
pub(super) fn client(request: &Request) -> String {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default()
}

/// The middleware in front of every guarded endpoint: checks the token on the headers (the
/// body is not read yet), and writes the audit line of actions and refusals.
pub(super) async fn guard(State((admin, access)): State<(Arc<Admin>, Access)>, request: Request, next: Next) -> Response {
    let client = client(&request);
    let path = request.uri().path().to_owned();
    let principal = match admin.authorize(access, request.headers()) {
        Ok(p) => p,
        Err(refused) => {
            let action = match access {
                Access::Read(name) | Access::Action(name) => name,
            };
            warn!(target: AUDIT, action, path = %path, client = %client, status = refused.status.as_u16(), reason = %refused.message, "admin request refused");
            return refused.into_response();
        }
    };
    let response = next.run(request).await;
    if let Access::Action(action) = access {
        let target = response.extensions().get::<Audited>().map(|a| a.0.clone()).unwrap_or_default();
        let status = response.status().as_u16();
        info!(target: AUDIT, action, resource = %target, status, principal = principal.name(), client = %client, "admin action");
    }
    response
}

/// Reads a JSON body for `endpoint` within its limits, then parses it: `415` when it is not
/// JSON by its content type, `413` over the endpoint's limit, `408` when it does not arrive in
/// time, `400` when it is not JSON, `422` naming the field when it does not fit.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(admin: &Admin, endpoint: &str, request: Request) -> Result<T, ApiError> {
    let settings = &admin.config.admin;
    let headers = request.headers();
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default();
        let essence = kind.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if essence != "application/json" && !(essence.starts_with("application/") && essence.ends_with("+json")) {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("the body must be JSON (Content-Type: application/json), not `{kind}`")));
        }
    }
    let limit = settings.body_limit(endpoint);
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than this endpoint takes ({limit} bytes; EVENTKIT_ADMIN_BODY_LIMITS={endpoint}=SIZE)"))
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(request.into_body(), limit);
    let bytes = match tokio::time::timeout(settings.body_timeout, read).await {
        Err(_) => return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {:?} (EVENTKIT_ADMIN_BODY_TIMEOUT_MS)", settings.body_timeout))),
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))),
        Ok(Ok(bytes)) => bytes,
    };
    super::parse_json(&bytes)
}

/// Whether reading a body failed on the length limit.
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "bearer abc", "BEARER   abc ", "bEaReR\tabc"] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearerabc", "abc"] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), None, "{value:?}");
        }
    }
}
