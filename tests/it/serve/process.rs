//! A `catchd serve` process on a loopback port, and a minimal HTTP/1.1 client for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The binary under test.
pub fn catchd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_catchd"))
}

/// Runs `catchd ARGS`, returning its output.
pub fn run(args: &[&str]) -> Output {
    catchd().args(args).output().unwrap()
}

/// `catchd user add NAME --role ROLE --db DB`, returning the token.
#[track_caller]
pub fn add_user(db: &Path, name: &str, role: &str, password: Option<&str>) -> String {
    let mut c = catchd();
    c.args(["user", "add", name, "--role", role, "--db"])
        .arg(db);
    if password.is_some() {
        c.arg("--password-stdin");
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(pw) = password {
        writeln!(child.stdin.take().unwrap(), "{pw}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 40, "a token is 40 hex characters: {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    token
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `catchd serve` on a free loopback port with this database.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        Server::launch("serve", db, extra)
    }

    /// Starts the daemon, `catchd run`, on a free loopback port with this database.
    pub fn run(db: &Path, extra: &[&str]) -> Server {
        Server::launch("run", db, extra)
    }

    fn launch(command: &str, db: &Path, extra: &[&str]) -> Server {
        Server::launch_with(catchd(), command, db, extra)
    }

    /// [`start`](Server::start)/[`run`](Server::run) from a prepared command (limits set
    /// with `pre_exec`, environment …).
    pub fn launch_with(mut cmd: Command, command: &str, db: &Path, extra: &[&str]) -> Server {
        cmd.arg(command);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .arg("--db")
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "catchd=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push_str(&line);
            log.lock().unwrap().push('\n');
            let rest = line
                .split("Serving the BHR API on http://")
                .nth(1)
                .or_else(|| line.split("BHR API on http://").nth(1))
                .or_else(|| line.split("replica on http://").nth(1));
            if let Some(rest) = rest {
                let host = rest.split('/').next().unwrap();
                addr = Some(host.parse().unwrap());
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.wait();
            panic!("catchd {command} did not start:\n{}", log.lock().unwrap());
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Server { child, addr, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A GET that must answer 200 with JSON.
    #[track_caller]
    pub fn json(&self, path: &str, auth: &str) -> serde_json::Value {
        let (status, body) = self.request("GET", path, Some(auth), None);
        assert_eq!(status, 200, "GET {path}: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    /// A JSON POST; returns the status and the parsed answer.
    pub fn post(
        &self,
        path: &str,
        auth: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.request(
            "POST",
            path,
            Some(auth),
            Some(("application/json", &body.to_string())),
        );
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    /// A request (the connection is closed afterwards).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> (u16, String) {
        http(self.addr, method, path, auth, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and body. `auth` is
/// the whole `Authorization` value; `body` is (content type, text).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req += &format!("Authorization: {a}\r\n");
    }
    let (ctype, text) = body.unwrap_or(("", ""));
    if body.is_some() {
        req += &format!("Content-Type: {ctype}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n{text}", text.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {raw:?}"));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if chunked {
        return (
            status,
            dechunk(body).unwrap_or_else(|| panic!("bad chunks: {raw:?}")),
        );
    }
    (status, body.to_string())
}

/// The body of a `Transfer-Encoding: chunked` answer (long listings are streamed).
pub fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(after.get(..n)?);
        rest = after.get(n..)?.strip_prefix("\r\n")?;
    }
}
