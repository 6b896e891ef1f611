//! The pieces the proxy and push benchmarks set up the same way: the fast upstream, a
//! control plane on a temp database, gw data planes pinned to one core, registration through
//! `gwctl`, and `loadgen` runs pinned to the other core.
//!
//! Core layout (two cores): the system under test runs on [`SUT_CPU`]; the load generator,
//! the upstream and the control plane share [`LOAD_CPU`], so nothing else competes with the
//! proxy being measured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::procs::{self, Proc};
use crate::report::LoadReport;

/// The core the proxy under test is pinned to.
pub const SUT_CPU: &str = "0";
/// The core the load generator, the upstream and the control plane are pinned to.
pub const LOAD_CPU: &str = "1";
/// Name of the proxy benchmark's rate-limit policy (the 100k-key, never-rejecting one).
pub const LIMIT_POLICY: &str = "bench-ip";
/// How long a component gets to come up before the benchmark gives up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Paths of the release binaries and the scratch directory of one benchmark run.
#[derive(Debug, Clone)]
pub struct Env {
    /// Directory holding `gw-data-plane`, `gw-control-plane`, `gwctl`, `upstream`, `loadgen`.
    pub bin: PathBuf,
    /// Scratch directory: configs, databases, caches and every child's stderr log.
    pub dir: PathBuf,
}

impl Env {
    /// A release binary by name, checked to exist.
    pub fn binary(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.bin.join(name);
        if !p.is_file() {
            bail!(
                "{} missing: build with `cargo build --release -p gw-bench -p gw-data-plane \
                 -p gw-control-plane -p gwctl` (or run the bench/*.sh script)",
                p.display()
            );
        }
        Ok(p)
    }

    /// Prints the last lines of every child's log to stderr: called when a run fails, since the
    /// scratch directory is removed on exit.
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                eprintln!("--- {} (last {} lines)", path.display(), tail.len());
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// The stderr log file for a child named `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
}

/// Starts the fast upstream with two listeners pinned to [`LOAD_CPU`]; returns it and its
/// two addresses.
pub fn start_upstream(env: &Env) -> anyhow::Result<(Proc, [SocketAddr; 2])> {
    let mut p = Proc::start_piped(
        "upstream",
        Some(LOAD_CPU),
        &env.binary("upstream")?,
        &["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
        &env.log("upstream"),
    )?;
    let out = p.stdout().context("upstream stdout")?;
    let addrs = procs::read_listen_lines(out, 2)?;
    Ok((p, [addrs[0], addrs[1]]))
}

/// A running control plane and the URL gwctl and data planes use to reach it.
#[derive(Debug)]
pub struct ControlPlane {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

/// Starts `gw-control-plane` on a temp database, pinned to `cpus`, and waits until gwctl gets
/// an answer from it.
pub fn start_control_plane(env: &Env, cpus: Option<&str>) -> anyhow::Result<ControlPlane> {
    let port = procs::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let db = format!("sqlite://{}", env.dir.join("cp.db").display());
    let mut proc = Proc::start(
        "control-plane",
        cpus,
        &env.binary("gw-control-plane")?,
        &["--listen", &listen, "--database", &db],
        &env.log("control-plane"),
    )?;
    let url = format!("http://{listen}");
    procs::wait_for("the control plane to answer", START_LIMIT, || {
        gwctl(env, &url, &["service", "list"]).ok()
    })?;
    proc.check_alive()?;
    Ok(ControlPlane { proc, url })
}

/// Runs `gwctl --control-plane <url> args…` and returns its stdout.
pub fn gwctl(env: &Env, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--control-plane", url];
    all.extend_from_slice(args);
    procs::run_output(&env.binary("gwctl")?, &all)
}

/// Registers service `name` on `prefix` with round robin over `endpoints` (via gwctl).
pub fn add_service(
    env: &Env,
    url: &str,
    name: &str,
    prefix: &str,
    endpoints: [SocketAddr; 2],
) -> anyhow::Result<()> {
    let [e1, e2] = endpoints.map(|e| format!("http://{e}"));
    let args = [
        "service",
        "add",
        name,
        "--prefix",
        prefix,
        "--endpoint",
        &e1,
        "--endpoint",
        &e2,
    ];
    gwctl(env, url, &args).map(drop)
}

/// A running gw data plane.
#[derive(Debug)]
pub struct DataPlane {
    /// The process.
    pub proc: Proc,
    /// Client traffic address.
    pub listen: SocketAddr,
    /// Admin address (/readyz, /metrics).
    pub admin: SocketAddr,
}

/// Starts `gw-data-plane --worker-threads 1` pinned to [`SUT_CPU`], trusting X-Forwarded-For
/// from loopback (the load generator), and waits until `/readyz` is 200 and `probe_path`
/// routes (200 through the proxy).
pub fn start_data_plane(
    env: &Env,
    cp: &ControlPlane,
    node_id: &str,
    probe_path: &str,
) -> anyhow::Result<DataPlane> {
    start_data_plane_with(env, cp, node_id, probe_path, &[])
}

/// [`start_data_plane`] with `extra` flags (e.g. `--redis-url`).
pub fn start_data_plane_with(
    env: &Env,
    cp: &ControlPlane,
    node_id: &str,
    probe_path: &str,
    extra: &[&str],
) -> anyhow::Result<DataPlane> {
    start_data_plane_wrapped(env, cp, node_id, probe_path, extra, &[], START_LIMIT)
}

/// [`start_data_plane_with`] run by `wrapper` (a program and its flags, e.g. `valgrind
/// --tool=callgrind`; empty: none), waiting up to `limit` for it to come up (valgrind makes
/// start-up many times slower). The returned process id is the wrapper's, which for valgrind
/// is the data plane's own.
pub fn start_data_plane_wrapped(
    env: &Env,
    cp: &ControlPlane,
    node_id: &str,
    probe_path: &str,
    extra: &[&str],
    wrapper: &[&str],
    limit: Duration,
) -> anyhow::Result<DataPlane> {
    let listen: SocketAddr = format!("127.0.0.1:{}", procs::free_port()?).parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", procs::free_port()?).parse()?;
    let cache = env.dir.join(format!("{node_id}.cache"));
    let (l, a, c) = (
        listen.to_string(),
        admin.to_string(),
        cache.display().to_string(),
    );
    let mut args = vec![
        "--control-plane",
        &cp.url,
        "--listen",
        &l,
        "--admin-listen",
        &a,
        "--node-id",
        node_id,
        "--cache-file",
        &c,
        "--worker-threads",
        "1",
        "--trusted-proxies",
        "127.0.0.0/8",
    ];
    args.extend_from_slice(extra);
    let binary = env.binary("gw-data-plane")?;
    let (program, args) = match wrapper.split_first() {
        None => (binary, args),
        Some((program, flags)) => {
            let mut all = flags.to_vec();
            all.push(binary.to_str().context("binary path is not UTF-8")?);
            all.extend(args);
            (PathBuf::from(program), all)
        }
    };
    let mut proc = Proc::start(node_id, Some(SUT_CPU), &program, &args, &env.log(node_id))?;
    procs::wait_for(&format!("{node_id} /readyz 200"), limit, || {
        procs::http_get(admin, "/readyz").filter(|(s, _)| *s == 200)
    })?;
    procs::wait_for(&format!("{node_id} to route {probe_path}"), limit, || {
        procs::http_get(listen, probe_path).filter(|(s, _)| *s == 200)
    })?;
    proc.check_alive()?;
    Ok(DataPlane {
        proc,
        listen,
        admin,
    })
}

/// Registers the three gw services (plain, keyed and limited, same endpoints), the
/// never-rejecting policy, and a consumer with an API key for `keyed`; returns the key.
///
/// The policy refills one token per hour with a burst of 10^9 (the control plane's maximum): no
/// bucket is ever empty (no rejections) and none is ever full again within an hour, so the idle sweep (which evicts full
/// buckets) keeps every key tracked.
pub fn register_proxy_services(
    env: &Env,
    url: &str,
    up1: std::net::SocketAddr,
    up2: std::net::SocketAddr,
) -> anyhow::Result<String> {
    for (name, prefix) in [
        ("plain", "/plain"),
        ("keyed", "/keyed"),
        ("limited", "/limited"),
    ] {
        add_service(env, url, name, prefix, [up1, up2])?;
    }
    gwctl(env, url, &["service", "update", "keyed", "--auth", "key"])?;
    gwctl(env, url, &["consumer", "add", "bench"])?;
    let created = gwctl(env, url, &["-o", "json", "consumer", "key", "add", "bench"])?;
    let created: serde_json::Value = serde_json::from_str(&created).context("key add -o json")?;
    let key = created["key"]
        .as_str()
        .context("no key in `gwctl consumer key add -o json`")?
        .to_owned();
    gwctl(
        env,
        url,
        &[
            "policy",
            "set",
            LIMIT_POLICY,
            "--limit",
            "1",
            "--per",
            "1h",
            "--burst",
            "1000000000",
            "--key",
            "ip",
            "--service",
            "limited",
        ],
    )?;
    Ok(key)
}

/// How many keys the limiter policy tracks, from the data plane's `/metrics`.
pub fn tracked_keys(dp: &DataPlane) -> anyhow::Result<f64> {
    let (_, body) = procs::http_get(dp.admin, "/metrics").context("data plane /metrics")?;
    procs::metric(
        &body,
        &format!("gw_rate_limit_tracked_keys{{policy=\"{LIMIT_POLICY}\"}}"),
    )
    .context("gw_rate_limit_tracked_keys missing from /metrics")
}

/// Flags every driver takes: where the binaries are and where the results go.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputFlags {
    /// Directory with the release binaries (default $CARGO_TARGET_DIR/release or
    /// target/release).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Results file (default bench/results/<benchmark>-<date>.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A note printed in the results heading, e.g. "smoke, noisy machine".
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Flags of the drivers that run the load generator in rounds.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadFlags {
    /// Rounds; every case runs once per round.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Warm-up seconds per run (not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Keep-alive connections from the load generator.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
}

/// When a run started and how loaded the machine was then, for the results heading.
#[derive(Debug, Clone)]
pub struct Started {
    /// `YYYY-MM-DD` (UTC), for the results file name.
    pub day: String,
    /// `YYYY-MM-DD HH:MM UTC`.
    pub when: String,
    /// 1-minute load average at the start.
    pub load: String,
}

impl Started {
    /// Now.
    pub fn now() -> Started {
        let (day, when) = now_utc();
        Started {
            day,
            when,
            load: loadavg(),
        }
    }

    /// The Markdown heading every results file starts with: title, label, date, machine,
    /// load before and after.
    pub fn heading(&self, title: &str, label: &str) -> String {
        let label = if label.is_empty() {
            String::new()
        } else {
            format!(" ({label})")
        };
        format!(
            "# {title}{label}\n\n- Date: {}\n- Machine: {}\n- Load average (1 min): {} before, {} after\n",
            self.when,
            machine(),
            self.load,
            loadavg()
        )
    }
}

/// A scratch directory (removed when the guard drops) and the [`Env`] using it.
pub fn env(flags: &OutputFlags) -> anyhow::Result<(tempfile::TempDir, Env)> {
    let scratch = tempfile::tempdir()?;
    let env = Env {
        bin: procs::release_dir(flags.bin_dir.clone()),
        dir: scratch.path().to_owned(),
    };
    Ok((scratch, env))
}

/// Runs a driver's `run` with a fresh scratch directory, printing the children's logs if it
/// fails (the directory is removed on return).
pub fn in_scratch(
    flags: &OutputFlags,
    run: impl FnOnce(&Env) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (_scratch, env) = env(flags)?;
    let result = run(&env);
    if result.is_err() {
        env.dump_logs();
    }
    result
}

/// Prints `text` and writes it to `--out` or `bench/results/<benchmark>-<date>.md`.
pub fn write_results(
    flags: &OutputFlags,
    benchmark: &str,
    started: &Started,
    text: &str,
) -> anyhow::Result<()> {
    println!("{text}");
    let out = flags
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{benchmark}-{}.md", started.day)));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, text).with_context(|| format!("write {}", out.display()))?;
    eprintln!("{benchmark}: wrote {}", out.display());
    Ok(())
}

/// One `loadgen` run's settings.
#[derive(Debug, Clone)]
pub struct Load {
    /// Target URL.
    pub url: String,
    /// Keep-alive connections.
    pub connections: usize,
    /// Fixed rate (requests/s), or `None` for closed loop.
    pub rate: Option<f64>,
    /// Measured seconds.
    pub duration: f64,
    /// Warm-up seconds.
    pub warmup: f64,
    /// X-Forwarded-For pool size (0: no header).
    pub xff_pool: u32,
    /// Stop after this many requests instead (no warm-up).
    pub requests: Option<u64>,
    /// Write the per-request timeline here (`loadgen --timeline`).
    pub timeline: Option<PathBuf>,
    /// Headers sent with every request, `NAME: VALUE` (e.g. an API key).
    pub headers: Vec<String>,
}

/// Runs `loadgen` pinned to [`LOAD_CPU`] and parses its report.
pub fn run_load(env: &Env, load: &Load) -> anyhow::Result<LoadReport> {
    let loadgen = env.binary("loadgen")?;
    let mut args = vec![
        "-c".to_owned(),
        LOAD_CPU.to_owned(),
        loadgen.display().to_string(),
        "--url".to_owned(),
        load.url.clone(),
        "--connections".to_owned(),
        load.connections.to_string(),
        "--duration".to_owned(),
        load.duration.to_string(),
        "--warmup".to_owned(),
        load.warmup.to_string(),
        "--xff-pool".to_owned(),
        load.xff_pool.to_string(),
    ];
    if let Some(rate) = load.rate {
        args.extend(["--rate".to_owned(), rate.to_string()]);
    }
    if let Some(n) = load.requests {
        args.extend(["--requests".to_owned(), n.to_string()]);
    }
    if let Some(path) = &load.timeline {
        args.extend(["--timeline".to_owned(), path.display().to_string()]);
    }
    for h in &load.headers {
        args.extend(["--header".to_owned(), h.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = procs::run_output(Path::new("taskset"), &refs)?;
    let line = out.lines().last().context("loadgen printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("loadgen report: {line}"))
}

/// A short description of the machine for results files: CPU model, cores, kernel, load.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // Counted from /proc/cpuinfo, not available_parallelism(): the driver runs pinned to one
    // core, and the machine is what is being described.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = procs::run_output(Path::new("uname"), &["-r"]).unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// The 1-minute load average now, as text.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// Today's UTC date and time as `YYYY-MM-DD` and `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> (String, String) {
    let day = procs::run_output(Path::new("date"), &["-u", "+%Y-%m-%d"]).unwrap_or_default();
    let full =
        procs::run_output(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    (day.trim().to_owned(), full.trim().to_owned())
}
