//! The page: static HTML, CSS and JavaScript from `services/gateway/console/`,
//! compiled into the binary. No build step, and nothing from elsewhere:
//! the console works offline. Every response forbids inline and foreign
//! scripts (Content-Security-Policy), so even text that escaped its
//! escaping could not run.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Console;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");
const LOGIN: &str = include_str!("../../console/login.html");

/// The page's policy: its own script and style only, talking only to its
/// own origin, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The login page's: no script at all, its one inline style block.
const LOGIN_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// `GET /console`: the page, or (401) the login form.
pub(super) async fn index(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console").await {
        Ok(_) => asset(INDEX, "text/html; charset=utf-8", CSP),
        Err(refused) => refused,
    }
}

/// `GET /console/app.js`.
pub(super) async fn script(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console/app.js").await {
        Ok(_) => asset(SCRIPT, "text/javascript; charset=utf-8", CSP),
        Err(refused) => refused,
    }
}

/// `GET /console/app.css`.
pub(super) async fn style(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console/app.css").await {
        Ok(_) => asset(STYLE, "text/css; charset=utf-8", CSP),
        Err(refused) => refused,
    }
}

/// The login form, saying why it is shown (escaped), with status 401.
pub(super) fn login(why: &str) -> Response {
    let body = LOGIN.replace("{{why}}", &escape(why));
    let mut response = asset_owned(body, "text/html; charset=utf-8", LOGIN_CSP);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

fn asset(body: &'static str, content_type: &'static str, csp: &'static str) -> Response {
    with_headers(body.into_response(), content_type, csp)
}

fn asset_owned(body: String, content_type: &'static str, csp: &'static str) -> Response {
    with_headers(body.into_response(), content_type, csp)
}

/// The headers every console page carries.
fn with_headers(mut response: Response, content_type: &'static str, csp: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the
    // login form's POST, which the Origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `s` safe to put in HTML text or a quoted attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_for_the_login_page_is_escaped() {
        assert_eq!(
            super::escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
