//! `gwctl completions SHELL`: shell completion scripts, generated from the clap definition so
//! they never drift from the real flags. Needs no control plane.

use std::io::Write;

use clap::CommandFactory;

use crate::args::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn run(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    // clap_complete panics when a write fails (`gwctl completions zsh | head -1` closes the
    // pipe early), so the script is made in memory and written here, where a closed pipe is
    // an error like any other output's.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
            clap_complete::Shell::Elvish,
        ] {
            let mut out = Vec::new();
            run(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("gwctl"), "{shell}");
            assert!(script.contains("policy"), "{shell}");
            assert!(script.contains("control-plane"), "{shell}");
        }
    }
}
