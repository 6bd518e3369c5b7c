//! A real headless Chromium, driven through WebDriver, for tests of the web
//! console: Debian's `chromium` and `chromedriver`
//! (`ops/scripts/install-chromium.sh` installs them; `ops/scripts/test.sh`
//! sets `SOPHIA_CHROMEDRIVER`), a fresh profile per [`Browser`], and
//! everything killed on drop.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let browser = sophia_tests::browser::Browser::start().await?;
//! browser.goto("http://127.0.0.1:8000/console").await?;
//! browser.click("#refresh").await?;
//! browser.wait_for_text("#tools", "echo").await?;
//! browser.no_script_ran().await?;
//! # Ok(()) }
//! ```
//!
//! chromedriver is started with `--port=0`: it binds a free port itself and
//! prints `ChromeDriver was started successfully on port N.` on stdout, which
//! is read back here, so no test picks a port and hands it on. It runs in a
//! process group of its own, which Chromium's processes join; drop ends the
//! session (Chromium quits), then kills the whole group.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The chromedriver binary; `/usr/bin/chromedriver` when unset.
pub const CHROMEDRIVER_ENV: &str = "SOPHIA_CHROMEDRIVER";
/// The Chromium binary; `/usr/bin/chromium` when unset.
pub const CHROMIUM_ENV: &str = "SOPHIA_CHROMIUM";
/// Where [`Browser::screenshot`] writes; `<workspace>/target/console-screenshots`
/// when unset.
pub const SCREENSHOTS_ENV: &str = "SOPHIA_SCREENSHOTS";
/// The global an injected script in a test's payload sets
/// (`<script>window.__sophia_xss=1</script>`); [`Browser::no_script_ran`]
/// checks that it is still undefined.
pub const XSS_GLOBAL: &str = "__sophia_xss";

/// How long the `wait_for_*` helpers wait before they fail: generous, for a
/// loaded CI machine; a passing wait returns as soon as the page is there.
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// How long chromedriver has to report its port and answer `/status`.
const DRIVER_START: Duration = Duration::from_secs(20);

/// Chromium's flags. Without the background-networking ones Chromium keeps
/// trying to reach Google's services, which on a closed network is a flood
/// of failing connections.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// A headless Chromium session behind its own chromedriver. Dropping it ends
/// the session and kills chromedriver and every Chromium process.
pub struct Browser {
    client: Client,
    _driver: Driver,
    /// Chromium's `--user-data-dir`; removed after the processes are gone
    /// (fields drop in order).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver (`SOPHIA_CHROMEDRIVER`) and a headless Chromium
    /// (`SOPHIA_CHROMIUM`) with a fresh profile, and opens a session.
    pub async fn start() -> Result<Browser> {
        let driver = Driver::start(&chromedriver()?).await?;
        let profile = tempfile::tempdir().context("a Chromium profile directory")?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            // An alert stays open until no_script_ran looks at it (by
            // default chromedriver dismisses it on the next command).
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": chromium(), "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .with_context(|| format!("open a Chromium session{}", driver.log_tail()))?;
        let mut driver = driver;
        driver.session = client.session_id().await.ok().flatten();
        Ok(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("go to {url}"))
    }

    /// Clicks the first element matching `css` (waiting for it to appear).
    pub async fn click(&self, css: &str) -> Result<()> {
        let element = self.find(css).await?;
        element
            .click()
            .await
            .with_context(|| format!("click {css}"))
    }

    /// Replaces the value of the input matching `css` (waiting for it to
    /// appear) with `value`, typed.
    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let element = self.find(css).await?;
        element
            .clear()
            .await
            .with_context(|| format!("clear {css}"))?;
        element
            .send_keys(value)
            .await
            .with_context(|| format!("type into {css}"))
    }

    /// Runs `js` as a function body in the page (`return` gives the value).
    pub async fn execute(&self, js: &str) -> Result<Value> {
        self.execute_with(js, vec![]).await
    }

    /// The page's current HTML.
    pub async fn page_source(&self) -> Result<String> {
        self.client.source().await.context("read the page source")
    }

    /// Waits until an element matching `css` shows `text` (a substring of
    /// its `innerText`). Fails after [`WAIT`] with what was awaited and what
    /// the page showed, or at once if an alert opened.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<()> {
        let what = format!("an element matching `{css}` showing {text:?}");
        self.wait(&what, css, |texts| texts.iter().any(|t| t.contains(text)))
            .await
    }

    /// Waits until no element matching `css` shows `text` (none may match at
    /// all). Fails like [`Browser::wait_for_text`].
    pub async fn wait_for_gone(&self, css: &str, text: &str) -> Result<()> {
        let what = format!("no element matching `{css}` showing {text:?}");
        self.wait(&what, css, |texts| !texts.iter().any(|t| t.contains(text)))
            .await
    }

    /// Saves a PNG of the viewport as `<dir>/<name>.png` (`dir` is
    /// `SOPHIA_SCREENSHOTS`, else `<workspace>/target/console-screenshots`)
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("take a screenshot")?;
        let dir = std::env::var_os(SCREENSHOTS_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/console-screenshots"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Checks that no injected script ran: no alert (or confirm, prompt) is
    /// open, and `window.__sophia_xss` is undefined. An open alert is
    /// dismissed (so the session goes on) and reported with its text.
    pub async fn no_script_ran(&self) -> Result<()> {
        if let Some(text) = self.open_alert().await? {
            let _ = self.client.dismiss_alert().await;
            bail!("a script ran: an alert was open, saying {text:?}");
        }
        let js = format!(
            "return window.{XSS_GLOBAL} === undefined ? null : String(window.{XSS_GLOBAL})"
        );
        match self.execute(&js).await? {
            Value::Null => Ok(()),
            v => bail!("a script ran: window.{XSS_GLOBAL} is {v}"),
        }
    }

    /// The text of the open alert, if one is open.
    async fn open_alert(&self) -> Result<Option<String>> {
        match self.client.get_alert_text().await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.is_no_such_alert() => Ok(None),
            Err(e) => Err(e).context("ask whether an alert is open"),
        }
    }

    /// The first element matching `css`, once there is one (within [`WAIT`]:
    /// a console renders after its data arrives).
    async fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        let found = self.client.wait().at_most(WAIT).every(POLL);
        found.for_element(Locator::Css(css)).await.map_err(|e| {
            let doing = format!("find an element matching `{css}` (waited up to {WAIT:?})");
            self.explain(e, &doing)
        })
    }

    async fn execute_with(&self, js: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(js, args)
            .await
            .map_err(|e| anyhow!(e).context(format!("run script {js:?}")))
    }

    /// Polls the `innerText` of every element matching `css` until `done`
    /// holds; see [`Browser::wait_for_text`].
    async fn wait(&self, what: &str, css: &str, done: impl Fn(&[String]) -> bool) -> Result<()> {
        let js = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText)";
        let deadline = Instant::now() + WAIT;
        let mut last;
        loop {
            match self.client.execute(js, vec![json!(css)]).await {
                Ok(v) => {
                    let texts: Vec<String> = serde_json::from_value(v).unwrap_or_default();
                    if done(&texts) {
                        return Ok(());
                    }
                    last = format!("elements matching: {texts:?}");
                }
                Err(e) if e.is_unexpected_alert_open() => {
                    return Err(self.explain(e, &format!("wait for {what}")));
                }
                // Between pages there is briefly no document to ask.
                Err(e) => last = format!("error: {e}"),
            }
            if Instant::now() >= deadline {
                let body = self
                    .execute("return document.body ? document.body.innerText : ''")
                    .await
                    .map(|v| v.as_str().unwrap_or_default().chars().take(2000).collect())
                    .unwrap_or_else(|e| format!("(unreadable: {e:#})"));
                bail!("waited {WAIT:?} for {what}; last saw {last}; the page's text:\n{body}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An error for `doing` that names an open alert's text, which is what
    /// makes most commands fail with "unexpected alert open".
    fn explain(&self, e: CmdError, doing: &str) -> anyhow::Error {
        let alert = if e.is_unexpected_alert_open() {
            " (an alert is open: a script ran; Browser::no_script_ran shows its text)"
        } else {
            ""
        };
        anyhow!(e).context(format!("{doing}{alert}"))
    }
}

/// The chromedriver to run: `SOPHIA_CHROMEDRIVER`, else Debian's.
fn chromedriver() -> Result<PathBuf> {
    let path = std::env::var_os(CHROMEDRIVER_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    if !path.is_file() {
        bail!(
            "chromedriver is not installed at {} ({CHROMEDRIVER_ENV}): run \
             ./ops/scripts/install-chromium.sh and set {CHROMEDRIVER_ENV} to the path it \
             prints (./ops/scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// The Chromium to drive: `SOPHIA_CHROMIUM`, else Debian's.
fn chromium() -> String {
    std::env::var(CHROMIUM_ENV).unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A chromedriver process in a process group of its own.
struct Driver {
    child: Child,
    port: u16,
    /// Set once a session is open, to end it on drop.
    session: Option<String>,
    /// chromedriver's stderr (its warnings and errors).
    log: tempfile::NamedTempFile,
}

impl Driver {
    /// Starts `binary --port=0`, reads the port it reports, and waits until
    /// `/status` says it is ready.
    async fn start(binary: &std::path::Path) -> Result<Driver> {
        let log = tempfile::NamedTempFile::new().context("a chromedriver log file")?;
        let mut child = Command::new(binary)
            .arg("--port=0")
            // Chromium's processes join this group; drop kills the group.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().context("the chromedriver log file")?)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut driver = Driver {
            child,
            port: 0,
            session: None,
            log,
        };
        let port = tokio::time::timeout(DRIVER_START, reported_port(stdout))
            .await
            .map_err(|_| anyhow!("chromedriver reported no port within {DRIVER_START:?}"))
            .and_then(|r| r)
            .with_context(|| format!("start chromedriver{}", driver.log_tail()))?;
        driver.port = port;
        driver.ready().await?;
        Ok(driver)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `GET /status` until chromedriver says it is ready.
    async fn ready(&mut self) -> Result<()> {
        crate::install_crypto();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let status = http.get(format!("{}/status", self.url())).send().await;
            if let Ok(response) = status
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return Ok(());
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                bail!("chromedriver exited ({exit}){}", self.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver was not ready within {DRIVER_START:?}{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// chromedriver's stderr, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; chromedriver's log ends with:\n{tail}")
        }
    }
}

/// Reads chromedriver's stdout until it names its port, then keeps draining
/// it on the same thread (so chromedriver never blocks on a full pipe).
async fn reported_port(stdout: std::process::ChildStdout) -> Result<u16> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let port = loop {
            let Some(Ok(line)) = lines.next() else {
                break Err(anyhow!("chromedriver's stdout ended: {seen:?}"));
            };
            // "ChromeDriver was started successfully on port 34045."
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                let digits = rest.trim_end_matches('.').trim();
                break digits
                    .parse::<u16>()
                    .with_context(|| format!("chromedriver's port in {line:?}"));
            }
            seen.push(line);
        };
        let _ = tx.send(port);
        lines.for_each(drop);
    });
    rx.await.context("chromedriver's stdout reader")?
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium cleanly.
        if let Some(session) = &self.session {
            delete_session(self.port, session);
        }
        // Then whatever is left of the group: chromedriver, Chromium.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `DELETE /session/<id>`, blocking (drop cannot await), bounded by
/// timeouts; errors are ignored, the group is killed after anyway.
fn delete_session(port: u16, session: &str) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // chromedriver answers once Chromium has quit, and keeps the connection
    // open despite `Connection: close`: read one response, by its length.
    let mut response = Vec::new();
    let mut buf = [0; 1024];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        response.extend_from_slice(&buf[..n]);
        if complete(&response) {
            break;
        }
    }
}

/// Whether `response` holds a whole HTTP response with a `Content-Length`.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_none_or(|length| body.len() >= length)
}
