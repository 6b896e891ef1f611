//! `gwctl completions SHELL` into a pipe its reader closed (`gwctl completions zsh | head -1`):
//! no panic, no message, and the script is whole when read to the end.

use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_completions_quietly() {
    for shell in ["zsh", "bash", "fish"] {
        // A pipe whose reading end is closed before gwctl writes: every write is EPIPE,
        // which is what `| head -1` does once it has its line.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_gwctl"))
            .args(["completions", shell])
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{shell}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{shell}: a panic's status");
    }
    let whole = Command::new(env!("CARGO_BIN_EXE_gwctl"))
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    assert!(whole.status.success());
    let script = String::from_utf8(whole.stdout).unwrap();
    assert!(
        script.starts_with("#compdef gwctl"),
        "{}",
        &script[..80.min(script.len())]
    );
}
