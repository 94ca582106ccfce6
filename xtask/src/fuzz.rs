//! `cargo xtask fuzz`: every cargo-fuzz target from the committed seeds.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{cargo, root, run};

/// The fuzz targets (`fuzz/fuzz_targets/*.rs`).
pub(crate) const FUZZ_TARGETS: &[&str] = &[
    "secret_parse",
    "allowlist",
    "url_host",
    "redact",
    "env_values",
    "hop",
];

/// The cargo-fuzz release `fuzz` installs into `target/tools`.
pub(crate) const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs each fuzz target for `seconds` from the committed seeds; a crash
/// fails the task and leaves its input in `target/fuzz-artifacts/`.
pub(crate) fn fuzz(seconds: u64) -> Result<()> {
    let tools = root().join("target/tools");
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    let installed = Command::new(&cargo_fuzz)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION));
    if !installed {
        run(
            "fuzz: install cargo-fuzz",
            cargo()
                .args(["install", "--locked", "--quiet", "cargo-fuzz", "--version"])
                .arg(CARGO_FUZZ_VERSION)
                .arg("--root")
                .arg(&tools),
        )?;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!("fuzz: the nightly toolchain is missing (`rustup toolchain install nightly`)");
    }
    let path = std::env::join_paths(std::iter::once(tools.join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    for target in FUZZ_TARGETS {
        let corpus = root().join("target/fuzz-corpus").join(target);
        let artifacts = root().join("target/fuzz-artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        run(
            &format!("fuzz: {target} for {seconds} s"),
            // The rustup proxy, not the stable cargo running this task.
            Command::new("cargo")
                .current_dir(root().join("fuzz"))
                .env_remove("CARGO")
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC")
                .env("PATH", &path)
                .env("CARGO_TARGET_DIR", root().join("target/fuzz"))
                .args(["+nightly", "fuzz", "run", target])
                .arg(&corpus)
                .arg(root().join("fuzz/seeds").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // One input taking this long is a hang (libFuzzer's own
                // default is 20 minutes).
                .arg("-timeout=10")
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=0"),
        )?;
    }
    Ok(())
}
