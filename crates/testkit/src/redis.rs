//! A throwaway `redis-server` on a free loopback port, in its own temporary
//! folder with its own configuration (no persistence), killed when the guard
//! drops (also when a test panics).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wait::{free_port, wait_for};

/// A `redis-server` child process.
pub struct Redis {
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts one with extra configuration lines (e.g. a lower pub/sub
    /// output buffer limit); they hold across [`Redis::restart`].
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "phx-cluster-redis-{}-{port}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\ndaemonize no\nprotected-mode yes\n",
            dir.display(),
            dir.join("redis.log").display()
        );
        for line in extra {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(dir.join("redis.conf"), conf).expect("write redis.conf");
        let mut redis = Redis {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg(self.dir.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            &format!("redis-server to listen on {port}"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
