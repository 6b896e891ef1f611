//! Child processes for the benchmark drivers: start a binary pinned to a core, find free
//! loopback ports, poll until something is up, and stop everything on drop.
//!
//! Everything here is blocking std code: the drivers spend their time waiting for children,
//! and a plain thread keeps the driver's own CPU use out of the measured cores' way.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How often [`wait_for`] polls.
const POLL: Duration = Duration::from_millis(50);
/// How long a stopped child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `program args…` under `taskset -c <cpus>` (unpinned if `cpus` is `None`), with
    /// stdout and stderr appended to `log` (the gw binaries log to stdout; a pipe nobody reads
    /// would fill and stall them).
    pub fn start(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        Self::spawn(name, cpus, program, args, log, false)
    }

    /// Like [`Proc::start`], but with stdout piped for the caller to read ([`Proc::stdout`]).
    pub fn start_piped(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        Self::spawn(name, cpus, program, args, log, true)
    }

    fn spawn(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[&str],
        log: &Path,
        piped: bool,
    ) -> anyhow::Result<Proc> {
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program);
                c
            }
            None => Command::new(program),
        };
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let stdout = if piped {
            Stdio::piped()
        } else {
            Stdio::from(log_file.try_clone()?)
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id (taskset execs the program, so this is the program's own pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes the child's stdout (once).
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Fails if the child has already exited (a crash or a bad flag at start-up).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM first so nginx and HAProxy take their workers down with them.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `listening <addr>` lines from a child's stdout until `n` addresses are known.
pub fn read_listen_lines(out: ChildStdout, n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let mut lines = BufReader::new(out).lines();
    let mut addrs = Vec::new();
    while addrs.len() < n {
        let line = lines.next().context("child closed stdout early")??;
        if let Some(addr) = line.strip_prefix("listening ") {
            addrs.push(addr.trim().parse()?);
        }
    }
    Ok(addrs)
}

/// A loopback port that was free a moment ago, for programs (nginx, HAProxy, the gw binaries)
/// that must be told a port rather than handed a listener. The tiny window between this and
/// the program binding is acceptable for a benchmark; a clash shows up as a start-up error.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` until it returns `Some`, or fails after `limit` saying what was awaited.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// A one-shot HTTP/1.1 GET on a fresh connection: status and body, or `None` on any error.
/// Enough for /readyz, /metrics and a probe request; not used for load.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of an unlabelled-or-labelled Prometheus sample line starting with `series`.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Where the release binaries are: `$CARGO_TARGET_DIR/release` or `target/release`, unless
/// given.
pub fn release_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("release")
    })
}

/// Runs a command to completion and returns its stdout, failing with its stderr.
pub fn run_output(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}\n{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let body =
            "# HELP x y\ngw_rate_limit_tracked_keys{policy=\"p\"} 100000\ngw_config_version 7\n";
        assert_eq!(
            metric(body, "gw_rate_limit_tracked_keys{policy=\"p\"}"),
            Some(100000.0)
        );
        assert_eq!(metric(body, "gw_config_version"), Some(7.0));
        assert_eq!(metric(body, "gw_missing"), None);
    }
}
