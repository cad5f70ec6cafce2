//! The web dashboard: a small single-page app served at `/` (assets under
//! `/ui/`), compiled into the binary. It uses only the public REST API and its
//! Server-Sent Events, so it shows exactly what any API client can see; with
//! API tokens on, the page asks for one and sends it on every API call, while
//! the assets themselves are served without one.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
/// The log viewer (pages of a huge log loaded on demand, the tail over SSE).
const LOGVIEW_JS: &str = include_str!("dashboard/logview.js");
/// The job page's timeline of state changes.
const TIMELINE_JS: &str = include_str!("dashboard/timeline.js");

/// Asset paths, for the auth layer: these are served without a token.
pub(crate) fn is_asset(path: &str) -> bool {
    matches!(
        path,
        "/" | "/ui/" | "/ui/app.js" | "/ui/app.css" | "/ui/logview.js" | "/ui/timeline.js"
    )
}

/// The dashboard's routes, merged into the REST router.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .route("/ui/logview.js", get(|| async { script(LOGVIEW_JS) }))
        .route("/ui/timeline.js", get(|| async { script(TIMELINE_JS) }))
}

/// Assets change with the binary: revalidate instead of caching stale copies.
const NO_CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), NO_CACHE],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    script(APP_JS)
}

fn script(js: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_CACHE,
        ],
        js,
    )
}

async fn app_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), NO_CACHE],
        APP_CSS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_the_assets_it_is_served_with() {
        for asset in [
            "/ui/app.js",
            "/ui/app.css",
            "/ui/logview.js",
            "/ui/timeline.js",
        ] {
            assert!(INDEX_HTML.contains(asset), "index.html loads {asset}");
            assert!(is_asset(asset));
        }
        assert!(is_asset("/"));
        assert!(!is_asset("/api/v1/jobs"));
        assert!(!is_asset("/ui/../api/v1/jobs"));
    }
}
