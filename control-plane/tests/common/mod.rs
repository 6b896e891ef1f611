//! In-process control-plane harness: `serve` on `127.0.0.1:0` with a temporary SQLite file,
//! connected clients, and a drop guard that shuts it down. Restarts keep the file and port.

#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gw_control_plane::{Config, ServeError};
use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_client::AdminServiceClient;
use gw_proto::v1::config_discovery_service_client::ConfigDiscoveryServiceClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// A running control plane. Dropping it signals shutdown; [`ControlPlane::stop`] also waits.
pub struct ControlPlane {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics: SocketAddr,
    pub dir: Arc<TempDir>,
    pub token: Option<String>,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl ControlPlane {
    /// Starts on a fresh database without an admin token.
    pub async fn start() -> Self {
        Self::start_with_token(None).await
    }

    /// Starts on a fresh database with an optional admin token.
    pub async fn start_with_token(token: Option<&str>) -> Self {
        Self::start_with(token, |_, _| {}).await
    }

    /// Starts on a fresh database with an optional admin token, after `tune` has changed the
    /// config (it gets the temporary directory, for credential files).
    pub async fn start_with(
        token: Option<&str>,
        tune: impl FnOnce(&mut Config, &std::path::Path),
    ) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::new(format!("sqlite://{}", db_path(&dir).display()));
        config.admin_token = token.map(gw_control_plane::Secret::new);
        tune(&mut config, dir.path());
        Self::launch(dir, listener, token.map(str::to_owned), config)
    }

    /// Starts with `config` (whose database may already hold data, e.g. in `dir`) on a new
    /// port, without an admin token.
    pub async fn start_in(dir: Arc<TempDir>, config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::launch(dir, listener, None, config)
    }

    fn launch(
        dir: Arc<TempDir>,
        listener: TcpListener,
        token: Option<String>,
        config: Config,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        metrics.set_nonblocking(true).unwrap();
        let metrics = TcpListener::from_std(metrics).unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gw_control_plane::serve_with_metrics(
            config.clone(),
            listener,
            Some(metrics),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics: metrics_addr,
            dir,
            token,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        db_path(&self.dir)
    }

    /// Signals shutdown and waits for `serve` to return; returns its result.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.stop.take().map(|s| s.send(()));
        self.task.take().unwrap().await.unwrap()
    }

    /// Stops, then starts again on the same database file and the same port.
    pub async fn restart(self) -> Self {
        let (dir, addr, token) = (self.dir.clone(), self.addr, self.token.clone());
        let config = self.config.clone();
        self.stop().await.unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::launch(dir, listener, token, config)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `/metrics` page (HTTP/1.1 over a plain socket: the harness needs no HTTP client).
    pub async fn metrics_page(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: cp\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// An admin client that sends this control plane's token, if any.
    pub async fn admin(&self) -> Admin {
        Admin {
            client: AdminServiceClient::new(self.channel().await),
            token: self.token.clone(),
        }
    }

    /// Opens a config stream and sends `hello` (without capabilities: snapshots only).
    pub async fn node(&self, node_id: &str, known_version: u64) -> Node {
        self.node_with(node_id, known_version, 0, &[]).await
    }

    /// Opens a config stream and sends `hello` with `known_epoch`, listing `capabilities`.
    pub async fn node_with(
        &self,
        node_id: &str,
        known_version: u64,
        known_epoch: u64,
        capabilities: &[&str],
    ) -> Node {
        let mut client = ConfigDiscoveryServiceClient::new(self.channel().await);
        let (tx, rx) = mpsc::channel(16);
        let mut hello = hello(node_id, known_version);
        if let Some(pb::discovery_request::Kind::Hello(h)) = &mut hello.kind {
            h.known_epoch = known_epoch;
            h.capabilities = capabilities.iter().map(|c| (*c).to_owned()).collect();
        }
        tx.send(hello).await.unwrap();
        let inbound = client
            .stream_config(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Node { tx, inbound }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("gw.db")
}

pub fn hello(node_id: &str, known_version: u64) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Hello(pb::NodeHello {
            node_id: node_id.to_owned(),
            known_version,
            listen_address: "127.0.0.1:8080".to_owned(),
            admin_address: "127.0.0.1:9901".to_owned(),
            build_version: "test".to_owned(),
            capabilities: vec![],
            known_epoch: 0,
        })),
    }
}

/// A fake data plane on one config stream.
pub struct Node {
    pub tx: mpsc::Sender<pb::DiscoveryRequest>,
    pub inbound: Streaming<pb::DiscoveryResponse>,
}

impl Node {
    /// The next pushed message, failing the test if none arrives within `within`.
    pub async fn next_within(&mut self, within: std::time::Duration) -> pb::DiscoveryResponse {
        tokio::time::timeout(within, self.inbound.message())
            .await
            .expect("no config pushed in time")
            .unwrap()
            .expect("stream ended")
    }

    /// The next pushed message (generous deadline).
    pub async fn next(&mut self) -> pb::DiscoveryResponse {
        self.next_within(gw_testkit::DEFAULT_DEADLINE).await
    }

    pub async fn ack(&self, version: u64) {
        let kind = pb::discovery_request::Kind::Ack(pb::ConfigAck { version });
        self.tx
            .send(pb::DiscoveryRequest { kind: Some(kind) })
            .await
            .unwrap();
    }

    pub async fn nack(&self, version: u64, error: &str) {
        let kind = pb::discovery_request::Kind::Nack(pb::ConfigNack {
            version,
            error: error.to_owned(),
        });
        self.tx
            .send(pb::DiscoveryRequest { kind: Some(kind) })
            .await
            .unwrap();
    }
}

/// The snapshot carried by a pushed message.
pub fn snapshot(resp: &pb::DiscoveryResponse) -> &pb::ConfigSnapshot {
    match &resp.kind {
        Some(pb::discovery_response::Kind::Snapshot(s)) => s,
        other => panic!("response without a snapshot: {other:?}"),
    }
}

/// The delta carried by a pushed message.
pub fn delta(resp: &pb::DiscoveryResponse) -> &pb::ConfigDelta {
    match &resp.kind {
        Some(pb::discovery_response::Kind::Delta(d)) => d,
        other => panic!("response without a delta: {other:?}"),
    }
}

/// An admin client that adds the bearer token to each call.
pub struct Admin {
    pub client: AdminServiceClient<Channel>,
    pub token: Option<String>,
}

impl Admin {
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    }

    pub async fn create(
        &mut self,
        service: pb::Service,
    ) -> Result<pb::CreateServiceResponse, tonic::Status> {
        let req = self.req(pb::CreateServiceRequest {
            service: Some(service),
        });
        self.client
            .create_service(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Creates `service(name, prefix)` and returns the config version that includes it.
    pub async fn add(&mut self, name: &str, prefix: &str) -> u64 {
        self.create(service(name, prefix))
            .await
            .unwrap()
            .config_version
    }

    pub async fn update(
        &mut self,
        service: pb::Service,
    ) -> Result<pb::UpdateServiceResponse, tonic::Status> {
        let req = self.req(pb::UpdateServiceRequest {
            service: Some(service),
        });
        self.client
            .update_service(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get(&mut self, name: &str) -> Result<pb::Service, tonic::Status> {
        let req = self.req(pb::GetServiceRequest {
            name: name.to_owned(),
        });
        self.client
            .get_service(req)
            .await
            .map(|r| r.into_inner().service.unwrap())
    }

    pub async fn list(&mut self) -> pb::ListServicesResponse {
        let req = self.req(pb::ListServicesRequest {});
        self.client.list_services(req).await.unwrap().into_inner()
    }

    pub async fn delete(&mut self, name: &str) -> Result<u64, tonic::Status> {
        let req = self.req(pb::DeleteServiceRequest {
            name: name.to_owned(),
        });
        self.client
            .delete_service(req)
            .await
            .map(|r| r.into_inner().config_version)
    }

    pub async fn put_policy(
        &mut self,
        policy: pb::Policy,
    ) -> Result<pb::PutPolicyResponse, tonic::Status> {
        let req = self.req(pb::PutPolicyRequest {
            policy: Some(policy),
        });
        self.client
            .put_policy(req)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn policies(&mut self) -> pb::ListPoliciesResponse {
        let req = self.req(pb::ListPoliciesRequest {});
        self.client.list_policies(req).await.unwrap().into_inner()
    }

    pub async fn delete_policy(&mut self, name: &str) -> Result<u64, tonic::Status> {
        let req = self.req(pb::DeletePolicyRequest {
            name: name.to_owned(),
        });
        self.client
            .delete_policy(req)
            .await
            .map(|r| r.into_inner().config_version)
    }

    pub async fn nodes(&mut self) -> pb::ListNodesResponse {
        let req = self.req(pb::ListNodesRequest {});
        self.client.list_nodes(req).await.unwrap().into_inner()
    }

    /// The node record of `id`, if listed.
    pub async fn node(&mut self, id: &str) -> Option<pb::Node> {
        self.nodes()
            .await
            .nodes
            .into_iter()
            .find(|n| n.node_id == id)
    }

    /// Polls ListNodes until node `id` satisfies `check` (described by `what`).
    pub async fn wait_node(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&pb::Node) -> bool,
    ) -> pb::Node {
        let check = &check;
        gw_testkit::eventually(what, || {
            let mut client = self.client.clone();
            let req = self.req(pb::ListNodesRequest {});
            async move {
                let nodes = client.list_nodes(req).await.ok()?.into_inner().nodes;
                nodes.into_iter().find(|n| n.node_id == id && check(n))
            }
        })
        .await
    }
}

/// A valid service with the given name and prefix and one endpoint.
pub fn service(name: &str, prefix: &str) -> pb::Service {
    pb::Service {
        name: name.to_owned(),
        route: Some(pb::Route {
            path_prefix: prefix.to_owned(),
            hosts: vec![],
            strip_prefix: false,
        }),
        endpoints: vec!["http://127.0.0.1:9".to_owned()],
        ..Default::default()
    }
}

/// A valid 5-per-minute client-IP policy.
pub fn policy(name: &str, service: &str) -> pb::Policy {
    pb::Policy {
        name: name.to_owned(),
        service: service.to_owned(),
        limit: 5,
        period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    }
}
