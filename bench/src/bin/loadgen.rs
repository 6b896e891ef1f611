//! `loadgen`: HTTP/1.1 load over N keep-alive connections, closed-loop or at a fixed rate.
//!
//! - Closed loop (`--rate 0`): every connection sends its next request as soon as the previous
//!   answer has been read; the result is the maximum throughput the target sustains.
//! - Fixed rate (`--rate R`): open loop, like wrk2. A pacer thread releases request `k` at its
//!   intended time `start + k/R` to connection `k mod N`; latency is measured from that intended
//!   time, not from when the request actually left, so a stalled target is charged for every
//!   request that queued behind the stall (no coordinated omission).
//! - `--xff-pool K` adds `X-Forwarded-For: <address k mod K>` from K synthetic addresses
//!   (10.0.0.0/8), so a per-IP limiter behind a trusting proxy tracks K keys; with
//!   `--requests K` every address is sent exactly once (pre-population).
//!
//! - `--timeline FILE` writes one CSV line per measured request (its intended send time as Unix
//!   microseconds, how late it actually left, its latency, its outcome), to line slow requests
//!   up with events in other processes' logs.
//!
//! Prints one JSON [`gw_bench::report::LoadReport`] on stdout. Runs are bounded by `--duration`
//! (plus `--warmup`) or `--requests`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use gw_bench::report::LoadReport;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// Latencies are recorded in nanoseconds up to this bound (a minute: far beyond any run).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Significant figures kept by the histogram: 0.1% relative error.
const SIG_FIGS: u8 = 3;

/// HTTP load generator for gw's proxy benchmarks.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Target URL (http only), e.g. http://127.0.0.1:8080/.
    #[arg(long)]
    url: Uri,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Requests per second for fixed-rate mode; 0 means closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts (connections, caches and pools warm up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many requests instead of after a duration (closed loop, no warm-up).
    #[arg(long)]
    requests: Option<u64>,
    /// Send X-Forwarded-For from a pool of this many distinct addresses (0: no header).
    #[arg(long, default_value_t = 0)]
    xff_pool: u32,
    /// Write every measured request as a CSV line to this file: `intended_unix_us`,
    /// `send_lag_us` (actual send minus intended), `latency_us` (from intended), `ok`.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
    /// A header sent with every request, `NAME: VALUE` (repeatable), e.g. an API key.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME: VALUE"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("{s:?}: header name: {e}"))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|e| format!("{s:?}: header value: {e}"))?;
    Ok((name, value))
}

/// A request the pacer releases: its intended send time.
type Tick = Instant;

/// Shared run state: the request counter (also the X-Forwarded-For index) and the pool.
struct Plan {
    uri: Uri,
    host: HeaderValue,
    xff: Vec<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    issued: AtomicU64,
    max_requests: Option<u64>,
    measure_from: Instant,
    stop_at: Instant,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    total: u64,
    /// Per measured request, when `--timeline` is given: intended, sent, done, ok.
    timeline: Option<Vec<(Instant, Instant, Instant, bool)>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.url.scheme_str() != Some("http") {
        bail!("--url must be http://host:port/path");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = tokio::task::LocalSet::new().block_on(&runtime, run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<LoadReport> {
    let authority = args
        .url
        .authority()
        .context("--url needs host:port")?
        .clone();
    let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await?
        .next()
        .context("--url host does not resolve")?;
    let xff = (0..args.xff_pool).map(synthetic_address).collect();
    let warmup = if args.requests.is_some() {
        0.0
    } else {
        args.warmup
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let stop_at = if args.requests.is_some() {
        // Bounded by count; the time bound is a safety net.
        start + Duration::from_secs(600)
    } else {
        measure_from + Duration::from_secs_f64(args.duration)
    };
    let plan = Arc::new(Plan {
        host: HeaderValue::from_str(authority.as_str())?,
        uri: args.url.clone(),
        xff,
        headers: args.headers.clone(),
        issued: AtomicU64::new(0),
        max_requests: args.requests,
        measure_from,
        stop_at,
    });
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1,
        MAX_LATENCY_NS,
        SIG_FIGS,
    )?));
    let tally = Rc::new(RefCell::new(Tally {
        timeline: args.timeline.is_some().then(Vec::new),
        ..Tally::default()
    }));

    let fixed = args.rate > 0.0 && args.requests.is_none();
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = if fixed {
            let (tx, rx) = mpsc::unbounded_channel::<Tick>();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        senders.extend(tx);
        tasks.push(tokio::task::spawn_local(connection(
            addr,
            plan.clone(),
            rx,
            hist.clone(),
            tally.clone(),
        )));
    }
    let pacer = fixed.then(|| {
        let rate = args.rate;
        let stop_at = plan.stop_at;
        std::thread::spawn(move || pace(start, rate, stop_at, senders))
    });
    for task in tasks {
        task.await??;
    }
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let end = Instant::now().min(plan.stop_at);
    let seconds = end
        .saturating_duration_since(plan.measure_from)
        .as_secs_f64();
    let hist = hist.borrow();
    let tally = tally.borrow();
    if let (Some(path), Some(timeline)) = (&args.timeline, &tally.timeline) {
        write_timeline(path, start, timeline)?;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(LoadReport {
        mode: if fixed { "fixed" } else { "closed" }.to_owned(),
        target_rate: if fixed { args.rate } else { 0.0 },
        ok: tally.ok,
        errors: tally.errors,
        total: tally.total,
        seconds,
        rps: if seconds > 0.0 {
            tally.ok as f64 / seconds
        } else {
            0.0
        },
        p50_us: us(hist.value_at_quantile(0.50)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
    })
}

/// Writes the `--timeline` CSV: instants become Unix microseconds through one reading of both
/// clocks at `start`.
fn write_timeline(
    path: &std::path::Path,
    start: Instant,
    timeline: &[(Instant, Instant, Instant, bool)],
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let wall = std::time::SystemTime::now();
    let now = Instant::now();
    let start_unix = wall
        .duration_since(std::time::UNIX_EPOCH)?
        .saturating_sub(now.saturating_duration_since(start));
    let us = |d: Duration| d.as_micros();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    writeln!(out, "intended_unix_us,send_lag_us,latency_us,ok")?;
    for &(intended, sent, done, ok) in timeline {
        writeln!(
            out,
            "{},{},{},{}",
            us(start_unix + intended.saturating_duration_since(start)),
            us(sent.saturating_duration_since(intended)),
            us(done.saturating_duration_since(intended)),
            u8::from(ok)
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Address number `i` of the synthetic pool, in 10.0.0.0/8 (private, never routed here: the
/// header is only ever read by the proxy under test).
fn synthetic_address(i: u32) -> HeaderValue {
    let [_, b, c, d] = i.to_be_bytes();
    let text = format!("10.{b}.{c}.{d}");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("10.0.0.1"))
}

/// Releases request `k` at `start + k/rate` to connection `k mod N`, until `stop_at`.
///
/// A plain thread with `sleep` is used rather than tokio's timer, whose millisecond resolution
/// would add up to a millisecond of pacing error to every latency measured from intended times.
/// When the thread wakes late it releases every request already due, each with its own
/// intended time, so the lateness is charged to the latencies rather than hidden.
fn pace(start: Instant, rate: f64, stop_at: Instant, senders: Vec<mpsc::UnboundedSender<Tick>>) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut k: u64 = 0;
    loop {
        let due = start + interval.mul_f64(k as f64);
        if due >= stop_at {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let i = (k % senders.len() as u64) as usize;
        if senders[i].send(due).is_err() {
            break;
        }
        k += 1;
    }
    // Dropping the senders tells every connection that no more requests will come.
}

/// One keep-alive connection: sends requests (paced by `ticks`, or back to back) until the run
/// ends, reconnecting after a transport error.
async fn connection(
    addr: SocketAddr,
    plan: Arc<Plan>,
    mut ticks: Option<mpsc::UnboundedReceiver<Tick>>,
    hist: Rc<RefCell<Histogram<u64>>>,
    tally: Rc<RefCell<Tally>>,
) -> anyhow::Result<()> {
    'reconnect: loop {
        if Instant::now() >= plan.stop_at {
            return Ok(());
        }
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loadgen: connect {addr}: {e}");
                tally.borrow_mut().errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        tokio::task::spawn_local(conn);
        loop {
            let intended = match ticks.as_mut() {
                Some(rx) => match rx.recv().await {
                    Some(t) => Some(t),
                    None => return Ok(()),
                },
                None => None,
            };
            let n = plan.issued.fetch_add(1, Ordering::Relaxed);
            if plan.max_requests.is_some_and(|max| n >= max) {
                return Ok(());
            }
            let sent = Instant::now();
            if intended.is_none() && sent >= plan.stop_at {
                return Ok(());
            }
            let mut req = Request::get(plan.uri.clone())
                .header(header::HOST, plan.host.clone())
                .body(Empty::new())?;
            for (name, value) in &plan.headers {
                req.headers_mut().insert(name, value.clone());
            }
            if !plan.xff.is_empty() {
                let i = (n % plan.xff.len() as u64) as usize;
                req.headers_mut()
                    .insert("x-forwarded-for", plan.xff[i].clone());
            }
            let outcome = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                anyhow::Ok(status.is_success())
            }
            .await;
            let done = Instant::now();
            let from = intended.unwrap_or(sent);
            let counted = from >= plan.measure_from && done <= plan.stop_at + grace();
            match outcome {
                Ok(ok) => {
                    tally.borrow_mut().total += 1;
                    if counted {
                        let mut t = tally.borrow_mut();
                        if ok {
                            t.ok += 1;
                        } else {
                            t.errors += 1;
                        }
                        let ns = done.saturating_duration_since(from).as_nanos() as u64;
                        hist.borrow_mut().saturating_record(ns.max(1));
                        if let Some(timeline) = &mut t.timeline {
                            timeline.push((from, sent, done, ok));
                        }
                    }
                }
                Err(e) => {
                    if counted {
                        tally.borrow_mut().errors += 1;
                    }
                    eprintln!("loadgen: request: {e}");
                    continue 'reconnect;
                }
            }
        }
    }
}

/// Answers to requests sent before the end of the window still count if they arrive this soon
/// after it, so the last in-flight requests are not dropped as errors.
fn grace() -> Duration {
    Duration::from_secs(5)
}
