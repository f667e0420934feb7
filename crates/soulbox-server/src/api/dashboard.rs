//! The web dashboard: static assets embedded in the binary and served at `/dashboard/` on the API's port.
//!
//! The assets hold no data and need no key: the page signs in with an API key the user types (kept in the tab's
//! sessionStorage) and calls the ordinary REST API and, for the terminal and the file browser, envd through the
//! sandbox proxy (`E2b-Sandbox-Id` headers, same origin). Every response carries a strict Content-Security-Policy
//! (scripts only from this origin, no inline script, no plugins, no framing) because the pages show
//! attacker-controlled strings (sandbox metadata, file names, build logs, terminal output).

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use super::{ApiState, error};

/// `connect-src 'self'`: the API and the sandbox proxy share the dashboard's origin. Nothing else may load: no
/// inline script or style, no other origin, no plugins, no forms posted elsewhere, no framing of the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded files: name under `/dashboard/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../dashboard/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../dashboard/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/dom.js")),
    ("sandboxes.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/sandboxes.js")),
    ("chart.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/chart.js")),
    ("envd.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/envd.js")),
    ("terminal.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/terminal.js")),
    ("files.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/files.js")),
    ("admin.js", "text/javascript; charset=utf-8", include_str!("../../dashboard/admin.js")),
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(|| async { asset("index.html") }))
        .route("/dashboard/{file}", get(|Path(file): Path<String>| async move { asset(&file) }))
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error(StatusCode::NOT_FOUND, format!("no dashboard file {name}"));
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The key is typed into this page: no Referer to anything, and no stale copy after an upgrade.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_the_security_headers() {
        for (name, content_type, body) in ASSETS {
            let r = asset(name);
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], *content_type);
            assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self';"));
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert!(!body.is_empty(), "{name} is empty");
        }
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }

    /// ` onclick=`-style attributes (inline handlers).
    fn has_event_attribute(html: &str) -> bool {
        html.split(" on").skip(1).any(|rest| {
            let name_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    #[test]
    fn no_asset_has_inline_script_or_a_remote_url() {
        for (name, _, body) in ASSETS {
            // Scripts load only as <script type=module src=...>: inline code would be refused by the CSP anyway,
            // and a CDN URL would break an offline install.
            let body = body.replace("http://www.w3.org/2000/svg", ""); // the SVG namespace, not a fetch
            assert!(!body.contains("http://") && !body.contains("https://"), "{name} names a remote URL");
            assert!(!body.contains("innerHTML") && !body.contains("outerHTML"), "{name} renders HTML from strings");
            if name.ends_with(".html") {
                assert!(!body.contains("<script>") && !has_event_attribute(&body), "{name} has inline script");
            }
        }
    }
}
