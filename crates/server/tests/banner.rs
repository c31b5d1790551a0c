//! What a newcomer meets first: the address `phx-server` prints works in a
//! browser (on a loopback bind, `localhost`, `127.0.0.1` and `[::1]` are one host
//! for the origin check, and nothing else is), and logs written to a file carry
//! no terminal colour codes.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// The status line of a WebSocket upgrade sent with `origin`.
fn upgrade_status(addr: &str, origin: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nhost: {addr}\r\norigin: {origin}\r\n\
         connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status code")
}

#[test]
fn the_printed_address_passes_the_default_origin_check() {
    let server = common::Server::start(None, &[]);
    let port = server.addr.rsplit(':').next().expect("port");
    // The banner's own address, and the other two names of this machine.
    for origin in [
        format!("http://{}", server.addr),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ] {
        assert_eq!(upgrade_status(&server.addr, &origin), 101, "{origin}");
    }
    for origin in ["http://example.com", "http://127.0.0.2.example.com"] {
        assert_eq!(upgrade_status(&server.addr, origin), 403, "{origin}");
    }
}

#[test]
fn an_explicit_host_is_not_widened() {
    let server = common::Server::start(None, &["--host", "example.com"]);
    assert_eq!(upgrade_status(&server.addr, "http://example.com"), 101);
    assert_eq!(
        upgrade_status(&server.addr, &format!("http://{}", server.addr)),
        403
    );
}

/// Runs phx-server briefly with `args`, stderr to a pipe (not a terminal), and
/// returns what it logged.
fn logs_of(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phx-server"))
        .args(["--port", "0", "--admin-bind", "127.0.0.1:0"])
        .args(["--database-url", "sqlite::memory:"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("PHX_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phx-server starts");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut out, &mut banner).expect("banner");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read logs");
    let _ = child.wait();
    logs
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let logs = logs_of(&[]);
    assert!(logs.contains("WARN"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "escape codes in {logs:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let logs = logs_of(&["--log-format", "json"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            value["level"].is_string() && value["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
