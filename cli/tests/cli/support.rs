//! Harness: a real control plane in-process on `127.0.0.1:0` with a temporary SQLite file, and
//! a way to run the built gwctl binary against it.

use std::process::Output;

use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use gw_proto::v1::config_discovery_service_client::ConfigDiscoveryServiceClient;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

/// A running control plane; stops when dropped.
pub struct ControlPlane {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts one without an admin token.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts one, optionally requiring `authorization: Bearer <token>`.
    pub async fn start_with(admin_token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("gw.db").display());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = gw_control_plane::Config::new(database_url);
        config.admin_token = admin_token.map(gw_control_plane::Secret::new);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = gw_control_plane::serve(config, listener, shutdown).await {
                panic!("control plane failed: {e}");
            }
        });
        // The listener is bound, but serve opens and migrates the database before answering;
        // wait for an answer so gwctl's short connect deadline measures gwctl, not start-up.
        let probe_url = url.clone();
        let token = admin_token.map(|t| format!("Bearer {t}"));
        gw_testkit::eventually("control plane answers ListServices", || {
            let url = probe_url.clone();
            let token = token.clone();
            async move {
                let mut client = AdminServiceClient::connect(url).await.ok()?;
                let mut request = tonic::Request::new(pb::ListServicesRequest {});
                if let Some(t) = token {
                    request
                        .metadata_mut()
                        .insert("authorization", t.parse().ok()?);
                }
                client.list_services(request).await.ok().map(|_| ())
            }
        })
        .await;
        Self {
            url,
            stop: Some(stop),
            _dir: dir,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A data plane as the control plane sees it: one open config stream, driven by the test.
/// Dropping it closes the stream, which is how a node disconnects.
pub struct FakeNode {
    tx: mpsc::Sender<pb::DiscoveryRequest>,
    /// The control plane's messages after the first.
    pub responses: tonic::Streaming<pb::DiscoveryResponse>,
    /// The version of the first config, which the node acknowledged.
    pub version: u64,
    /// The endpoint URLs of each service in the config the node received, by service name.
    endpoints: Vec<(String, Vec<String>)>,
}

impl FakeNode {
    /// Says hello as `node_id` (listening on 127.0.0.1:8080, admin on 127.0.0.1:9901, build
    /// `test`), takes the first config and acknowledges it. The control plane must have a
    /// config to send (a version above 0): create something first.
    pub async fn connect(cp: &ControlPlane, node_id: &str) -> Self {
        let (tx, rx) = mpsc::channel(8);
        let hello = pb::discovery_request::Kind::Hello(pb::NodeHello {
            known_epoch: 0,
            node_id: node_id.into(),
            listen_address: "127.0.0.1:8080".into(),
            admin_address: "127.0.0.1:9901".into(),
            build_version: "test".into(),
            ..Default::default()
        });
        send(&tx, hello).await;
        let mut client = ConfigDiscoveryServiceClient::connect(cp.url.clone())
            .await
            .unwrap();
        let mut responses = client
            .stream_config(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        let Some(pb::discovery_response::Kind::Snapshot(snapshot)) = first.kind else {
            panic!("first config is not a snapshot: {first:?}");
        };
        let endpoints = snapshot
            .services
            .into_iter()
            .map(|s| (s.name, s.endpoints))
            .collect();
        let ack = pb::discovery_request::Kind::Ack(pb::ConfigAck {
            version: first.version,
        });
        send(&tx, ack).await;
        FakeNode {
            tx,
            responses,
            version: first.version,
            endpoints,
        }
    }

    /// Sends `kind` (a report, an ack, a nack) on the node's stream.
    pub async fn send(&self, kind: pb::discovery_request::Kind) {
        send(&self.tx, kind).await;
    }

    /// The endpoints of `service` as the config named them.
    pub fn endpoints(&self, service: &str) -> Vec<String> {
        self.endpoints
            .iter()
            .find(|(name, _)| name == service)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("service {service} not in the node's config"))
    }
}

/// Sends one message on a config stream.
async fn send(tx: &mpsc::Sender<pb::DiscoveryRequest>, kind: pb::discovery_request::Kind) {
    tx.send(pb::DiscoveryRequest { kind: Some(kind) })
        .await
        .unwrap();
}

/// What one gwctl run produced.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "gwctl failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stderr, "", "stderr of a successful run");
        &self.stdout
    }

    /// Asserts success and parses stdout as exactly one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"))
    }

    /// Asserts failure with exit code 1, nothing on stdout and exactly one line on stderr;
    /// returns that line.
    #[track_caller]
    pub fn error_line(&self) -> &str {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "stdout of a failed run");
        let line = self
            .stderr
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("stderr does not end in a newline: {:?}", self.stderr));
        assert!(
            !line.contains('\n'),
            "stderr is not one line: {:?}",
            self.stderr
        );
        assert!(line.starts_with("error: "), "stderr: {line}");
        assert!(!line.contains("panicked"), "stderr: {line}");
        line
    }
}

/// The built gwctl with `args`, isolated from the caller's GW_* variables.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gwctl"));
    command
        .args(args)
        .env_remove("GW_CONTROL_PLANE")
        .env_remove("GW_ADMIN_TOKEN")
        .env_remove("GW_CA_CERT")
        .env_remove("GW_CLIENT_CERT")
        .env_remove("GW_CLIENT_KEY")
        .env("RUST_BACKTRACE", "1")
        .kill_on_drop(true);
    command
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        let Output {
            status,
            stdout,
            stderr,
        } = output;
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }
}

/// Runs the built gwctl with `args` and `env`, isolated from the caller's GW_* variables.
pub async fn gwctl_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = command(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.unwrap().into()
}

/// Runs gwctl against `cp` with `input` on its stdin.
pub async fn gwctl_stdin(cp: &ControlPlane, args: &[&str], input: &[u8]) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut all = vec!["--control-plane", cp.url.as_str()];
    all.extend_from_slice(args);
    let mut child = command(&all)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap().into()
}

/// Runs gwctl against `cp` (the address is passed with `--control-plane`).
pub async fn gwctl(cp: &ControlPlane, args: &[&str]) -> Run {
    let mut all = vec!["--control-plane", cp.url.as_str()];
    all.extend_from_slice(args);
    gwctl_env(&all, &[]).await
}
