//! Real Redis servers for tests: a `redis-server` process per test on a free loopback port
//! (never the shared one on 6379), in a temp dir, killed on drop; and a three-master Redis
//! Cluster built with `redis-cli --cluster create`.
//!
//! A missing binary fails the test with what to install (Debian's `redis-server` package,
//! which brings `redis-cli`); tests never skip quietly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{DEFAULT_DEADLINE, Signal, send_signal};

const INSTALL: &str = "install the Debian package redis-server (apt-get install redis-server)";

/// One `redis-server` process.
pub struct RedisServer {
    port: u16,
    args: Vec<String>,
    password: Option<String>,
    child: Option<Child>,
    // Held for the server's files; removed on drop.
    _dir: TempDir,
}

/// A directory removed on drop (std only: testkit does not depend on tempfile).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "gw-redis-{tag}-{}-{n}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir for redis-server");
        Self(path)
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that is free now, and whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = l.local_addr().expect("local address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a standalone server and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(None, &[]).await
    }

    /// Starts a server that requires `password`.
    pub async fn with_password(password: &str) -> Self {
        Self::start_with(Some(password), &[]).await
    }

    /// Starts a server with `password` (if any) and extra `redis-server` arguments.
    pub async fn start_with(password: Option<&str>, extra: &[&str]) -> Self {
        let dir = TempDir::new("server");
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &dir.0.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(pw) = password {
            args.push("--requirepass".into());
            args.push(pw.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self {
            port,
            args,
            password: password.map(str::to_owned),
            child: None,
            _dir: dir,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {INSTALL}"));
        self.child = Some(child);
        let port = self.port;
        crate::eventually(
            &format!("redis-server on port {port} answering"),
            || async { ping(port).then_some(()) },
        )
        .await;
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process (SIGSTOP) without killing it: its connections stay open and nothing
    /// answers on them, as with a hung server or a black-holed network. Drop still kills it.
    pub fn pause(&self) {
        self.signal(Signal::Stop);
    }

    /// Lets a [`RedisServer::pause`]d server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::Cont);
    }

    fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("redis-server is not running");
        send_signal(child.id(), signal);
    }

    /// Starts it again on the same port (empty: nothing is saved) and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs `redis-cli` against it with `args`; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            // Through the environment, not argv: redis-cli warns about -a.
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {INSTALL}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something answers a RESP `PING` on `port` (`+PONG`, or an auth error, which
/// also means the server is up).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => buf[0] == b'+' || buf[..n].starts_with(b"-NOAUTH"),
        _ => false,
    }
}

/// A Redis Cluster of three masters (no replicas), each a [`RedisServer`].
pub struct RedisCluster {
    /// The masters, in the order given to `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok`. Nodes time out after 1 s and
    /// the cluster keeps serving the slots of live masters when one is down.
    pub async fn start() -> Self {
        let mut nodes = Vec::with_capacity(3);
        for _ in 0..3 {
            let conf = format!("nodes-{}.conf", free_port());
            nodes.push(
                RedisServer::start_with(
                    None,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                )
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {INSTALL}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        crate::eventually_within(
            DEFAULT_DEADLINE,
            "cluster_state:ok on every node",
            || async {
                cluster
                    .nodes
                    .iter()
                    .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
                    .then_some(())
            },
        )
        .await;
        cluster
    }

    /// The seed URLs, comma-separated (the form `--redis-url` takes with `--redis-cluster`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
