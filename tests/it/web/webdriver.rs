//! A small W3C WebDriver client for Debian's ChromeDriver and Chromium (headless), over
//! the tests' plain HTTP/1.1 client. Screenshots go to `target/artefacts/web/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::bus::free_port;

use std::io::{BufRead, BufReader, Read, Write};

/// One request to ChromeDriver, which keeps connections open: the answer is read by its
/// `Content-Length`.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    _auth: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let (ctype, text) = body.unwrap_or(("application/json", ""));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut out = Vec::new();
    match len {
        Some(n) => {
            out.resize(n, 0);
            r.read_exact(&mut out).unwrap();
        }
        None => {
            r.read_to_end(&mut out).unwrap();
        }
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A ChromeDriver process, killed when dropped (also when starting a session fails).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium driven through its own ChromeDriver; both end when dropped.
pub struct Browser {
    _driver: Driver,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// Where screenshots are kept.
pub fn artefacts() -> PathBuf {
    let d = crate::support::root().join("target/artefacts/web");
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Browser {
    /// Starts ChromeDriver and a Chromium window of 1280×900, with JavaScript on or off.
    pub fn start(javascript: bool) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: `./x test` installs Debian's chromium and chromium-driver"
            );
        }
        let port = free_port();
        let driver = Driver(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                let (s, body) = http(addr, "GET", "/status", None, None);
                if s == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags that work on this machine (closed network, root, no GPU).
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut options = json!({"binary": "/usr/bin/chromium", "args": args});
        if !javascript {
            options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "timeouts": {"pageLoad": 30000, "script": 10000, "implicit": 0},
        }}});
        let (status, body) = http(
            addr,
            "POST",
            "/session",
            None,
            Some(("application/json", &caps.to_string())),
        );
        assert_eq!(status, 200, "new session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            _driver: driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let text = body.map(|b| b.to_string());
        let (status, out) = http(
            self.addr,
            method,
            &path,
            None,
            text.as_deref().map(|t| ("application/json", t)),
        );
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {status} {}", v["value"]))
        }
    }

    #[track_caller]
    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens a URL and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    /// The address shown.
    pub fn url(&self) -> String {
        self.must("GET", "/url", None).as_str().unwrap().to_string()
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.must("GET", "/source", None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<String> {
        self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_string))
    }

    /// The first element matching a CSS selector.
    #[track_caller]
    pub fn find(&self, css: &str) -> String {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no {css} on {}:\n{}", self.url(), self.source()))
    }

    /// Types into an element.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.must("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.must(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks an element (and waits for a page it opens to load).
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.must("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// The visible text of an element.
    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.must("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until the visible text of `css` contains `want`; returns it.
    #[track_caller]
    pub fn wait_text(&self, css: &str, want: &str, secs: u64) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.try_find(css)
                && let Ok(v) = self.call("GET", &format!("/element/{e}/text"), None)
                && let Some(t) = v.as_str()
                && t.contains(want)
            {
                return t.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{css} never showed {want:?} on {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resizes the window.
    pub fn size(&self, width: u32, height: u32) {
        self.must(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a screenshot of the window as `target/artefacts/web/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.must("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let p = artefacts().join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session first (Chromium exits), then the driver (dropped after this).
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
            None,
        );
    }
}
