//! `pushes`: does a stream of config changes disturb the proxy's tail latency?
//!
//! Same setup as `proxy` (fast upstream and control plane on core 1, one gw-data-plane with one
//! worker thread on core 0, round robin over two endpoints). Interleaved over `--rounds`, each
//! round runs the load generator at a fixed rate twice: once with no config changes, once while
//! an `UpdateService` call lands every `--every-ms` (100 ms by default), and compares p99.
//! The changed service is another one than the routed one unless `--touch-routed` is given
//! (then the routed service's endpoint order flips each time). Prints a Markdown table and
//! writes `bench/results/pushes-<date>.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use gw_bench::harness::{self, Env, LOAD_CPU, Load, LoadFlags, OutputFlags, Started};
use gw_bench::procs;
use gw_bench::report::LoadReport;
use gw_bench::stats::median;
use gw_proto::v1 as pb;
use pb::admin_service_client::AdminServiceClient;

/// Data-plane latency with and without config pushes (see bench/README.md).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(flatten)]
    load: LoadFlags,
    #[command(flatten)]
    output: OutputFlags,
    /// Fixed rate (default: half of gw's closed-loop maximum, measured first).
    #[arg(long)]
    rate: Option<f64>,
    /// Milliseconds between config changes.
    #[arg(long, default_value_t = 100)]
    every_ms: u64,
    /// Change the routed service itself (flip its endpoint order) instead of another one.
    #[arg(long)]
    touch_routed: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.load.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    harness::in_scratch(&args.output, |env| run(&args, env))
}

fn run(args: &Args, env: &Env) -> anyhow::Result<()> {
    let started = Started::now();
    let (_upstream, [up1, up2]) = harness::start_upstream(env)?;
    let cp = harness::start_control_plane(env, Some(LOAD_CPU))?;
    for (name, prefix) in [("plain", "/plain"), ("other", "/other")] {
        harness::add_service(env, &cp.url, name, prefix, [up1, up2])?;
    }
    let dp = harness::start_data_plane(env, &cp, "bench-pushes", "/plain")?;
    let url = format!("http://{}/plain", dp.listen);
    let load = |rate: Option<f64>| Load {
        url: url.clone(),
        connections: args.load.connections,
        rate,
        duration: args.load.duration,
        warmup: args.load.warmup,
        xff_pool: 0,
        requests: None,
        timeline: None,
        headers: Vec::new(),
    };
    let rate = match args.rate {
        Some(r) => r,
        None => {
            let max = harness::run_load(env, &load(None))?.rps;
            eprintln!("pushes: gw closed-loop max {max:.0} req/s");
            (max / 2.0).round()
        }
    };

    // One worker runs the change loop in the background while this thread waits for loadgen.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let admin = runtime.block_on(async {
        let ch = tonic::transport::Channel::from_shared(cp.url.clone())?
            .connect()
            .await?;
        anyhow::Ok(AdminServiceClient::new(ch))
    })?;
    let target = if args.touch_routed { "plain" } else { "other" };
    let mut quiet = Vec::new();
    let mut pushing = Vec::new();
    let mut pushed = 0;
    let mut failed = 0;
    let version = |dp: &harness::DataPlane| {
        procs::http_get(dp.admin, "/metrics")
            .and_then(|(_, b)| procs::metric(&b, "gw_config_version"))
            .unwrap_or(0.0)
    };
    let applied_before = version(&dp);
    for round in 0..args.load.rounds {
        // Alternate which of the pair goes first, so neither always follows the other.
        for with_pushes in [round % 2 == 1, round % 2 == 0] {
            let r: LoadReport = if with_pushes {
                let stop = Arc::new(AtomicBool::new(false));
                let done = Arc::new(AtomicU64::new(0));
                let errs = Arc::new(AtomicU64::new(0));
                let pusher = runtime.spawn(push_loop(
                    admin.clone(),
                    target,
                    (up1, up2),
                    Duration::from_millis(args.every_ms),
                    stop.clone(),
                    done.clone(),
                    errs.clone(),
                ));
                let r = harness::run_load(env, &load(Some(rate)));
                stop.store(true, Ordering::Relaxed);
                let _ = runtime.block_on(pusher);
                pushed += done.load(Ordering::Relaxed);
                failed += errs.load(Ordering::Relaxed);
                r?
            } else {
                harness::run_load(env, &load(Some(rate)))?
            };
            eprintln!(
                "pushes: round {} {:<8} p50 {:>7.0} us  p99 {:>7.0} us  p99.9 {:>7.0} us",
                round + 1,
                if with_pushes { "pushing" } else { "quiet" },
                r.p50_us,
                r.p99_us,
                r.p999_us
            );
            if with_pushes {
                pushing.push(r);
            } else {
                quiet.push(r);
            }
        }
    }
    let applied = version(&dp) - applied_before;

    let m = |rs: &[LoadReport], f: fn(&LoadReport) -> f64| {
        median(&rs.iter().map(f).collect::<Vec<_>>())
    };
    let mut s = started.heading(
        "Data-plane latency during config pushes",
        &args.output.label,
    );
    let _ = writeln!(
        s,
        "- Settings: {} rounds, {} s + {} s warm-up per run, {} connections, fixed rate {rate:.0} \
         req/s, one change to service `{target}` every {} ms ({pushed} changes made, {failed} \
         failed; config version advanced by {applied:.0} on the data plane)\n",
        args.load.rounds,
        args.load.duration,
        args.load.warmup,
        args.load.connections,
        args.every_ms
    );
    let _ = writeln!(s, "| run | p50 us | p99 us | p99.9 us | max us | errors |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (name, rs) in [("quiet", &quiet), ("pushing", &pushing)] {
        let errors: u64 = rs.iter().map(|r| r.errors).sum();
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {errors} |",
            m(rs, |r| r.p50_us),
            m(rs, |r| r.p99_us),
            m(rs, |r| r.p999_us),
            m(rs, |r| r.max_us),
        );
    }
    let ratio = m(&pushing, |r| r.p99_us) / m(&quiet, |r| r.p99_us);
    let _ = writeln!(
        s,
        "\np99 pushing / quiet: {ratio:.2} (target <= 1.10). Medians over rounds."
    );
    harness::write_results(&args.output, "pushes", &started, &s)?;
    Ok(())
}

/// Updates `target` every `every` until `stop`, flipping its endpoint order each time so every
/// call is a real change (a new config version).
async fn push_loop(
    mut admin: AdminServiceClient<tonic::transport::Channel>,
    target: &'static str,
    (up1, up2): (SocketAddr, SocketAddr),
    every: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errs: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flip = false;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        flip = !flip;
        let (a, b) = if flip { (up2, up1) } else { (up1, up2) };
        let service = pb::Service {
            name: target.to_owned(),
            route: Some(pb::Route {
                path_prefix: format!("/{target}"),
                hosts: Vec::new(),
                strip_prefix: false,
            }),
            endpoints: vec![format!("http://{a}"), format!("http://{b}")],
            ..Default::default()
        };
        match admin
            .update_service(pb::UpdateServiceRequest {
                service: Some(service),
            })
            .await
        {
            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
            Err(_) => errs.fetch_add(1, Ordering::Relaxed),
        };
    }
}
