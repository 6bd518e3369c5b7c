//! The browser harness against a real page: a tiny site served in-process,
//! driven by a real headless Chromium (ops/scripts/install-chromium.sh).

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use sophia_tests::browser::{Browser, WAIT};

/// What a hostile tool or agent might return: markup that runs script if a
/// page puts it into the DOM as HTML.
const PAYLOAD: &str =
    r#"<script>window.__sophia_xss=1</script><img src=x onerror="window.__sophia_xss=2">"#;

const INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Browser smoke</title>
<script src="/app.js" defer></script></head>
<body><h1>Browser smoke</h1>
<input id="name"> <button id="go">Go</button>
<p id="status">waiting</p>
<pre id="untrusted"></pre>
</body></html>"#;

/// Puts the payload in as text, as the console must.
const APP_JS: &str = r#"
document.getElementById('untrusted').textContent = PAYLOAD;
document.getElementById('go').addEventListener('click', () => {
  document.getElementById('status').textContent =
    'clicked by ' + document.getElementById('name').value;
});
"#;

/// Puts the payload in as HTML, as the console must not: its onerror runs.
const UNSAFE_JS: &str = r#"
document.getElementById('untrusted').innerHTML = PAYLOAD;
document.getElementById('go').addEventListener('click', () => alert('injected'));
"#;

async fn site() -> String {
    let script = |body: &'static str| {
        let js = format!("const PAYLOAD = {};\n{body}", serde_json::json!(PAYLOAD));
        get(move || async move { ([(CONTENT_TYPE, "text/javascript")], js) })
    };
    let page = |js: &'static str| {
        let html = INDEX.replace("/app.js", js);
        get(move || async move { axum::response::Html(html) })
    };
    let app = Router::new()
        .route("/", page("/app.js"))
        .route("/app.js", script(APP_JS))
        .route("/unsafe", page("/unsafe.js"))
        .route("/unsafe.js", script(UNSAFE_JS));
    format!("http://{}", sophia_tests::serve_on_free_port(app).await)
}

#[tokio::test]
async fn a_click_changes_the_page_and_untrusted_text_stays_text() -> anyhow::Result<()> {
    let site = site().await;
    let browser = Browser::start().await?;
    browser.goto(&site).await?;
    browser.wait_for_text("#untrusted", "<img src=x").await?;

    browser.fill("#name", "ada").await?;
    browser.click("#go").await?;
    browser.wait_for_text("#status", "clicked by ada").await?;
    browser.wait_for_gone("#status", "waiting").await?;

    let shot = browser.screenshot("browser-smoke").await?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    let source = browser.page_source().await?;
    assert!(
        source.contains("&lt;script&gt;window.__sophia_xss=1"),
        "{source}"
    );
    let title = browser.execute("return document.title").await?;
    assert_eq!(title, "Browser smoke");
    browser.no_script_ran().await?;
    Ok(())
}

#[tokio::test]
async fn no_script_ran_reports_an_injected_script_and_an_alert() -> anyhow::Result<()> {
    let site = site().await;
    let browser = Browser::start().await?;
    browser.goto(&format!("{site}/unsafe")).await?;
    let b = &browser;
    let ran = sophia_tests::eventually("the injected onerror to run", WAIT, || async move {
        b.no_script_ran().await.err()
    })
    .await;
    assert!(
        ran.to_string().contains("window.__sophia_xss is \"2\""),
        "{ran:#}"
    );

    browser.click("#go").await?;
    let err = browser.wait_for_text("#status", "never").await.unwrap_err();
    assert!(format!("{err:#}").contains("an alert is open"), "{err:#}");
    let ran = browser.no_script_ran().await.unwrap_err();
    assert!(ran.to_string().contains("\"injected\""), "{ran:#}");
    // The alert was dismissed: the session goes on.
    browser.wait_for_text("#status", "waiting").await?;
    Ok(())
}
