//! In-process harness for the data plane's end-to-end tests: a real control plane on a temp
//! SQLite file, data planes, plain HTTP backends (from gw-testkit) and a small HTTP client
//! that can bind its source address (to act as a second client IP). Everything listens on
//! 127.0.0.1:0 and stops on drop.
#![allow(clippy::unwrap_used, dead_code)]

pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use gw_testkit::backend::Backend;
#[allow(unused_imports)]
pub use gw_testkit::{eventually, eventually_within};

/// Installs a log subscriber once (RUST_LOG controls it; silent by default).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A control plane running in-process.
pub struct ControlPlane {
    pub addr: SocketAddr,
    db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts one with its database in `dir`.
    pub async fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, dir.join("gw.db"))
    }

    fn on(listener: TcpListener, db: PathBuf) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let config = gw_control_plane::Config::new(db.display().to_string());
        let task = tokio::spawn(async move {
            gw_control_plane::serve(config, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        ControlPlane {
            addr,
            db,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits until it has returned (its port is closed).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Open streams to data planes keep a graceful gRPC shutdown waiting; abort after
            // asking nicely, so "stopped" really means the port is closed.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Starts again on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = eventually("control plane port free again", || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        *self = Self::on(listener, self.db.clone());
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::connect(self.url()).await.unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A data plane running in-process.
pub struct DataPlane {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, if started with one.
    pub https: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts one against `control_plane` with `config` tweaked by the caller.
    pub async fn start(
        control_plane: &str,
        tweak: impl FnOnce(&mut gw_data_plane::Config),
    ) -> Self {
        Self::start_with_https(control_plane, false, tweak).await
    }

    /// [`DataPlane::start`], with an HTTPS listener too when `https`.
    pub async fn start_with_https(
        control_plane: &str,
        https: bool,
        tweak: impl FnOnce(&mut gw_data_plane::Config),
    ) -> Self {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = match https {
            true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let https_addr = tls.as_ref().map(|l| l.local_addr().unwrap());
        let mut config =
            gw_data_plane::Config::new(control_plane, format!("test-{}", proxy_addr.port()));
        tweak(&mut config);
        let (tx, rx) = oneshot::channel();
        let listeners = gw_data_plane::Listeners { proxy, tls, admin };
        let task = tokio::spawn(async move {
            gw_data_plane::serve_with(config, listeners, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        DataPlane {
            proxy: proxy_addr,
            admin: admin_addr,
            https: https_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Asks it to stop; returns the task so a test can await the graceful end.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    /// Stops it and waits for `serve` to return.
    pub async fn stop(&mut self) {
        if self.task.is_some() {
            self.begin_stop().await.unwrap();
        }
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        Call::get(self.admin, path).send().await
    }

    /// The config version it serves (from `/config`).
    pub async fn version(&self) -> u64 {
        let r = self.admin_get("/config").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["version"].as_u64().unwrap()
    }

    /// Waits until it serves at least `version`.
    pub async fn wait_version(&self, version: u64) {
        eventually(
            &format!("data plane at config version {version}"),
            || async { (self.version().await >= version).then_some(()) },
        )
        .await;
    }

    /// One metric's value from `/metrics` (the exact line prefix, e.g. `gw_config_version`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_at(self.admin, series).await
    }
}

/// One metric's value from `/metrics` on the admin listener `admin` (any data plane, the
/// binary's too).
pub async fn metric_at(admin: SocketAddr, series: &str) -> Option<f64> {
    let r = Call::get(admin, "/metrics").send().await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection, optionally from a chosen source address.
pub struct Call {
    to: SocketAddr,
    from: Option<IpAddr>,
    req: Request<Full<Bytes>>,
}

impl Call {
    pub fn get(to: SocketAddr, path: &str) -> Self {
        let req = Request::builder()
            .uri(path)
            .header("host", to.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        Call {
            to,
            from: None,
            req,
        }
    }

    pub fn method(mut self, m: http::Method) -> Self {
        *self.req.method_mut() = m;
        self
    }

    /// Sets a header (replacing any value of that name).
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.req.headers_mut().insert(name, value.parse().unwrap());
        self
    }

    /// Adds a header line (keeping existing ones of that name).
    pub fn append(mut self, name: &'static str, value: &str) -> Self {
        self.req.headers_mut().append(name, value.parse().unwrap());
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        *self.req.body_mut() = Full::new(body.into());
        self
    }

    pub fn from(mut self, ip: IpAddr) -> Self {
        self.from = Some(ip);
        self
    }

    /// Sends it; panics on a transport error.
    pub async fn send(self) -> Reply {
        self.try_send().await.unwrap()
    }

    /// Sends it; transport errors come back as `Err`.
    pub async fn try_send(self) -> Result<Reply, String> {
        let stream = connect(self.to, self.from)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = send
            .send_request(self.req)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A TCP connection to `to`, from `from` if given.
pub async fn connect(
    to: SocketAddr,
    from: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(to).await
}

/// A service over `endpoints` at `prefix`.
pub fn service(name: &str, prefix: &str, endpoints: &[&Backend]) -> pb::Service {
    pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: prefix.into(),
            hosts: vec![],
            strip_prefix: false,
        }),
        endpoints: endpoints.iter().map(|b| b.url()).collect(),
        ..Default::default()
    }
}

/// Creates `svc`; returns the config version that includes it.
pub async fn create(admin: &mut AdminServiceClient<Channel>, svc: pb::Service) -> u64 {
    admin
        .create_service(pb::CreateServiceRequest { service: Some(svc) })
        .await
        .unwrap()
        .into_inner()
        .config_version
}

/// Adds or replaces the HTTPS certificate `name`; returns the config version that has it.
pub async fn put_cert(
    admin: &mut AdminServiceClient<Channel>,
    name: &str,
    pair: &gw_testkit::tls::Pair,
) -> u64 {
    admin
        .put_certificate(pb::PutCertificateRequest {
            certificate: Some(pb::Certificate {
                name: name.into(),
                cert_chain_pem: pair.cert.clone(),
                private_key_pem: pair.key.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .config_version
}

/// Replaces `svc`; returns the config version that includes it.
pub async fn update(admin: &mut AdminServiceClient<Channel>, svc: pb::Service) -> u64 {
    admin
        .update_service(pb::UpdateServiceRequest { service: Some(svc) })
        .await
        .unwrap()
        .into_inner()
        .config_version
}

/// Puts a policy; returns the config version that includes it.
/// Creates consumer `name` in `groups`; returns the config version that includes it.
pub async fn consumer(admin: &mut AdminServiceClient<Channel>, name: &str, groups: &[&str]) -> u64 {
    admin
        .create_consumer(pb::CreateConsumerRequest {
            consumer: Some(pb::Consumer {
                name: name.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .config_version
}

pub async fn put_policy(admin: &mut AdminServiceClient<Channel>, policy: pb::Policy) -> u64 {
    admin
        .put_policy(pb::PutPolicyRequest {
            policy: Some(policy),
        })
        .await
        .unwrap()
        .into_inner()
        .config_version
}

/// A policy of `limit` per `period_secs`, keyed by client IP, on `service` ("" = all).
pub fn ip_policy(name: &str, service: &str, limit: u64, period_secs: i64) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        service: service.into(),
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})),
        }),
        limit,
        period: Some(prost_types::Duration {
            seconds: period_secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// A whole test setup: temp dir, control plane, one data plane.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub cp: ControlPlane,
    pub dp: DataPlane,
    pub admin: AdminServiceClient<Channel>,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut gw_data_plane::Config)) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let cp = ControlPlane::start(dir.path()).await;
        let admin = cp.admin().await;
        let cache = dir.path().join("dp.cache");
        let dp = DataPlane::start(&cp.url(), |c| {
            c.cache_file = Some(cache);
            tweak(c);
        })
        .await;
        Env { dir, cp, dp, admin }
    }

    /// Creates `svc` and waits until the data plane serves that version.
    pub async fn add(&mut self, svc: pb::Service) -> u64 {
        let v = create(&mut self.admin, svc).await;
        self.dp.wait_version(v).await;
        v
    }

    /// GET through the proxy.
    pub async fn get(&self, path: &str) -> Reply {
        Call::get(self.dp.proxy, path).send().await
    }
}

/// The value after `key=` in a log line, as an address (ANSI colour codes tolerated).
pub fn log_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.trim_start_matches(|c: char| !c.is_ascii_digit());
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The real `gw-data-plane` binary against `cp`, on loopback port 0, its cache in `dir`, as
/// node `node_id`, with two worker threads; the caller adds flags and spawns it.
pub fn data_plane_command(cp: &ControlPlane, dir: &Path, node_id: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gw-data-plane"));
    cmd.args(["--control-plane", &cp.url()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--cache-file")
        .arg(dir.join(format!("{node_id}.cache")))
        .args(["--node-id", node_id, "--worker-threads", "2"]);
    cmd
}

/// The real `gw-data-plane` binary, started by a test, with its log collected.
pub struct Binary {
    pub child: tokio::process::Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Every log line so far (stderr), drained continuously so the binary never blocks.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// Spawns `cmd` (which runs the binary, perhaps under a wrapper such as `prlimit`) and
    /// waits until it logs where it listens.
    pub async fn spawn(mut cmd: tokio::process::Command) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        // RUST_LOG is the caller's if it set one, else info.
        if !cmd
            .as_std()
            .get_envs()
            .any(|(k, v)| k == "RUST_LOG" && v.is_some())
        {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (proxy, admin) = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                if line.contains("data plane listening") {
                    return (
                        log_addr(&line, "proxy_addr").unwrap(),
                        log_addr(&line, "admin_addr").unwrap(),
                    );
                }
            }
            panic!(
                "the binary exited before listening: {:?}",
                log.lock().unwrap()
            );
        })
        .await
        .unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            proxy,
            admin,
            log,
        }
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

/// Reads until the peer closes (or 1 MiB), with a deadline: panics if the connection is
/// still open then.
pub async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection neither finished nor closed; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        if out.len() > 1 << 20 {
            return out;
        }
    }
}

/// Reads a request head (through its blank line) from `s`, or `None` if the peer closes
/// first (a health check's bare connect).
pub async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// An HTTP/2 client (prior knowledge, h2c) on a new connection to `to`.
pub async fn h2_client(
    to: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(to).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}
