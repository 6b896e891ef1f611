//! `propagation`: how fast one config change reaches a fleet, with a large config.
//!
//! Starts the release `gw-control-plane` as a child on a temp database (pinned to core 0, so
//! its CPU and memory are its own, read from /proc), registers `--services` services, opens
//! `--streams` simulated data-plane streams (tonic `StreamConfig` clients, each on its own
//! HTTP/2 connection, that announce the "delta" capability and ACK or NACK each response as a
//! real node would: a delta only on the version they hold), then makes `--changes` successive
//! single-service `UpdateService` calls. For each (change, stream) pair it times from the
//! admin RPC returning to that stream holding and having ACKed the new version, and it sums
//! the encoded size of the responses each change caused. Finally it times a fresh node
//! receiving the full config. Then it measures API-key revocation (issue 12) the same way:
//! creates a consumer, and `--revocations` times creates an API key, waits until every stream
//! holds its hash, calls `DeleteApiKey` and times from the RPC returning to each stream having
//! ACKed a version whose consumers no longer hold the key's SHA-256 (checked in the snapshot
//! or delta the stream received, not inferred from the version number). Prints a Markdown
//! table and writes `bench/results/propagation-<date>.md`. Run it pinned to core 1
//! (`bench/propagation.sh`).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use gw_bench::discovery::{self, HeldKeys, Kind, SimNode};
use gw_bench::harness::{self, OutputFlags, SUT_CPU, Started};
use gw_bench::procs::Proc;
use gw_bench::procstat;
use gw_bench::stats::{median, percentile};
use gw_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use pb::config_discovery_service_client::ConfigDiscoveryServiceClient;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Largest config message a simulated node accepts; far above a 10k-service snapshot, so the
/// benchmark measures the control plane rather than tripping tonic's 4 MiB default.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// How long one change may take to reach every stream before the run is abandoned.
const CHANGE_LIMIT: Duration = Duration::from_secs(120);
/// Concurrent admin calls while registering services.
const REGISTER_CONCURRENCY: usize = 8;

/// Config propagation benchmark (see bench/README.md).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Services registered before measuring.
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Simulated data-plane streams.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Successive single-service changes timed.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// API keys created and then revoked one at a time, each revocation timed (0: none).
    #[arg(long, default_value_t = 20)]
    revocations: usize,
    #[command(flatten)]
    output: OutputFlags,
}

/// A response a simulated node received and answered.
#[derive(Debug, Clone)]
struct Received {
    stream: usize,
    version: u64,
    bytes: usize,
    kind: Kind,
    /// ACKed (the node now holds `version`); false: NACKed.
    acked: bool,
    /// When the answer had been handed to the stream.
    acked_at: Instant,
    /// The API key hashes the stream held after answering.
    held: Arc<HeldKeys>,
}

type Log = Arc<Mutex<Vec<Received>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_scratch, env) = harness::env(&args.output)?;
    let started = Started::now();
    let cp = harness::start_control_plane(&env, Some(SUT_CPU))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let table = runtime.block_on(run(&args, &started, &cp.proc, &cp.url))?;
    harness::write_results(&args.output, "propagation", &started, &table)?;
    Ok(())
}

fn service(i: usize, port: u16) -> pb::Service {
    pb::Service {
        name: format!("svc-{i:05}"),
        route: Some(pb::Route {
            path_prefix: format!("/svc-{i:05}"),
            hosts: Vec::new(),
            strip_prefix: false,
        }),
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        ..Default::default()
    }
}

async fn run(args: &Args, started: &Started, cp: &Proc, url: &str) -> anyhow::Result<String> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let admin = AdminServiceClient::new(channel);

    eprintln!("propagation: registering {} services", args.services);
    let registering = Instant::now();
    let mut created = futures::stream::iter(0..args.services)
        .map(|i| {
            let mut admin = admin.clone();
            async move {
                admin
                    .create_service(pb::CreateServiceRequest {
                        service: Some(service(i, 9000)),
                    })
                    .await
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY);
    while let Some(r) = created.next().await {
        r.context("CreateService")?;
    }
    let register_secs = registering.elapsed().as_secs_f64();

    // A fresh node before the fleet connects: the full snapshot to one stream.
    let (fresh_empty_fleet, snapshot_bytes) = fresh_node(url, "fresh-0").await?;

    eprintln!("propagation: opening {} streams", args.streams);
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut streams = Vec::new();
    for s in 0..args.streams {
        streams.push(open_stream(url, s, log.clone()).await?);
    }
    let current = admin
        .clone()
        .list_nodes(pb::ListNodesRequest {})
        .await?
        .into_inner()
        .config_version;
    wait_all(&log, args.streams, current, Instant::now(), |_| true).await?;

    eprintln!("propagation: {} changes", args.changes);
    let cpu_before = procstat::tree_cpu_ticks(cp.pid());
    let mut latencies_ms = Vec::new();
    let mut bytes_per_change = Vec::new();
    let mut worst_per_change = Vec::new();
    let mut prev = current;
    let mut kinds = KindCounts::default();
    for k in 0..args.changes {
        let i = (k * 7919) % args.services.max(1);
        let mut admin = admin.clone();
        let resp = admin
            .update_service(pb::UpdateServiceRequest {
                service: Some(service(i, 10_000 + k as u16)),
            })
            .await?
            .into_inner();
        let returned = Instant::now();
        let v = resp.config_version;
        let times = wait_all(&log, args.streams, v, returned, |_| true).await?;
        let worst = times.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "propagation: change {}/{}: version {v} on every stream after {worst:.1} ms",
            k + 1,
            args.changes
        );
        worst_per_change.push(worst);
        latencies_ms.extend(times);
        // Everything the change put on the wire, NACKed deltas and the snapshots answering
        // them included.
        let bytes: usize = {
            let log = log.lock().map_err(|_| anyhow::anyhow!("log poisoned"))?;
            let caused = log.iter().filter(|r| r.version > prev && r.version <= v);
            let mut bytes = 0;
            for r in caused {
                bytes += r.bytes;
                match (r.kind, r.acked) {
                    (_, false) => kinds.nacks += 1,
                    (Kind::Delta { .. }, true) => kinds.deltas += 1,
                    (_, true) => kinds.snapshots += 1,
                }
            }
            bytes
        };
        bytes_per_change.push(bytes as f64);
        prev = v;
    }
    let cpu_ms = procstat::tree_cpu_ticks(cp.pid()).saturating_sub(cpu_before) as f64 * 1000.0
        / procstat::USER_HZ as f64;

    let revoked_ms = if args.revocations > 0 {
        eprintln!("propagation: {} API-key revocations", args.revocations);
        revocations(&admin, &log, args.streams, args.revocations).await?
    } else {
        Vec::new()
    };

    // A fresh node while the fleet is connected.
    let (fresh_full_fleet, _) = fresh_node(url, "fresh-1").await?;
    let rss_mib = procstat::tree_peak_rss_kib(cp.pid()) as f64 / 1024.0;
    drop(streams);

    let mut s = started.heading("Config propagation benchmark", &args.output.label);
    let _ = writeln!(
        s,
        "- Settings: {} services, {} streams (own HTTP/2 connection each, announcing \
         \"delta\", ACK every snapshot and every delta on the version held, NACK others), {} \
         successive single-service UpdateService calls; control plane pinned to core \
         {SUT_CPU}, this driver to the other core\n",
        args.services, args.streams, args.changes
    );
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| RPC return -> stream holds and ACKed new version, p50 / p99 / max over all (change, stream) pairs | {:.1} / {:.1} / {:.1} ms |",
        percentile(&latencies_ms, 50.0),
        percentile(&latencies_ms, 99.0),
        percentile(&latencies_ms, 100.0)
    );
    let _ = writeln!(
        s,
        "| Slowest stream per change, median over changes | {:.1} ms |",
        median(&worst_per_change)
    );
    let _ = writeln!(
        s,
        "| Bytes sent per change (all streams), median | {:.0} ({:.0} per stream) |",
        median(&bytes_per_change),
        median(&bytes_per_change) / args.streams.max(1) as f64
    );
    let _ = writeln!(
        s,
        "| Responses during the changes: deltas ACKed / snapshots ACKed / NACKed | {} / {} / {} |",
        kinds.deltas, kinds.snapshots, kinds.nacks
    );
    let _ = writeln!(
        s,
        "| Control-plane CPU per change | {:.1} ms |",
        cpu_ms / args.changes.max(1) as f64
    );
    if !revoked_ms.is_empty() {
        let all: Vec<f64> = revoked_ms.iter().flatten().copied().collect();
        let worst: Vec<f64> = revoked_ms
            .iter()
            .map(|t| t.iter().copied().fold(0.0, f64::max))
            .collect();
        let _ = writeln!(
            s,
            "| DeleteApiKey returns -> stream holds and ACKed a version without the key's hash, p50 / p99 / max over all ({} revocations x {} streams) | {:.1} / {:.1} / {:.1} ms |",
            revoked_ms.len(),
            args.streams,
            percentile(&all, 50.0),
            percentile(&all, 99.0),
            percentile(&all, 100.0)
        );
        let _ = writeln!(
            s,
            "| Slowest stream per revocation, median over revocations | {:.1} ms |",
            median(&worst)
        );
    }
    let _ = writeln!(s, "| Control-plane peak RSS | {rss_mib:.1} MiB |");
    let _ = writeln!(s, "| Full snapshot size | {snapshot_bytes} bytes |");
    let _ = writeln!(
        s,
        "| Fresh node receives full config (no other streams / {} streams connected) | {:.1} / {:.1} ms |",
        args.streams,
        fresh_empty_fleet * 1000.0,
        fresh_full_fleet * 1000.0
    );
    let _ = writeln!(
        s,
        "| Registering the services ({REGISTER_CONCURRENCY} concurrent CreateService) | {register_secs:.1} s |"
    );
    let _ = writeln!(
        s,
        "\nTarget (issue 5): p99 under 100 ms from RPC return to all streams holding the new \
         version. Negative times (a push overtaking the RPC's answer) count as 0."
    );
    Ok(s)
}

/// How the responses caused by the timed changes were answered.
#[derive(Debug, Default)]
struct KindCounts {
    deltas: usize,
    snapshots: usize,
    nacks: usize,
}

/// The consumer whose API keys the revocation measure creates and revokes.
const REVOKED_CONSUMER: &str = "bench-revocation";

/// Creates [`REVOKED_CONSUMER`], then `count` times: creates an API key, waits until every
/// stream holds its hash, revokes it, and times from `DeleteApiKey` returning to each stream
/// having ACKed a version without the hash. Returns the times (ms) per revocation.
async fn revocations(
    admin: &AdminServiceClient<Channel>,
    log: &Log,
    streams: usize,
    count: usize,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut admin = admin.clone();
    admin
        .create_consumer(pb::CreateConsumerRequest {
            consumer: Some(pb::Consumer {
                name: REVOKED_CONSUMER.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .context("CreateConsumer")?;
    let mut all = Vec::with_capacity(count);
    for k in 0..count {
        let created = admin
            .create_api_key(pb::CreateApiKeyRequest {
                consumer: REVOKED_CONSUMER.to_owned(),
                ttl: None,
            })
            .await
            .context("CreateApiKey")?
            .into_inner();
        let hash = Sha256::digest(created.key.as_bytes()).to_vec();
        let id = created
            .api_key
            .context("CreateApiKey answered without the key's record")?
            .id;
        wait_all(
            log,
            streams,
            created.config_version,
            Instant::now(),
            |held| held.holds(&hash),
        )
        .await
        .context("the new key reaching every stream")?;
        let resp = admin
            .delete_api_key(pb::DeleteApiKeyRequest { id })
            .await
            .context("DeleteApiKey")?
            .into_inner();
        let returned = Instant::now();
        let times = wait_all(log, streams, resp.config_version, returned, |held| {
            !held.holds(&hash)
        })
        .await
        .context("the revocation reaching every stream")?;
        eprintln!(
            "propagation: revocation {}/{count}: version {} without the key on every stream after {:.1} ms",
            k + 1,
            resp.config_version,
            times.iter().copied().fold(0.0, f64::max)
        );
        all.push(times);
    }
    Ok(all)
}

/// Waits until every stream has ACKed `version` (or later); returns each stream's time from
/// `since` in milliseconds. The first version at or after `version` a stream ACKed must
/// satisfy `holds` (checked on the API key hashes it held then), else this fails: a stream
/// that acked the version with the wrong consumers is an error, not a slow stream.
async fn wait_all(
    log: &Log,
    streams: usize,
    version: u64,
    since: Instant,
    holds: impl Fn(&HeldKeys) -> bool,
) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + CHANGE_LIMIT;
    loop {
        {
            let log = log.lock().map_err(|_| anyhow::anyhow!("log poisoned"))?;
            let mut first: Vec<Option<&Received>> = vec![None; streams];
            for r in log.iter().filter(|r| r.acked && r.version >= version) {
                let slot = &mut first[r.stream];
                if slot.is_none_or(|f| r.acked_at < f.acked_at) {
                    *slot = Some(r);
                }
            }
            if first.iter().all(Option::is_some) {
                let mut times = Vec::with_capacity(streams);
                for r in first.into_iter().flatten() {
                    if !holds(&r.held) {
                        bail!(
                            "stream {} ACKed version {} without the expected API keys",
                            r.stream,
                            r.version
                        );
                    }
                    times.push(r.acked_at.saturating_duration_since(since).as_secs_f64() * 1000.0);
                }
                return Ok(times);
            }
        }
        if Instant::now() >= deadline {
            bail!("version {version} did not reach every stream within {CHANGE_LIMIT:?}");
        }
        // A short poll: the figures measured are milliseconds and up.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A simulated data plane: says hello (announcing deltas), then answers every response as
/// [`SimNode`] decides, logging each. It reads each response whole but decodes only its
/// version and kind (see `gw_bench::discovery`).
/// Returns the sender that keeps the stream open; dropping it ends the stream.
async fn open_stream(
    url: &str,
    index: usize,
    log: Log,
) -> anyhow::Result<mpsc::Sender<pb::DiscoveryRequest>> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello(&format!("sim-{index:03}"))).await?;
    let mut responses =
        discovery::stream_config(channel, ReceiverStream::new(rx), MAX_MESSAGE).await?;
    let acks = tx.clone();
    tokio::spawn(async move {
        let mut node = SimNode::default();
        let mut held = Arc::new(HeldKeys::default());
        while let Ok(Some(header)) = responses.message().await {
            let answer = node.answer(&header);
            let acked = matches!(answer.kind, Some(pb::discovery_request::Kind::Ack(_)));
            if acked {
                // A node applies what it ACKs; consumers are rare, so most deltas share the
                // previous set.
                let c = &header.consumers;
                if c.replace_all || !c.upserted.is_empty() || !c.removed.is_empty() {
                    Arc::make_mut(&mut held).apply(c);
                }
            }
            if acks.send(answer).await.is_err() {
                break;
            }
            if let Ok(mut log) = log.lock() {
                log.push(Received {
                    stream: index,
                    version: header.version,
                    bytes: header.bytes,
                    kind: header.kind,
                    acked,
                    acked_at: Instant::now(),
                    held: held.clone(),
                });
            }
        }
    });
    Ok(tx)
}

fn hello(node_id: &str) -> pb::DiscoveryRequest {
    pb::DiscoveryRequest {
        kind: Some(pb::discovery_request::Kind::Hello(pb::NodeHello {
            known_epoch: 0,
            node_id: node_id.to_owned(),
            known_version: 0,
            listen_address: "127.0.0.1:1".to_owned(),
            admin_address: "127.0.0.1:2".to_owned(),
            build_version: "gw-bench".to_owned(),
            capabilities: vec![discovery::DELTA_CAPABILITY.to_owned()],
        })),
    }
}

/// A node with no config connects: seconds until it holds the full snapshot, decoded, and its
/// size.
async fn fresh_node(url: &str, node_id: &str) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let mut client =
        ConfigDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello(node_id)).await?;
    let mut responses = client
        .stream_config(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let resp = responses
        .message()
        .await?
        .context("stream ended before the first config")?;
    Ok((started.elapsed().as_secs_f64(), resp.encoded_len()))
}
