//! The server under test and the CPU accounting around it: starting `phx-server
//! --conformance` on a free loopback port, reading its RSS and CPU time from
//! `/proc/<pid>`, its counters from `/metrics`, the generator's own CPU time, and the
//! machine's total busy time (so a figure can say who else was using the cores).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux
/// architecture this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// Which server a scenario runs against.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `phx-server --conformance`, at this path or next to `phx-bench`.
    Ours(Option<String>),
    /// `phx-bench floor`: the minimal server giving the machine's floor, run
    /// from this path (or a wrapper that `exec`s it) or from this executable.
    Floor(Option<String>),
    /// Real Phoenix hosting the conformance app: a build directory made by
    /// `shared/phoenix-ref/build.sh`, started with its `start-bg.sh` and stopped
    /// with its `stop.sh`; its figures are the BEAM process's (`beam.smp`).
    Phoenix(String),
}

impl Kind {
    /// `ours` or `floor`, for tables and JSON lines.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Ours(_) => "ours",
            Kind::Floor(_) => "floor",
            Kind::Phoenix(_) => "phoenix",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Ours(Some(path)) => write!(f, "{path}"),
            Kind::Ours(None) => write!(f, "phx-server"),
            Kind::Floor(Some(path)) => write!(f, "{path} floor"),
            Kind::Floor(None) => write!(f, "phx-bench floor"),
            Kind::Phoenix(dir) => write!(f, "Phoenix in {dir}"),
        }
    }
}

/// A running server under test, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    process: Process,
    addr: String,
    /// The operators' listener, which serves `/metrics` (Phoenix has none).
    admin: Option<String>,
}

/// How the server under test runs, and so how it is stopped.
enum Process {
    /// A child of the bench (ours, the floor).
    Child(Child),
    /// Real Phoenix, started in the background by its build's script: the BEAM's
    /// pid, the build directory and the port (its `stop.sh` takes the port).
    Phoenix { pid: u32, dir: String, port: u16 },
}

/// The bearer token the bench gives the server for its admin listener.
const ADMIN_TOKEN: &str = "phx-bench";

impl Server {
    /// Starts the server under test: `phx-server` (the binary at `path`, default
    /// next to this executable) with the conformance app, or the floor
    /// (`phx-bench floor`, this executable), on a free loopback port, and waits for
    /// its banner. With `pin`, the server runs on that core only.
    pub fn start(kind: &Kind, pin: Option<usize>) -> Result<Server, String> {
        let mut command = match kind {
            Kind::Phoenix(dir) => return Server::start_phoenix(dir, pin),
            Kind::Ours(path) => {
                let path: PathBuf = match path {
                    Some(p) => p.into(),
                    None => std::env::current_exe()
                        .map_err(|e| e.to_string())?
                        .with_file_name("phx-server"),
                };
                let mut command = Command::new(path);
                command.args([
                    "--port",
                    "0",
                    "--conformance",
                    "--idle-timeout-secs",
                    "3600",
                    "--admin-bind",
                    "127.0.0.1:0",
                    "--api-token",
                    ADMIN_TOKEN,
                    // The set holds up to 19 000 connections at once, over the
                    // server's default limit (16 384).
                    "--max-connections",
                    "65536",
                ]);
                command
            }
            Kind::Floor(path) => {
                let path: PathBuf = match path {
                    Some(p) => p.into(),
                    None => std::env::current_exe().map_err(|e| e.to_string())?,
                };
                let mut command = Command::new(path);
                command.arg("floor");
                command
            }
        };
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The server gets its own core when pinned, every core otherwise (it would
        // inherit the generator's mask).
        crate::pin::child_on(&mut command, pin);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {kind}: {e}"))?;
        let stdout = child.stdout.take().ok_or("the server has no stdout")?;
        // The banner names the address; a wrapper (valgrind, heaptrack) may print
        // lines of its own first.
        let mut reader = BufReader::new(stdout);
        let mut seen = Vec::new();
        let (mut addr, mut admin) = (None, None);
        while (addr.is_none() || admin.is_none()) && seen.len() < 50 {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let found = line
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            if line.contains(" admin on ") {
                admin = found;
            } else if addr.is_none() {
                addr = found;
            }
            seen.push(line);
        }
        // Keep reading (and discarding) whatever else the server prints, so that
        // it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let (Some(addr), Some(admin)) = (addr, admin) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no addresses in the server's banner: {seen:?}"));
        };
        Ok(Server {
            process: Process::Child(child),
            addr,
            admin: Some(admin),
        })
    }

    /// Starts real Phoenix from the build in `dir` on a free loopback port: runs
    /// `PORT=<port> <dir>/start-bg.sh` (which waits until the port accepts) and
    /// reads the BEAM's pid from the file it writes. With `pin`, the script and so
    /// the BEAM it starts run on that core only.
    fn start_phoenix(dir: &str, pin: Option<usize>) -> Result<Server, String> {
        // A free port: bind port 0, note the port, let it go for the BEAM.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut command = Command::new(format!("{dir}/start-bg.sh"));
        command
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        crate::pin::child_on(&mut command, pin);
        let status = command
            .status()
            .map_err(|e| format!("cannot run {dir}/start-bg.sh: {e}"))?;
        if !status.success() {
            return Err(format!("{dir}/start-bg.sh failed ({status})"));
        }
        let pid = std::fs::read_to_string(format!("{dir}/server-{port}.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("no pid in {dir}/server-{port}.pid"))?;
        Ok(Server {
            process: Process::Phoenix {
                pid,
                dir: dir.to_owned(),
                port,
            },
            addr: format!("127.0.0.1:{port}"),
            admin: None,
        })
    }

    /// The WebSocket URL of the conformance socket, V2 serializer.
    pub fn url(&self) -> String {
        format!("ws://{}/socket/websocket?vsn=2.0.0", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(child) => child.id(),
            Process::Phoenix { pid, .. } => *pid,
        }
    }

    /// Channels open, from `/metrics`; Phoenix has no such counter, so there the
    /// joins answered (`answered`) are taken as open and a lost channel shows only
    /// as a connection the server closed.
    pub fn channels_open(&self, metrics: &BTreeMap<String, u64>, answered: usize) -> u64 {
        match self.admin {
            Some(_) => metrics.get("phx_channels_open").copied().unwrap_or(0),
            None => answered as u64,
        }
    }

    /// Resident set size in bytes.
    pub fn rss(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// User + system CPU seconds the server has used so far.
    pub fn cpu(&self) -> f64 {
        let (user, system) = process_cpu(&self.pid().to_string());
        user + system
    }

    /// System (kernel) CPU seconds the server has used so far: on loopback its
    /// sends also run the receiving side of TCP, so this share is large.
    fn system_cpu(&self) -> f64 {
        process_cpu(&self.pid().to_string()).1
    }

    /// The server's counters from the admin listener's `/metrics` (Prometheus
    /// text), by name (counters carry the `_total` suffix).
    /// Phoenix has no `/metrics`: there the map is empty.
    pub async fn metrics(&self) -> Result<BTreeMap<String, u64>, String> {
        let Some(admin) = &self.admin else {
            return Ok(BTreeMap::new());
        };
        let fetch = async {
            let mut stream = TcpStream::connect(admin).await?;
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await?;
            Ok::<String, std::io::Error>(body)
        };
        let text = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .map_err(|_| "GET /metrics timed out".to_owned())?
            .map_err(|e| format!("GET /metrics: {e}"))?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok(parse_metrics(body))
    }

    /// Waits until the server has been idle (under 20 ms of CPU in a second) or
    /// `limit` has passed; returns how long it waited. Used after a ramp so that
    /// the CPU it cost and the memory it left are read once the work is done.
    pub async fn settle(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let mut last = self.cpu();
        while started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let now = self.cpu();
            if now - last < 0.02 {
                break;
            }
            last = now;
        }
        started.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = match &mut self.process {
            Process::Child(child) => child,
            Process::Phoenix { dir, port, .. } => {
                // Its script sends TERM, then KILL after 10 s, and waits.
                let _ = Command::new(format!("{dir}/stop.sh"))
                    .env("PORT", port.to_string())
                    .stdout(Stdio::null())
                    .status();
                return;
            }
        };
        // SIGTERM first: the server drains (and a profiler wrapping it writes its
        // output); SIGKILL if it has not exited within 10 s.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// User and system CPU seconds of a process (`self` or a pid), from `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> (f64, f64) {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// Counters by name from the Prometheus text format (comments skipped).
fn parse_metrics(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// User and system CPU seconds from the text of a `/proc/<pid>/stat` file.
fn parse_stat(stat: &str) -> (f64, f64) {
    // The command name is in parentheses and may hold spaces; utime and stime are
    // the 12th and 13th fields after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / TICKS_PER_SECOND, ticks(12) / TICKS_PER_SECOND)
}

/// User + system CPU seconds this process (the generator) has used.
fn own_cpu() -> f64 {
    let (user, system) = process_cpu("self");
    user + system
}

/// CPU seconds the whole machine spent busy (every core, every process), from the
/// first line of `/proc/stat`.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: busy = all - idle - iowait.
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (total - idle) / TICKS_PER_SECOND
}

/// Connection attempts the kernel dropped because a listener's accept queue was
/// full (`TcpExt: ListenOverflows` in `/proc/net/netstat`, machine-wide): each one
/// costs the client a SYN retransmission, a second or more.
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Cores this machine has.
pub fn cores() -> usize {
    crate::pin::online_cores()
}

/// Wall-clock and CPU time of one measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Seconds of wall-clock time.
    pub wall: f64,
    /// CPU seconds the server used.
    pub server_cpu: f64,
    /// The part of `server_cpu` spent in the kernel.
    pub server_system_cpu: f64,
    /// CPU seconds the load generator (this process) used.
    pub generator_cpu: f64,
    /// CPU seconds every other process on the machine used.
    pub other_cpu: f64,
}

impl Usage {
    /// Whether the generator, not the server, is what limits the figure: the cores
    /// were (nearly) all busy and the generator used at least as much as the server,
    /// or the generator alone kept every core busy.
    pub fn generator_limited(&self) -> bool {
        if self.wall <= 0.0 {
            return false;
        }
        let capacity = cores() as f64 * self.wall;
        let busy = self.server_cpu + self.generator_cpu + self.other_cpu;
        (busy >= 0.85 * capacity && self.generator_cpu >= self.server_cpu)
            || self.generator_cpu >= 0.9 * capacity
    }

    /// Whether other processes used a noticeable share of the cores (over 10 %).
    pub fn shared(&self) -> bool {
        self.wall > 0.0 && self.other_cpu >= 0.1 * cores() as f64 * self.wall
    }
}

/// Takes the readings at the start of a phase; [`Meter::read`] gives the usage since.
pub struct Meter {
    started: Instant,
    server: f64,
    server_system: f64,
    generator: f64,
    machine: f64,
}

impl Meter {
    /// Starts measuring now.
    pub fn start(server: &Server) -> Meter {
        Meter {
            started: Instant::now(),
            server: server.cpu(),
            server_system: server.system_cpu(),
            generator: own_cpu(),
            machine: machine_busy(),
        }
    }

    /// Usage from the start until now.
    pub fn read(&self, server: &Server) -> Usage {
        let server_cpu = server.cpu() - self.server;
        let generator_cpu = own_cpu() - self.generator;
        let machine = machine_busy() - self.machine;
        Usage {
            wall: self.started.elapsed().as_secs_f64(),
            server_cpu,
            server_system_cpu: server.system_cpu() - self.server_system,
            generator_cpu,
            other_cpu: (machine - server_cpu - generator_cpu).max(0.0),
        }
    }
}

/// Raises this process's soft open-files limit to the hard one (the server started
/// from here inherits it), with `prlimit` from util-linux; returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut values = line
            .trim_start_matches("Max open files")
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        Some((values.next()?, values.next()?))
    };
    let Some((soft, hard)) = read() else {
        return u64::MAX; // unknown: let the connects themselves fail if it is too low
    };
    if soft < hard {
        let limit = if hard == u64::MAX {
            "unlimited".to_owned()
        } else {
            hard.to_string()
        };
        let _ = Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={limit}:{limit}"),
            ])
            .status();
    }
    read().map_or(soft, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phoenix_build_without_its_scripts_is_refused_by_name() {
        let dir = std::env::temp_dir().join("phx-bench-no-phoenix-build-here");
        let kind = Kind::Phoenix(dir.display().to_string());
        assert_eq!(kind.label(), "phoenix");
        let err = Server::start(&kind, None)
            .err()
            .expect("no build, no server");
        assert!(err.contains("start-bg.sh"), "{err}");
    }

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "42 (phx server) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat(stat), (2.5, 0.75));
        assert_eq!(parse_stat("garbage"), (0.0, 0.0));
    }

    #[test]
    fn metrics_text_gives_counters_by_name() {
        let body = "# HELP phx_channels_open Channels joined now (gauge).\nphx_channels_open 12\nphx_sockets_open 3\nbroken line\n";
        let m = parse_metrics(body);
        assert_eq!(m.get("phx_channels_open"), Some(&12));
        assert_eq!(m.get("phx_sockets_open"), Some(&3));
        assert_eq!(m.len(), 2);
    }
}
