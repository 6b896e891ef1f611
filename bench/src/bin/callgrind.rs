//! `callgrind`: instructions (and allocations) per proxied request, counted by valgrind's
//! callgrind, so the figure does not depend on how loaded the machine is.
//!
//! One release `gw-data-plane --worker-threads 1 --access-log off` runs under `valgrind
//! --tool=callgrind` on the proxy core, with the services of the proxy benchmark on the bench
//! upstream: `/plain` (no policy), `/keyed` (`--auth key`, a valid `X-API-Key` on every request)
//! and `/limited` (the never-rejecting per-IP token bucket tracking `--keys` addresses, keyed on
//! the `X-Forwarded-For` the load generator sends). For each route and each `--connections`
//! value: `--warmup-requests` requests, zero the counters (`callgrind_control -z`), `--requests`
//! requests from `loadgen -c <connections>`, dump (`callgrind_control -d`); then an idle window
//! of the same wall-clock length, dumped too, whose cost (timers, reports to the control plane,
//! the limiter's sweep) is subtracted for the "net" figures: under valgrind a request takes
//! tens of times longer than natively, so time-driven work would otherwise be charged to
//! requests many times over.
//!
//! Counted: user-space instructions of the whole process (kernel time is not); allocations are
//! calls to mimalloc's `mi_malloc_aligned` and `mi_zalloc_aligned`, what Rust's global-allocator
//! calls become with the data plane's allocator (`mi_realloc_aligned` counted apart). The
//! limiter route runs last, after one request per address has filled the limiter, so the other
//! routes run without 100,000 tracked keys in the process.
//!
//! The table goes to stdout and to `bench/results/callgrind-<date>.md`; `--top N` appends each
//! dump's top N functions by inclusive cost per request (`callgrind_annotate --inclusive=yes`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use gw_bench::harness::{self, Env, LOAD_CPU, Load, OutputFlags, Started};
use gw_bench::procs;

/// How long the data plane gets to come up under valgrind (tens of times slower than natively).
const START_LIMIT: Duration = Duration::from_secs(300);
/// How long a dump file gets to appear after `callgrind_control -d` returns.
const DUMP_LIMIT: Duration = Duration::from_secs(60);
/// Allocation entry points of mimalloc that Rust's `GlobalAlloc` calls (the `mimalloc` crate).
const ALLOC_FNS: [&str; 2] = ["mi_malloc_aligned", "mi_zalloc_aligned"];
/// mimalloc's reallocation entry point, reported apart (a realloc may or may not allocate).
const REALLOC_FN: &str = "mi_realloc_aligned";

/// Callgrind instructions per request for gw's routes (see bench/README.md).
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(flatten)]
    output: OutputFlags,
    /// Routes to measure, in order (comma-separated: plain,keyed,limited).
    #[arg(long, default_value = "plain,limited")]
    routes: String,
    /// Keep-alive connection counts of the load generator, one measurement each
    /// (comma-separated). 4 is the load of RESULTS section 10b, 32 the proxy benchmark's.
    #[arg(long, default_value = "4,32")]
    connections: String,
    /// Requests counted per route and connection count.
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Requests before each counted run (connections, pools and caches warm up).
    #[arg(long, default_value_t = 1_000)]
    warmup_requests: u64,
    /// Distinct client addresses the limiter tracks on `/limited`.
    #[arg(long, default_value_t = 100_000)]
    keys: u32,
    /// Append the top N functions of every counted run, by inclusive and by own instructions
    /// per request (0: none).
    #[arg(long, default_value_t = 0)]
    top: usize,
    /// Leave out of the lists the frames every task runs under (thread start, the tokio
    /// scheduler and task polling: 95 to 100 % of everything inclusive, telling nothing about
    /// the request path; callgrind_annotate also lists them near 100 % by own cost when the
    /// dump was taken while they ran). Comma-separated name prefixes; empty to list every frame.
    #[arg(
        long,
        default_value = "clone,start_thread,std::sys::,<std::sys::,core::ops::function::,\
                         tokio::runtime::scheduler::,tokio::runtime::task::,\
                         tokio::runtime::context::,tokio::runtime::blocking::"
    )]
    top_skip: String,
    /// Keep the callgrind dumps in this directory (default: removed with the scratch dir).
    #[arg(long)]
    dumps: Option<PathBuf>,
    /// An extra valgrind flag (repeatable), e.g. `--valgrind-arg=--toggle-collect=*limiter*`.
    #[arg(long = "valgrind-arg", allow_hyphen_values = true)]
    valgrind_args: Vec<String>,
}

/// One of the routes this benchmark can count.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Plain,
    Keyed,
    Limited,
}

impl Route {
    fn parse(s: &str) -> anyhow::Result<Route> {
        Ok(match s.trim() {
            "plain" => Route::Plain,
            "keyed" => Route::Keyed,
            "limited" => Route::Limited,
            other => bail!("unknown route {other:?} (plain, keyed, limited)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Route::Plain => "plain",
            Route::Keyed => "keyed",
            Route::Limited => "limited",
        }
    }

    fn describe(self, keys: u32) -> String {
        match self {
            Route::Plain => "`/plain` (no policy)".to_owned(),
            Route::Keyed => "`/keyed` (key auth)".to_owned(),
            Route::Limited => format!("`/limited` ({keys}-key limiter)"),
        }
    }
}

/// What one callgrind dump holds that this benchmark reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    instructions: u64,
    allocs: u64,
    reallocs: u64,
}

/// One counted run and the idle window after it.
struct Row {
    route: Route,
    connections: usize,
    requests: u64,
    busy: Counts,
    idle: Counts,
    seconds: f64,
    busy_dump: PathBuf,
}

impl Row {
    fn per_request(&self, f: impl Fn(&Counts) -> u64) -> f64 {
        f(&self.busy) as f64 / self.requests as f64
    }

    fn net_per_request(&self, f: impl Fn(&Counts) -> u64) -> f64 {
        f(&self.busy).saturating_sub(f(&self.idle)) as f64 / self.requests as f64
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::in_scratch(&args.output, |env| run(&args, env))
}

fn run(args: &Args, env: &Env) -> anyhow::Result<()> {
    let started = Started::now();
    let routes = args
        .routes
        .split(',')
        .map(Route::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let conns = args
        .connections
        .split(',')
        .map(|c| c.trim().parse::<usize>().context("--connections"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.requests == 0 || conns.contains(&0) {
        bail!("--requests and every --connections value must be at least 1");
    }
    let dumps = match &args.dumps {
        Some(d) => d.clone(),
        None => env.dir.join("dumps"),
    };
    std::fs::create_dir_all(&dumps).with_context(|| format!("create {}", dumps.display()))?;
    let out_file = dumps.join("callgrind.out");

    eprintln!("callgrind: starting upstream, control plane, data plane under valgrind");
    let (_upstream, [up1, up2]) = harness::start_upstream(env)?;
    let cp = harness::start_control_plane(env, Some(LOAD_CPU))?;
    let api_key = harness::register_proxy_services(env, &cp.url, up1, up2)?;
    let out_flag = format!("--callgrind-out-file={}", out_file.display());
    let mut wrapper = vec!["valgrind", "--tool=callgrind", &out_flag];
    wrapper.extend(args.valgrind_args.iter().map(String::as_str));
    let dp = harness::start_data_plane_wrapped(
        env,
        &cp,
        "bench-callgrind",
        "/plain",
        &["--access-log", "off"],
        &wrapper,
        START_LIMIT,
    )?;
    let pid = dp.proc.pid().to_string();
    let base = |route: Route| format!("http://{}/{}", dp.listen, route.name());

    let mut rows = Vec::new();
    let mut dumped = 0u32;
    let mut populated = false;
    for &route in &routes {
        if route == Route::Limited && !populated {
            eprintln!("callgrind: pre-populating {} limiter keys", args.keys);
            let pre = harness::run_load(
                env,
                &load(base(route), 32, args.keys, u64::from(args.keys), &[]),
            )?;
            if pre.errors > 0 {
                bail!("pre-population had {} errors", pre.errors);
            }
            populated = true;
        }
        let (xff, headers) = match route {
            Route::Plain => (0, Vec::new()),
            Route::Keyed => (0, vec![format!("x-api-key: {api_key}")]),
            Route::Limited => (args.keys, Vec::new()),
        };
        for &c in &conns {
            let url = base(route);
            harness::run_load(
                env,
                &load(url.clone(), c, xff, args.warmup_requests, &headers),
            )?;
            let t0 = Instant::now();
            let (r, busy_dump) = counted(
                &pid,
                &out_file,
                &mut dumped,
                &format!("{}-c{c}", route.name()),
                || harness::run_load(env, &load(url, c, xff, args.requests, &headers)),
            )?;
            let seconds = t0.elapsed().as_secs_f64();
            if r.errors > 0 || r.ok != args.requests {
                bail!(
                    "/{} with {c} connections: {} answered 2xx of {} ({} errors)",
                    route.name(),
                    r.ok,
                    args.requests,
                    r.errors
                );
            }
            // The idle window: the same length, no requests.
            let ((), idle_dump) = counted(
                &pid,
                &out_file,
                &mut dumped,
                &format!("{}-c{c}-idle", route.name()),
                || {
                    std::thread::sleep(Duration::from_secs_f64(seconds));
                    Ok(())
                },
            )?;
            let row = Row {
                route,
                connections: c,
                requests: args.requests,
                busy: read_counts(&busy_dump)?,
                idle: read_counts(&idle_dump)?,
                seconds,
                busy_dump,
            };
            eprintln!(
                "callgrind: /{} -c {c}: {:.0} instructions per request ({:.0} net of idle work), {:.2} allocations, {seconds:.1} s",
                route.name(),
                row.per_request(|k| k.instructions),
                row.net_per_request(|k| k.instructions),
                row.net_per_request(|k| k.allocs),
            );
            rows.push(row);
        }
    }
    let tracked = match populated {
        true => Some(harness::tracked_keys(&dp)?),
        false => None,
    };
    let heading = started.heading(
        "Callgrind: instructions per proxied request",
        &args.output.label,
    );
    let mut text = render(args, &rows, &heading, tracked);
    if args.top > 0 {
        let skip: Vec<&str> = args
            .top_skip
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        for row in &rows {
            for (inclusive, what) in [(true, "inclusive"), (false, "own (exclusive)")] {
                let _ = writeln!(
                    text,
                    "\n## Top {} functions by {what} instructions per request, /{} with {} \
                     connections\n",
                    args.top,
                    row.route.name(),
                    row.connections
                );
                text.push_str(&top_functions(
                    &row.busy_dump,
                    inclusive,
                    &skip,
                    args.top,
                    row.requests,
                )?);
            }
            if !skip.is_empty() {
                let _ = writeln!(
                    text,
                    "\nLeft out of both lists: frames starting with {}.",
                    skip.iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    harness::write_results(&args.output, "callgrind", &started, &text)?;
    if args.dumps.is_some() {
        eprintln!("callgrind: dumps kept in {}", dumps.display());
    }
    Ok(())
}

/// A closed-loop `loadgen` run of exactly `requests` requests.
fn load(url: String, connections: usize, xff_pool: u32, requests: u64, headers: &[String]) -> Load {
    Load {
        url,
        connections,
        rate: None,
        duration: 0.0,
        warmup: 0.0,
        xff_pool,
        requests: Some(requests),
        timeline: None,
        headers: headers.to_vec(),
    }
}

fn callgrind_control(args: &[&str]) -> anyhow::Result<()> {
    procs::run_output(Path::new("callgrind_control"), args).map(drop)
}

/// Zeroes the counters (`callgrind_control -z`), runs `work`, dumps the counters
/// (`callgrind_control -d`) and returns what `work` returned and the new dump file: callgrind
/// names the k-th dump `<out-file>.<k>`.
fn counted<T>(
    pid: &str,
    out_file: &Path,
    dumped: &mut u32,
    label: &str,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, PathBuf)> {
    callgrind_control(&["-z", pid])?;
    let value = work()?;
    callgrind_control(&["-d", label, pid])?;
    *dumped += 1;
    let path = PathBuf::from(format!("{}.{dumped}", out_file.display()));
    // The file is complete once its totals line is written (the last line callgrind writes).
    procs::wait_for(
        &format!("{} to be written", path.display()),
        DUMP_LIMIT,
        || read_counts(&path).ok(),
    )?;
    Ok((value, path))
}

/// Reads a dump's total instructions and its calls into mimalloc.
fn read_counts(path: &Path) -> anyhow::Result<Counts> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse_counts(&text).with_context(|| format!("{}: no totals line", path.display()))
}

/// Total instructions (`totals:` or `summary:`) and the calls to the allocation functions,
/// from callgrind's output format: `cfn=(id) name` (or `cfn=(id)` once the id is known, the
/// ids shared with `fn=`) names the callee of the next `calls=<count> ...` line.
fn parse_counts(text: &str) -> Option<Counts> {
    let mut names = std::collections::HashMap::<&str, &str>::new();
    let mut callee = "";
    let mut totals = None;
    let mut counts = Counts::default();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("cfn=")
            .or_else(|| line.strip_prefix("fn="))
        {
            let name = match rest.split_once(' ') {
                Some((id, name)) if id.starts_with('(') => {
                    names.insert(id, name);
                    name
                }
                None if rest.starts_with('(') => names.get(rest).copied().unwrap_or(""),
                _ => rest,
            };
            callee = if line.starts_with("cfn=") { name } else { "" };
        } else if let Some(rest) = line.strip_prefix("calls=") {
            let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
            if ALLOC_FNS.contains(&callee) {
                counts.allocs += n;
            } else if callee == REALLOC_FN {
                counts.reallocs += n;
            }
        } else if let Some(rest) = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))
        {
            totals = rest.split_whitespace().next()?.parse().ok();
        }
    }
    counts.instructions = totals?;
    Some(counts)
}

/// The top `n` functions of a dump by inclusive (or own) instructions, per request, as a
/// Markdown table, after the program's total; functions starting with a `skip` prefix are left
/// out.
fn top_functions(
    dump: &Path,
    inclusive: bool,
    skip: &[&str],
    n: usize,
    requests: u64,
) -> anyhow::Result<String> {
    let path = dump.display().to_string();
    let mode = if inclusive {
        "--inclusive=yes"
    } else {
        "--inclusive=no"
    };
    let out = procs::run_output(
        Path::new("callgrind_annotate"),
        &[mode, "--auto=no", "--threshold=100", &path],
    )?;
    let mut s = String::from("| instructions per request | share | function |\n|---|---|---|\n");
    let lines = parse_annotate(&out);
    let (total, rest): (Vec<_>, Vec<_>) = lines
        .into_iter()
        .partition(|(_, _, name)| name == "PROGRAM TOTALS");
    let kept = rest
        .into_iter()
        .filter(|(_, _, name)| !skip.iter().any(|p| name.starts_with(p)))
        .take(n);
    for (ir, share, name) in total.into_iter().chain(kept) {
        let _ = writeln!(
            s,
            "| {:.0} | {share} | `{}` |",
            ir as f64 / requests as f64,
            name.replace('|', "\\|").replace('`', "'")
        );
    }
    Ok(s)
}

/// Function lines of `callgrind_annotate` output: `1,234 (12.34%)  file:function [object]`.
fn parse_annotate(out: &str) -> Vec<(u64, String, String)> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (count, rest) = line.split_once(' ')?;
            let ir: u64 = count.replace(',', "").parse().ok()?;
            let rest = rest.trim_start();
            let (share, name) = match rest.strip_prefix('(') {
                Some(r) => {
                    let (share, name) = r.split_once(')')?;
                    (share.trim().to_owned(), name.trim())
                }
                None => (String::new(), rest),
            };
            // `file:function [object]`: keep the function (file names are build paths).
            let name = name.split_once(" [").map_or(name, |(f, _)| f);
            let name = name.split_once(':').map_or(name, |(_, f)| f);
            (!name.is_empty()).then(|| (ir, share, name.to_owned()))
        })
        .collect()
}

/// The results in Markdown.
fn render(args: &Args, rows: &[Row], heading: &str, tracked: Option<f64>) -> String {
    let mut s = heading.to_owned();
    let _ = writeln!(
        s,
        "- Settings: release `gw-data-plane --worker-threads 1 --access-log off` under `valgrind \
         --tool=callgrind`, one process for every route; per route and connection count {} \
         warm-up requests, then {} counted (`loadgen`, closed loop), then an idle window of the \
         same length; user-space instructions only.{}",
        args.warmup_requests,
        args.requests,
        tracked.map_or(String::new(), |t| format!(
            " Limiter keys tracked at the end: {t:.0}."
        ))
    );
    let _ = writeln!(
        s,
        "- Net = (counted run - idle window) / requests. Allocations: calls to \
         `mi_malloc_aligned` + `mi_zalloc_aligned`; reallocations: `mi_realloc_aligned`.\n"
    );
    let _ = writeln!(
        s,
        "| route | connections | instructions per request | idle work per request | net instructions per request | net allocations per request | net reallocations per request | counted run, s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | **{:.0}** | {:.2} | {:.2} | {:.1} |",
            r.route.describe(args.keys),
            r.connections,
            r.per_request(|c| c.instructions),
            r.idle.instructions as f64 / r.requests as f64,
            r.net_per_request(|c| c.instructions),
            r.net_per_request(|c| c.allocs),
            r.net_per_request(|c| c.reallocs),
            r.seconds
        );
    }
    let net = |route: Route, c: usize| {
        rows.iter()
            .find(|r| r.route == route && r.connections == c)
            .map(|r| r.net_per_request(|c| c.instructions))
    };
    let mut ratios = String::new();
    for r in rows.iter().filter(|r| r.route != Route::Plain) {
        if let (Some(plain), Some(other)) = (
            net(Route::Plain, r.connections),
            net(r.route, r.connections),
        ) {
            let _ = writeln!(
                ratios,
                "- Net instructions, /plain / /{} with {} connections: {:.3}",
                r.route.name(),
                r.connections,
                plain / other
            );
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(s, "\n{ratios}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_totals_and_allocator_calls() {
        let dump = "events: Ir\nfn=(1) main\n5 10\ncfn=(2) mi_malloc_aligned\ncalls=3 0\n5 30\n\
                    cfn=(3) other\ncalls=7 0\n5 70\nfn=(4) helper\ncfn=(2)\ncalls=2 0\n5 20\n\
                    cfn=(5) mi_realloc_aligned\ncalls=1 0\n5 9\ncfn=(6) mi_zalloc_aligned\n\
                    calls=4 0\n5 8\nfn=(2)\n5 50\ntotals: 1234\n";
        assert_eq!(
            parse_counts(dump),
            Some(Counts {
                instructions: 1234,
                allocs: 9,
                reallocs: 1
            })
        );
        assert_eq!(parse_counts("events: Ir\nfn=(1) main\n"), None);
    }

    #[test]
    fn reads_annotate_lines() {
        let out = "--------\nIr\n--------\n1,000 (100.0%)  PROGRAM TOTALS\n\n\
                   500 (50.00%)  /src/lib.rs:gw::proxy::handle [/bin/gw-data-plane]\n\
                   250 ( 5.00%)  ???:mi_malloc_aligned [/bin/gw-data-plane]\n";
        let got = parse_annotate(out);
        assert_eq!(
            got,
            vec![
                (1000, "100.0%".to_owned(), "PROGRAM TOTALS".to_owned()),
                (500, "50.00%".to_owned(), "gw::proxy::handle".to_owned()),
                (250, "5.00%".to_owned(), "mi_malloc_aligned".to_owned()),
            ]
        );
    }
}
