//! The console (`/ui`): a page over the admin API, compiled into the binary (no CDN, no network
//! at run time). The page and its script carry no data, so they are served without a token;
//! every value comes from the API, with the token the operator types in (kept in the browser
//! tab's session storage), so the API's access rules hold: reads with the read token, pausing
//! and resuming, replaying and resetting with the admin token.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const EXPLORE: &str = include_str!("ui/explore.js");
const OPERATE: &str = include_str!("ui/operate.js");
const STYLE: &str = include_str!("ui/style.css");
const EXPLORE_STYLE: &str = include_str!("ui/explore.css");
const OPERATE_STYLE: &str = include_str!("ui/operate.css");

/// Only this origin's script and style; never framed.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/explore.js", get(|| async { asset("text/javascript; charset=utf-8", EXPLORE) }))
        .route("/ui/operate.js", get(|| async { asset("text/javascript; charset=utf-8", OPERATE) }))
        .route("/ui/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/ui/explore.css", get(|| async { asset("text/css; charset=utf-8", EXPLORE_STYLE) }))
        .route("/ui/operate.css", get(|| async { asset("text/css; charset=utf-8", OPERATE_STYLE) }))
}
