//! Helpers for the end-to-end tests in `tests/tests/*.rs`, which run the
//! `voxtok` binary built in the same target directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The workspace root (where `Cargo.toml` of the workspace lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tests/fixtures/<rel>` in the workspace.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(rel)
}

/// Path of the `voxtok` binary next to the running test executable
/// (`target/<profile>/voxtok`). `cargo test` does not build another
/// package's binary: build it first with `cargo build -p voxtok`, as
/// `scripts/test.sh` does.
pub fn voxtok_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(format!("voxtok{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build -p voxtok` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A `Command` for the `voxtok` binary, run from the workspace root.
pub fn voxtok() -> Command {
    let mut c = Command::new(voxtok_bin());
    c.current_dir(workspace_root());
    c
}

/// Runs `voxtok ARGS` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = voxtok().args(args).output().expect("run voxtok");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends SIGINT (Ctrl-C) to a running `voxtok` child, as a terminal would.
pub fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT {} failed", child.id());
}

/// `voxtok transcribe` flags that switch every heuristic off (plain greedy,
/// forced English prompt, 24 new tokens): the settings of the transformers
/// reference ids in tests/fixtures/whisper.
pub const WHISPER_PLAIN: &[&str] = &[
    "--language",
    "en",
    "--temperature",
    "0",
    "--without-timestamps",
    "--no-speech-threshold",
    "none",
    "--suppress-tokens",
    "none",
    "--no-suppress-blank",
    "--max-new-tokens",
    "24",
];
