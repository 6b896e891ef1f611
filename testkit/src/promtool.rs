//! `promtool check metrics` (from Prometheus itself) on a `/metrics` page: the text format
//! parses, and the names, types, units and help follow Prometheus's conventions. A missing
//! `promtool` fails the test with what to install (Debian's `prometheus` package).

use std::io::Write;
use std::process::{Command, Stdio};

const INSTALL: &str = "install the Debian package prometheus, which has promtool \
                       (apt-get install prometheus)";

/// Panics with promtool's findings (and the page) unless it finds nothing to say.
pub fn check_metrics(page: &str) {
    if let Err(e) = check_metrics_with("promtool", page) {
        panic!("{e}");
    }
}

/// [`check_metrics`] with the program named `promtool`, returning what is wrong.
fn check_metrics_with(promtool: &str, page: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {promtool} ({e}): {INSTALL}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(page.as_bytes())
            .map_err(|e| format!("writing the page to {promtool}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {promtool}: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() && said.trim().is_empty() {
        true => Ok(()),
        false => Err(format!(
            "promtool check metrics ({}): {said}\n--- page ---\n{page}",
            out.status
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_promtool_names_the_debian_package() {
        let e = check_metrics_with("promtool-not-installed-here", "").unwrap_err();
        assert!(e.contains("Debian package prometheus"), "{e}");
        assert!(e.contains("apt-get install prometheus"), "{e}");
    }

    #[test]
    fn promtool_finds_what_is_wrong_and_passes_what_is_right() {
        check_metrics_with(
            "promtool",
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n",
        )
        .unwrap();
        // A counter without `_total` breaks the naming convention; a bad line breaks parsing.
        for bad in [
            "# HELP x Things.\n# TYPE x counter\nx 1\n",
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=b} 1\n",
        ] {
            let e = check_metrics_with("promtool", bad).unwrap_err();
            assert!(e.contains("promtool check metrics"), "{e}");
        }
    }
}
