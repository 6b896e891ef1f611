//! `revocation`: how fast a revoked API key stops working on a fleet of real data planes
//! (issue 12: "the time from the RPC returning to revocation on 100 nodes").
//!
//! Starts the release `gw-control-plane`, the fast upstream, and `--nodes` real
//! `gw-data-plane` processes (one worker thread each, all pinned to core 0; the control plane,
//! the upstream and this driver share core 1). Registers a service that needs an API key, and
//! a consumer. Then, `--revocations` times: creates a key, waits until every node answers 200
//! with it, calls `DeleteApiKey`, and from the moment the RPC returns times, per node:
//!
//! - **refused**: the node answers a request carrying the key with 401 (the real thing: each
//!   node is asked through its proxy port every `--poll-ms`, over a kept-alive connection);
//! - **acked**: the control plane's `ListNodes` shows the node has acknowledged the version
//!   without the key (polled every 2 ms).
//!
//! Prints a Markdown table and writes `bench/results/revocation-<date>.md`. Run it with
//! `bench/revocation.sh`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use gw_bench::harness::{self, DataPlane, LOAD_CPU, OutputFlags, Started};
use gw_bench::stats::{median, percentile};
use gw_proto::v1 as pb;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

/// How long one revocation (or one new key) may take to reach every node before the run is
/// abandoned.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// Between two `ListNodes` calls while waiting for acks.
const ACK_POLL: Duration = Duration::from_millis(2);

/// API-key revocation benchmark (see bench/README.md).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Real data planes started.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Keys created and revoked, one at a time.
    #[arg(long, default_value_t = 20)]
    revocations: usize,
    /// Between two requests to one node while waiting for it to refuse the key (ms). Each
    /// node's refusal time is known to within this.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    #[command(flatten)]
    output: OutputFlags,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_scratch, env) = harness::env(&args.output)?;
    let started = Started::now();
    let result = (|| {
        let (_upstream, endpoints) = harness::start_upstream(&env)?;
        let cp = harness::start_control_plane(&env, Some(LOAD_CPU))?;
        let [e1, e2] = endpoints.map(|e| format!("http://{e}"));
        // An open service to probe start-up with, and the keyed one measured.
        harness::add_service(&env, &cp.url, "open", "/open", endpoints)?;
        let keyed = [
            "service",
            "add",
            "keyed",
            "--prefix",
            "/keyed",
            "--endpoint",
            &e1,
            "--endpoint",
            &e2,
            "--auth",
            "key",
        ];
        harness::gwctl(&env, &cp.url, &keyed)?;
        harness::gwctl(&env, &cp.url, &["consumer", "add", "bench"])?;
        eprintln!("revocation: starting {} data planes", args.nodes);
        let mut nodes = Vec::with_capacity(args.nodes);
        for i in 0..args.nodes {
            let id = format!("dp-{i:03}");
            nodes.push(harness::start_data_plane_with(
                &env,
                &cp,
                &id,
                "/open/",
                // Each revocation costs every node one failed attempt from this driver's
                // address (the first 401); the default 10 a minute would soon answer 429.
                &["--access-log", "off", "--auth-failure-limit", "1000000"],
            )?);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let table = runtime.block_on(run(&args, &started, &cp.url, &nodes))?;
        drop(nodes);
        Ok::<_, anyhow::Error>(table)
    })();
    let table = match result {
        Ok(t) => t,
        Err(e) => {
            env.dump_logs();
            return Err(e);
        }
    };
    harness::write_results(&args.output, "revocation", &started, &table)?;
    Ok(())
}

async fn run(
    args: &Args,
    started: &Started,
    url: &str,
    nodes: &[DataPlane],
) -> anyhow::Result<String> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let mut admin = AdminServiceClient::new(channel);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let ids: Vec<String> = (0..nodes.len()).map(|i| format!("dp-{i:03}")).collect();
    let poll = Duration::from_millis(args.poll_ms.max(1));

    let mut refused_ms = Vec::new();
    let mut acked_ms = Vec::new();
    let mut slowest_refusal = Vec::new();
    let mut accepted_ms = Vec::new();
    for round in 0..args.revocations {
        let created = admin
            .create_api_key(pb::CreateApiKeyRequest {
                consumer: "bench".into(),
                ttl: None,
            })
            .await
            .context("CreateApiKey")?
            .into_inner();
        let created_at = Instant::now();
        let key = created.key.clone();
        let id = created
            .api_key
            .as_ref()
            .map(|k| k.id.clone())
            .context("CreateApiKey answered without the key's record")?;
        // Every node takes the new key (also a propagation, shown apart).
        let times = until_all(&client, nodes, &key, 200, poll, created_at).await?;
        accepted_ms.extend(times);

        let deleted = admin
            .delete_api_key(pb::DeleteApiKeyRequest { id })
            .await
            .context("DeleteApiKey")?
            .into_inner();
        let returned = Instant::now();
        let version = deleted.config_version;
        let (refused, acked) = tokio::join!(
            until_all(&client, nodes, &key, 401, poll, returned),
            acks(&mut admin, &ids, version, returned),
        );
        let (refused, acked) = (refused?, acked?);
        let worst = refused.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "revocation: {}/{}: version {version}: refused by every node after {worst:.1} ms",
            round + 1,
            args.revocations
        );
        slowest_refusal.push(worst);
        refused_ms.extend(refused);
        acked_ms.extend(acked);
    }

    let mut s = started.heading("API-key revocation benchmark", &args.output.label);
    let _ = writeln!(
        s,
        "- Settings: {} real data planes (`--worker-threads 1`, access log off, all on core \
         0), control plane, upstream and driver on core {LOAD_CPU}; {} keys created and \
         revoked one at a time (DeleteApiKey); each node asked with the key every {} ms over \
         a kept-alive connection\n",
        nodes.len(),
        args.revocations,
        poll.as_millis()
    );
    let _ = writeln!(
        s,
        "| measure (per (revocation, node) pair) | p50 / p99 / max |\n|---|---|"
    );
    let row = |xs: &[f64]| {
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            percentile(xs, 50.0),
            percentile(xs, 99.0),
            percentile(xs, 100.0)
        )
    };
    let _ = writeln!(
        s,
        "| DeleteApiKey returns -> node answers 401 to the key | {} |",
        row(&refused_ms)
    );
    let _ = writeln!(
        s,
        "| DeleteApiKey returns -> ListNodes shows the node acked the version | {} |",
        row(&acked_ms)
    );
    let _ = writeln!(
        s,
        "| CreateApiKey returns -> node answers 200 to the new key | {} |",
        row(&accepted_ms)
    );
    let _ = writeln!(
        s,
        "| Slowest node per revocation, median over revocations | {:.1} ms |",
        median(&slowest_refusal)
    );
    let _ = writeln!(
        s,
        "\nTarget (issue 12): p99 under 100 ms from the RPC returning to the key refused. A \
         node's refusal is seen at most one poll interval late, so the figures are upper \
         bounds by up to {} ms.",
        poll.as_millis()
    );
    Ok(s)
}

/// Asks every node with `key` every `poll` until each has answered `want` once; returns each
/// node's time from `since` (when the answer came) in milliseconds.
async fn until_all(
    client: &HttpClient,
    nodes: &[DataPlane],
    key: &str,
    want: u16,
    poll: Duration,
    since: Instant,
) -> anyhow::Result<Vec<f64>> {
    let waits = nodes.iter().map(|n| {
        let client = client.clone();
        let addr = n.listen;
        async move {
            let deadline = since + ROUND_LIMIT;
            loop {
                if status(&client, addr, key).await == Some(want) {
                    return Ok(since.elapsed().as_secs_f64() * 1000.0);
                }
                if Instant::now() >= deadline {
                    bail!("{addr} did not answer {want} within {ROUND_LIMIT:?}");
                }
                tokio::time::sleep(poll).await;
            }
        }
    });
    futures::future::try_join_all(waits).await
}

/// The status `addr` answers to `GET /keyed/` with `key`, or `None` on a transport error.
async fn status(client: &HttpClient, addr: SocketAddr, key: &str) -> Option<u16> {
    let req = http::Request::get(format!("http://{addr}/keyed/"))
        .header("x-api-key", key)
        .body(Empty::new())
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    // Drained, so the connection goes back to the pool.
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// Polls `ListNodes` until every node in `ids` acked `version` or later; returns each node's
/// time from `since` (when the poll saw it) in milliseconds.
async fn acks(
    admin: &mut AdminServiceClient<Channel>,
    ids: &[String],
    version: u64,
    since: Instant,
) -> anyhow::Result<Vec<f64>> {
    let mut seen: Vec<Option<f64>> = vec![None; ids.len()];
    let deadline = since + ROUND_LIMIT;
    loop {
        let listed = admin
            .list_nodes(pb::ListNodesRequest {})
            .await
            .context("ListNodes")?
            .into_inner();
        let at = since.elapsed().as_secs_f64() * 1000.0;
        for n in listed.nodes {
            if n.acked_version >= version
                && let Ok(i) = ids.binary_search(&n.node_id)
                && seen[i].is_none()
            {
                seen[i] = Some(at);
            }
        }
        if seen.iter().all(Option::is_some) {
            return Ok(seen.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            bail!("version {version} not acked by every node within {ROUND_LIMIT:?}");
        }
        tokio::time::sleep(ACK_POLL).await;
    }
}
