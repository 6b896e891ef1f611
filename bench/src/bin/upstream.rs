//! `upstream`: the fast backend the proxy benchmark puts behind every proxy.
//!
//! HTTP/1.1 with keep-alive on every address given with `--listen` (default one ephemeral
//! port), answering every request with the same small body and no other work, so what the
//! benchmark measures is the proxy in front of it. Prints `listening <addr>` per listener on
//! stdout (the driver reads these to learn the ports), then serves until killed.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body every request gets: small, like a typical JSON API answer's envelope.
const BODY: &[u8] = b"{\"ok\":true,\"from\":\"gw-bench-upstream\"}\n";

/// A minimal, fast HTTP/1.1 backend for benchmarks.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to serve on (repeat for several listeners in one process).
    #[arg(long = "listen", default_value = "127.0.0.1:0")]
    listen: Vec<SocketAddr>,
    /// Tokio worker threads; 1 keeps the upstream to a single core.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(args.listen))
}

async fn run(addrs: Vec<SocketAddr>) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let local = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {local}")?;
        out.flush()?;
        tasks.spawn(accept_loop(listener));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Running out of file descriptors under load is transient: keep serving.
            Err(e) => {
                eprintln!("upstream: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            // A client closing its connection mid-run is normal at the end of a round.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
