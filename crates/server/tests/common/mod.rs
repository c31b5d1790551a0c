//! Shared by the editing tests: start `phx-server` on free ports (killed on
//! drop), install the Node packages of `tests/js`, and run a node script there.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// A running `phx-server`, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:<port>` of the main listener.
    pub addr: String,
    /// `127.0.0.1:<port>` of the admin listener.
    pub admin: String,
}

fn address(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

impl Server {
    /// Starts `phx-server --port 0 --admin-bind 127.0.0.1:0` with `extra` arguments
    /// and `PHX_API_TOKEN` set to `token` (unset when `None`). Without a
    /// `--database-url` in `extra` the records live in memory (a fresh
    /// database per server, so that tests running at once do not share one).
    pub fn start(token: Option<&str>, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_phx-server"));
        cmd.args(["--port", "0", "--admin-bind", "127.0.0.1:0"])
            .args(extra)
            .env_remove("PHX_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env_remove("PHX_API_TOKEN")
            .stdout(Stdio::piped());
        if let Some(token) = token {
            cmd.env("PHX_API_TOKEN", token);
        }
        if !extra.contains(&"--database-url") {
            cmd.args(["--database-url", "sqlite::memory:"]);
        }
        let mut child = cmd.spawn().expect("phx-server starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut main, mut admin) = (String::new(), String::new());
        out.read_line(&mut main).expect("banner");
        out.read_line(&mut admin).expect("admin banner");
        Server {
            child,
            addr: address(&main),
            admin: address(&admin),
        }
    }
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful stop) and waits until the process is gone.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "SIGTERM sent");
        let _ = self.child.wait();
    }

    /// Sends SIGKILL (a crash) and waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `crates/server/tests/js`, with its packages installed from the lock file.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/phoenix").exists()
        || !dir.join("node_modules/playwright-core").exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm is needed for the phoenix.js tests (install Node.js and npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}

/// Runs `node <script> <args>` in `tests/js`.
pub fn node(script: &str, args: &[String]) -> Output {
    Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .output()
        .expect("node is needed for the phoenix.js tests (install Node.js)")
}

/// One HTTP/1.1 request; returns the status code and the body.
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Runs `phx-server` with `args` (and `env`, without the secrets' variables)
/// and returns what it wrote to stderr, asserting that it refused to start: it
/// exited, non-zero, within 60 s.
pub fn refused_start(args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phx-server"));
    cmd.args(["--port", "0", "--admin-bind", "127.0.0.1:0"])
        .args(["--database-url", "sqlite::memory:"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("PHX_SECRET_KEY_BASE")
        .env_remove("PHX_JWT_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("phx-server starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("phx-server {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "phx-server {args:?} exited 0");
    stderr
}

/// A node script in `tests/js` that prints one line per step and may ask the
/// test to act (kill a node, stop the database) by printing a request line
/// and waiting for an answer line on its stdin. Killed when dropped.
pub struct Script {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
}

/// Starts `node <argv>` in `tests/js` with piped stdin and stdout; stderr is
/// the test's. Each stdout line arrives on the receiver with the time it was
/// read. The child is the caller's to kill.
pub fn node_script(
    argv: &[String],
) -> (
    Child,
    std::process::ChildStdin,
    std::sync::mpsc::Receiver<(std::time::Instant, String)>,
) {
    let mut child = Command::new("node")
        .args(argv)
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is needed for the phoenix.js tests (install Node.js)");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((std::time::Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (child, stdin, lines)
}

impl Script {
    /// Starts `node <script> <args>` in `tests/js`.
    pub fn start(script: &str, args: &[String]) -> Script {
        let mut argv = vec![script.to_owned()];
        argv.extend(args.iter().cloned());
        let (child, stdin, lines) = node_script(&argv);
        Script {
            child,
            stdin,
            lines,
        }
    }

    /// Reads lines until the closing `<n> passed, <m> failed` or an `error`
    /// line, giving each line to `act` first; when `act` returns an answer it is
    /// written to the script's stdin. Returns every line seen, the last one
    /// being the outcome (or a line saying the `limit` ran out).
    pub fn run(
        &mut self,
        limit: std::time::Duration,
        mut act: impl FnMut(&str) -> Option<&'static str>,
    ) -> Vec<String> {
        use std::io::Write;
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok((_, line)) = self.lines.recv_timeout(left) else {
                seen.push(format!("no result within {limit:?}"));
                return seen;
            };
            if let Some(answer) = act(&line) {
                writeln!(self.stdin, "{answer}").expect("script stdin");
            }
            let last = (line.contains(" passed, ") && line.ends_with(" failed"))
                || line.starts_with("error");
            seen.push(line);
            if last {
                return seen;
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A phx-server node clustered over the Redis at `redis_url` as `name`, with
/// the admin `token`, the cluster secret these tests share, and `extra` flags.
pub fn cluster_node(redis_url: &str, name: &str, token: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--no-check-origin",
        "--redis-url",
        redis_url,
        "--node-name",
        name,
        // Required with --redis-url: it seals the cluster's messages.
        "--secret-key-base",
        CLUSTER_SECRET,
    ];
    args.extend_from_slice(extra);
    Server::start(Some(token), &args)
}

/// The cluster secret of the tests' nodes (at least 64 bytes, as required).
pub const CLUSTER_SECRET: &str =
    "phx-server-tests-cluster-secret-of-sixty-four-bytes-or-more-for-every-node";
