//! `proxy`: gw-data-plane side by side with nginx, HAProxy and Caddy, in one interleaved run.
//!
//! Targets: the upstream directly; nginx (one worker, upstream keep-alive); HAProxy (one
//! thread); Caddy (`GOMAXPROCS=1`, upstream keep-alive); gw-data-plane (one worker thread) with round robin over the upstream's two
//! endpoints, without a policy and with a per-IP token bucket tracking 100,000 keys that never
//! rejects; and the same gw process on a service that needs an API key, sent valid in
//! `X-API-Key` (`gw-key`; issue 12's target is its throughput over `gw`'s). Each proxy is pinned to core 0, the load generator to core 1 (see
//! `gw_bench::harness`). Every round runs every target once, starting each round at a
//! different target so slow drift of the machine spreads evenly.
//!
//! Phase 1, closed loop: maximum requests/s and CPU per request. Phase 2, open loop at a fixed
//! rate (default half of nginx's median maximum): latency p50/p99/p99.9. Then peak RSS. The
//! table goes to stdout and to `bench/results/proxy-<date>.md`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use gw_bench::harness::{self, Env, LOAD_CPU, Load, LoadFlags, OutputFlags, SUT_CPU, Started};
use gw_bench::procs::{self, Proc};
use gw_bench::procstat;
use gw_bench::report::LoadReport;
use gw_bench::stats::median;

/// Interleaved proxy throughput/latency comparison (see bench/README.md).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(flatten)]
    load: LoadFlags,
    #[command(flatten)]
    output: OutputFlags,
    /// Distinct client addresses the limiter tracks.
    #[arg(long, default_value_t = 100_000)]
    keys: u32,
    /// Fixed rate for the latency phase (default: half of nginx's median maximum).
    #[arg(long)]
    rate: Option<f64>,
    /// Leave out targets by name (comma-separated:
    /// direct,nginx,haproxy,caddy,gw,gw-key,gw-log,gw-limiter).
    #[arg(long, default_value = "")]
    skip: String,
    /// Also measure each target's closed-loop maximum with wrk once (a cross-check of
    /// loadgen; needs `wrk`).
    #[arg(long)]
    wrk: bool,
}

/// One thing the load generator is pointed at.
struct Target {
    name: &'static str,
    url: String,
    /// The process whose CPU and memory count (none for the upstream measured directly).
    pid: Option<u32>,
    xff_pool: u32,
    /// Headers sent with every request (`NAME: VALUE`).
    headers: Vec<String>,
    closed: Vec<LoadReport>,
    fixed: Vec<LoadReport>,
    /// Microseconds of proxy CPU per request, one per closed-loop run.
    cpu_us: Vec<f64>,
    peak_rss_kib: u64,
    /// wrk's requests/s, when `--wrk` is given.
    wrk_rps: Option<f64>,
}

impl Target {
    fn new(name: &'static str, url: String, pid: Option<u32>, xff_pool: u32) -> Target {
        Target {
            name,
            url,
            pid,
            xff_pool,
            headers: Vec::new(),
            closed: Vec::new(),
            fixed: Vec::new(),
            cpu_us: Vec::new(),
            peak_rss_kib: 0,
            wrk_rps: None,
        }
    }

    fn max_rps(&self) -> f64 {
        median(&self.closed.iter().map(|r| r.rps).collect::<Vec<_>>())
    }

    fn fixed_median(&self, f: impl Fn(&LoadReport) -> f64) -> f64 {
        median(&self.fixed.iter().map(f).collect::<Vec<_>>())
    }
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
    let skip: Vec<&str> = args.skip.split(',').map(str::trim).collect();

    eprintln!("proxy: starting upstream, nginx, HAProxy, Caddy, control plane, data planes");
    let (_upstream, [up1, up2]) = harness::start_upstream(env)?;
    // Skipped proxies are not started, so a gw-only run needs neither installed.
    let nginx = match skip.contains(&"nginx") {
        true => None,
        false => Some(start_nginx(env, up1, up2)?),
    };
    let haproxy = match skip.contains(&"haproxy") {
        true => None,
        false => Some(start_haproxy(env, up1, up2)?),
    };
    let caddy = match skip.contains(&"caddy") {
        true => None,
        false => Some(start_caddy(env, up1, up2)?),
    };
    let cp = harness::start_control_plane(env, Some(LOAD_CPU))?;
    let api_key = harness::register_proxy_services(env, &cp.url, up1, up2)?;
    // The access log is off except on `gw-log`, which writes it (JSON) to a file, to measure
    // what it costs (issue 13's target: on / off >= 0.9).
    let off = ["--access-log", "off"];
    let dp_plain = harness::start_data_plane_with(env, &cp, "bench-plain", "/plain", &off)?;
    let dp_limited = harness::start_data_plane_with(env, &cp, "bench-limited", "/limited", &off)?;
    let access_log = env.dir.join("access.log").display().to_string();
    let dp_logged = harness::start_data_plane_with(
        env,
        &cp,
        "bench-log",
        "/plain",
        &["--access-log", &access_log],
    )?;

    eprintln!("proxy: pre-populating {} limiter keys", args.keys);
    let pre = harness::run_load(
        env,
        &Load {
            url: format!("http://{}/limited", dp_limited.listen),
            connections: args.load.connections,
            rate: None,
            duration: 0.0,
            warmup: 0.0,
            xff_pool: args.keys,
            requests: Some(u64::from(args.keys)),
            timeline: None,
            headers: Vec::new(),
        },
    )?;
    if pre.errors > 0 {
        bail!("pre-population had {} errors", pre.errors);
    }
    let tracked_before = harness::tracked_keys(&dp_limited)?;

    let mut targets = vec![Target::new(
        "direct",
        format!("http://{up1}/plain"),
        None,
        0,
    )];
    for (name, proxy) in [("nginx", &nginx), ("haproxy", &haproxy), ("caddy", &caddy)] {
        if let Some((proc, addr)) = proxy {
            targets.push(Target::new(
                name,
                format!("http://{addr}/plain"),
                Some(proc.pid()),
                0,
            ));
        }
    }
    targets.extend([
        Target::new(
            "gw",
            format!("http://{}/plain", dp_plain.listen),
            Some(dp_plain.proc.pid()),
            0,
        ),
        // The same process as `gw`, the same endpoints, the same path length: only the
        // service's `--auth key` and the header differ.
        Target {
            headers: vec![format!("x-api-key: {api_key}")],
            ..Target::new(
                "gw-key",
                format!("http://{}/keyed", dp_plain.listen),
                Some(dp_plain.proc.pid()),
                0,
            )
        },
        Target::new(
            "gw-log",
            format!("http://{}/plain", dp_logged.listen),
            Some(dp_logged.proc.pid()),
            0,
        ),
        Target::new(
            "gw-limiter",
            format!("http://{}/limited", dp_limited.listen),
            Some(dp_limited.proc.pid()),
            args.keys,
        ),
    ]);
    targets.retain(|t| !skip.contains(&t.name));

    let load = |t: &Target, rate: Option<f64>| Load {
        url: t.url.clone(),
        connections: args.load.connections,
        rate,
        duration: args.load.duration,
        warmup: args.load.warmup,
        xff_pool: t.xff_pool,
        requests: None,
        timeline: None,
        headers: t.headers.clone(),
    };

    for round in 0..args.load.rounds {
        let n = targets.len();
        for i in 0..n {
            let t = &mut targets[(i + round) % n];
            let ticks = t.pid.map(procstat::tree_cpu_ticks);
            let r = harness::run_load(env, &load(t, None))?;
            if let (Some(pid), Some(before)) = (t.pid, ticks) {
                let used = procstat::tree_cpu_ticks(pid).saturating_sub(before);
                let us = used as f64 * 1e6 / procstat::USER_HZ as f64;
                t.cpu_us.push(us / r.total.max(1) as f64);
            }
            eprintln!(
                "proxy: round {} closed {:<10} {:>9.0} req/s ({} errors)",
                round + 1,
                t.name,
                r.rps,
                r.errors
            );
            t.closed.push(r);
        }
    }
    if args.wrk {
        let lua = env.dir.join("xff.lua");
        std::fs::write(&lua, WRK_XFF_LUA.replace("KEYS", &args.keys.to_string()))?;
        for t in &mut targets {
            t.wrk_rps = Some(run_wrk(t, &args.load, &lua)?);
            eprintln!(
                "proxy: wrk    {:<10} {:>9.0} req/s",
                t.name,
                t.wrk_rps.unwrap_or(0.0)
            );
        }
    }
    let nginx_max = targets
        .iter()
        .find(|t| t.name == "nginx")
        .map(Target::max_rps);
    let rate = match (args.rate, nginx_max) {
        (Some(r), _) => r,
        (None, Some(m)) if m > 0.0 => (m / 2.0).round(),
        _ => bail!("give --rate when nginx is skipped"),
    };
    for round in 0..args.load.rounds {
        let n = targets.len();
        for i in 0..n {
            let t = &mut targets[(i + round) % n];
            let r = harness::run_load(env, &load(t, Some(rate)))?;
            eprintln!(
                "proxy: round {} fixed  {:<10} p50 {:>7.0} us  p99 {:>7.0} us  p99.9 {:>7.0} us",
                round + 1,
                t.name,
                r.p50_us,
                r.p99_us,
                r.p999_us
            );
            t.fixed.push(r);
        }
    }
    for t in &mut targets {
        t.peak_rss_kib = t.pid.map_or(0, procstat::tree_peak_rss_kib);
    }
    let tracked_after = harness::tracked_keys(&dp_limited)?;
    let rejected = procs::http_get(dp_limited.admin, "/metrics")
        .and_then(|(_, b)| {
            procs::metric(
                &b,
                &format!(
                    "gw_rate_limited_total{{policy=\"{}\"}}",
                    harness::LIMIT_POLICY
                ),
            )
        })
        .unwrap_or(0.0);

    let settings = format!(
        "{} rounds, {} s measured + {} s warm-up per run, {} connections, fixed rate {rate:.0} \
         req/s, limiter keys {} (tracked: {tracked_before:.0} after pre-population, \
         {tracked_after:.0} at the end; rejected {rejected:.0})",
        args.load.rounds, args.load.duration, args.load.warmup, args.load.connections, args.keys
    );
    let heading = started.heading("Proxy benchmark", &args.output.label);
    let table = render(&targets, &heading, &settings);
    harness::write_results(&args.output, "proxy", &started, &table)?;
    Ok(())
}

/// wrk script for the limiter target: X-Forwarded-For cycling through the same synthetic
/// addresses loadgen uses (10.b.c.d from the key index).
const WRK_XFF_LUA: &str = r#"
local n = 0
request = function()
  n = n + 1
  local i = n % KEYS
  local xff = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  return wrk.format(nil, nil, { ["X-Forwarded-For"] = xff })
end
"#;

/// One closed-loop wrk run against `t` (one thread, pinned like loadgen); its requests/s.
fn run_wrk(t: &Target, load: &LoadFlags, lua: &std::path::Path) -> anyhow::Result<f64> {
    let conns = load.connections.to_string();
    let secs = format!("{}s", load.duration.ceil().max(1.0));
    let lua = lua.display().to_string();
    let mut args = vec!["-c", LOAD_CPU, "wrk", "-t1", "-c", &conns, "-d", &secs];
    if t.xff_pool > 0 {
        args.extend(["-s", &lua]);
    }
    args.push(&t.url);
    let out = procs::run_output(std::path::Path::new("taskset"), &args)?;
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{out}"))
}

/// Starts nginx as a reverse proxy with one worker and upstream keep-alive, pinned to the
/// proxy core; returns it and its address.
fn start_nginx(
    env: &Env,
    up1: std::net::SocketAddr,
    up2: std::net::SocketAddr,
) -> anyhow::Result<(Proc, std::net::SocketAddr)> {
    let port = procs::free_port()?;
    let dir = env.dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           keepalive_requests 1000000;\n\
           upstream up {{ server {up1}; server {up2}; keepalive 64; keepalive_requests 1000000; }}\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location / {{\n\
               proxy_pass http://up;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
             }}\n\
           }}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let (p, c, e) = (
        dir.display().to_string(),
        path.display().to_string(),
        dir.join("startup.log").display().to_string(),
    );
    start_proxy(env, "nginx", "nginx", &["-p", &p, "-e", &e, "-c", &c], port)
}

/// Starts `program` (the proxy `name`) pinned to the proxy core and waits until it proxies
/// `/plain` on `port`.
fn start_proxy(
    env: &Env,
    name: &str,
    program: &str,
    args: &[&str],
    port: u16,
) -> anyhow::Result<(Proc, std::net::SocketAddr)> {
    let mut proc = Proc::start(
        name,
        Some(SUT_CPU),
        std::path::Path::new(program),
        args,
        &env.log(name),
    )?;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    procs::wait_for(&format!("{name} to proxy"), Duration::from_secs(10), || {
        procs::http_get(addr, "/plain").filter(|(s, _)| *s == 200)
    })?;
    proc.check_alive()?;
    Ok((proc, addr))
}

/// Starts HAProxy with one thread and connection reuse to the upstream, pinned to the proxy
/// core; returns it and its address.
fn start_haproxy(
    env: &Env,
    up1: std::net::SocketAddr,
    up2: std::net::SocketAddr,
) -> anyhow::Result<(Proc, std::net::SocketAddr)> {
    let port = procs::free_port()?;
    let conf = format!(
        "global\n\
         \x20 nbthread 1\n\
         \x20 maxconn 4000\n\
         defaults\n\
         \x20 mode http\n\
         \x20 timeout connect 5s\n\
         \x20 timeout client 30s\n\
         \x20 timeout server 30s\n\
         \x20 http-reuse always\n\
         frontend fe\n\
         \x20 bind 127.0.0.1:{port}\n\
         \x20 default_backend be\n\
         backend be\n\
         \x20 balance roundrobin\n\
         \x20 server s1 {up1}\n\
         \x20 server s2 {up2}\n"
    );
    let path = env.dir.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let c = path.display().to_string();
    start_proxy(env, "haproxy", "haproxy", &["-db", "-f", &c], port)
}

/// Starts Caddy as a reverse proxy with `GOMAXPROCS=1` (one core's worth of Go scheduler),
/// round robin over both upstream ports with keep-alive, pinned to the proxy core; returns it
/// and its address.
///
/// Everything comes from the generated Caddyfile, so a system Caddy (Debian's package
/// installs a service on :80 with /etc/caddy/Caddyfile) neither interferes nor is used: the
/// admin endpoint is off (no clash on :2019), automatic HTTPS is off (no redirect listener on
/// :80, no certificates), the site matches any host on our port only, and Caddy's config and
/// data directories (its autosaved config, storage) are this run's scratch directory. Caddy
/// writes no access log unless a `log` directive asks for one.
fn start_caddy(
    env: &Env,
    up1: std::net::SocketAddr,
    up2: std::net::SocketAddr,
) -> anyhow::Result<(Proc, std::net::SocketAddr)> {
    let port = procs::free_port()?;
    let dir = env.dir.join("caddy");
    std::fs::create_dir_all(&dir)?;
    // keepalive_idle_conns_per_host 64: the same idle pool as nginx's `keepalive 64`
    // (Caddy's default is 32 per host).
    let conf = format!(
        "{{\n\
         \tadmin off\n\
         \tauto_https off\n\
         }}\n\
         http://:{port} {{\n\
         \tbind 127.0.0.1\n\
         \treverse_proxy {up1} {up2} {{\n\
         \t\tlb_policy round_robin\n\
         \t\ttransport http {{\n\
         \t\t\tkeepalive 5m\n\
         \t\t\tkeepalive_idle_conns 64\n\
         \t\t\tkeepalive_idle_conns_per_host 64\n\
         \t\t}}\n\
         \t}}\n\
         }}\n"
    );
    let path = dir.join("Caddyfile");
    std::fs::write(&path, conf)?;
    let c = path.display().to_string();
    // `env` sets the variables and execs Caddy, so the pid (CPU, memory) is Caddy's own.
    let config_home = format!("XDG_CONFIG_HOME={}", dir.join("config").display());
    let data_home = format!("XDG_DATA_HOME={}", dir.join("data").display());
    start_proxy(
        env,
        "caddy",
        "env",
        &[
            "GOMAXPROCS=1",
            &config_home,
            &data_home,
            "caddy",
            "run",
            "--config",
            &c,
            "--adapter",
            "caddyfile",
        ],
        port,
    )
}

/// nginx, HAProxy and Caddy versions, for the results heading.
fn versions() -> String {
    let first_line = |prog: &str, arg: &str| {
        std::process::Command::new(prog)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_else(|| format!("{prog}: not found"))
    };
    format!(
        "{}; {}; caddy {}",
        first_line("nginx", "-v"),
        first_line("haproxy", "-v"),
        first_line("caddy", "version")
    )
}

/// The results table in Markdown, with the ratios the targets are stated in.
fn render(targets: &[Target], heading: &str, settings: &str) -> String {
    let mut s = heading.to_owned();
    let _ = writeln!(s, "- Settings: {settings}");
    let _ = writeln!(s, "- Versions: {}", versions());
    let _ = writeln!(
        s,
        "- Proxies pinned to core {SUT_CPU}; load generator, upstream and control plane to core \
         {LOAD_CPU}. Medians over rounds; max req/s shows min-max in brackets.\n"
    );
    let _ = writeln!(
        s,
        "| target | max req/s (closed loop) | p50 us | p99 us | p99.9 us | CPU us/req | proxy core busy | peak RSS MiB | errors | wrk req/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for t in targets {
        let rps: Vec<f64> = t.closed.iter().map(|r| r.rps).collect();
        let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rps.iter().copied().fold(0.0, f64::max);
        let errors: u64 = t.closed.iter().chain(&t.fixed).map(|r| r.errors).sum();
        // CPU per request times requests per second: how much of its core the proxy used in
        // the closed loop. Well under 100% means something else (the load generator's core)
        // was the limit, and the max req/s figure understates the proxy.
        let (cpu, busy) = if t.pid.is_some() {
            let us = median(&t.cpu_us);
            (
                format!("{us:.1}"),
                format!("{:.0}%", us * t.max_rps() / 1e4),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        let rss = if t.pid.is_some() {
            format!("{:.1}", t.peak_rss_kib as f64 / 1024.0)
        } else {
            "-".to_owned()
        };
        let wrk = t.wrk_rps.map_or("-".to_owned(), |r| format!("{r:.0}"));
        let _ = writeln!(
            s,
            "| {} | {:.0} [{:.0}-{:.0}] | {:.0} | {:.0} | {:.0} | {cpu} | {busy} | {rss} | {errors} | {wrk} |",
            t.name,
            t.max_rps(),
            lo,
            hi,
            t.fixed_median(|r| r.p50_us),
            t.fixed_median(|r| r.p99_us),
            t.fixed_median(|r| r.p999_us),
        );
    }
    let find = |n: &str| targets.iter().find(|t| t.name == n);
    let _ = writeln!(s, "\n## Ratios (targets from issue 5)\n");
    if let (Some(gw), Some(ngx)) = (find("gw"), find("nginx")) {
        let _ = writeln!(
            s,
            "- Throughput gw / nginx: {:.2} (target >= 1.0)",
            gw.max_rps() / ngx.max_rps()
        );
    }
    for peer in ["haproxy", "caddy"] {
        if let (Some(gw), Some(p)) = (find("gw"), find(peer)) {
            let _ = writeln!(
                s,
                "- Throughput gw / {peer}: {:.2}",
                gw.max_rps() / p.max_rps()
            );
        }
    }
    if let (Some(on), Some(off)) = (find("gw-limiter"), find("gw")) {
        let _ = writeln!(
            s,
            "- Throughput gw with 100k-key limiter / gw without: {:.2} (target >= 0.95)",
            on.max_rps() / off.max_rps()
        );
    }
    if let (Some(on), Some(off)) = (find("gw-key"), find("gw")) {
        let cpu = |t: &Target| median(&t.cpu_us);
        let _ = writeln!(
            s,
            "- Throughput gw with key auth (valid X-API-Key) / gw without: {:.2} (target >= \
             0.95, issue 12); CPU per request {:.1} us with, {:.1} us without",
            on.max_rps() / off.max_rps(),
            cpu(on),
            cpu(off)
        );
    }
    if let (Some(on), Some(off)) = (find("gw-log"), find("gw")) {
        let _ = writeln!(
            s,
            "- Throughput gw with the access log (JSON, to a file) / gw without: {:.2} (target \
             >= 0.9, issue 13)",
            on.max_rps() / off.max_rps()
        );
    }
    if let Some(direct) = find("direct") {
        let base = direct.fixed_median(|r| r.p99_us);
        let added = |t: &Target| t.fixed_median(|r| r.p99_us) - base;
        for name in [
            "nginx",
            "haproxy",
            "caddy",
            "gw",
            "gw-key",
            "gw-log",
            "gw-limiter",
        ] {
            if let Some(t) = find(name) {
                let _ = writeln!(s, "- Added p99 over direct, {name}: {:.0} us", added(t));
            }
        }
        if let (Some(gw), Some(ngx)) = (find("gw"), find("nginx")) {
            let _ = writeln!(
                s,
                "- Added p99 gw - nginx: {:.0} us (target <= 0)",
                added(gw) - added(ngx)
            );
        }
    }
    s
}
