//! `cargo xtask ci`: every check CI runs, in order.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::{
    Beside, cargo, fuzz, install_into, install_wheel, print_times, root, run, sdist, soak,
    test_env, timed, venv, wheel,
};

/// Provider features of the facade; each must build alone.
pub(crate) const FACADE_FEATURES: &[&str] =
    &["vault", "aws", "azure", "agent", "middleware", "oauth"];

/// `cargo xtask test [ARGS]`: the workspace's tests as a developer runs
/// them (a missing server skips its tests), and then the tests that skipped,
/// from the list `secrets_testkit::skipped_log` keeps.
pub(crate) fn test(args: &[String]) -> Result<()> {
    let log = root().join("target/skipped-tests.txt");
    let _ = std::fs::remove_file(&log);
    let result = run(
        "tests",
        cargo()
            .args(["test", "--workspace", "--all-features"])
            .args(args)
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    );
    let skipped = std::fs::read_to_string(&log).unwrap_or_default();
    let skipped: Vec<&str> = skipped.lines().collect();
    if skipped.is_empty() {
        println!("no test skipped");
    } else {
        println!(
            "{} test(s) SKIPPED for want of a server (`cargo xtask test-env` installs them):",
            skipped.len()
        );
        for line in skipped {
            println!("  {line}");
        }
    }
    result
}

pub(crate) fn ci() -> Result<()> {
    let started = Instant::now();
    let result = steps();
    print_times(started);
    result
}

fn steps() -> Result<()> {
    // It would make the golden tests rewrite their files and pass.
    anyhow::ensure!(
        std::env::var_os("UPDATE_GOLDEN").is_none(),
        "UPDATE_GOLDEN is set: unset it; CI compares the golden transcripts, it never rewrites them"
    );
    timed("test-env", test_env)?;
    run("format", cargo().args(["fmt", "--all", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let fuzz_manifest = root().join("fuzz/Cargo.toml");
    run(
        "format of the fuzz targets",
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(&fuzz_manifest),
    )?;
    run(
        "clippy on the fuzz targets",
        cargo()
            .args(["clippy", "--locked", "--all-targets", "--manifest-path"])
            .arg(&fuzz_manifest)
            .args(["--", "-D", "warnings"]),
    )?;
    let tests = || {
        let mut cargo = cargo();
        cargo
            .args(["test", "--locked", "--workspace", "--all-features"])
            // Backend tests must not skip for want of a server, and the AWS SDK
            // must never look for instance metadata off this machine.
            .env("SECRETS_REQUIRE_SERVERS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cargo
    };
    run("tests: build", tests().arg("--no-run"))?;
    // The wheel users install (release, glibc 2.17, checked by auditwheel)
    // builds while the tests mostly wait on their servers. Its tools are
    // installed first, so nothing installs into the venv the tests use.
    install_into(
        &venv(),
        &root().join("xtask/wheel-requirements.txt"),
        &root().join("xtask/test-env-constraints.txt"),
    )?;
    let release_wheel =
        Beside::start("release wheel (manylinux2014)", "release-wheel.log", || {
            wheel(true).map(drop)
        })?;
    let tested = run("tests", &mut tests());
    let built = release_wheel.join();
    tested.and(built)?;
    let debug_wheel = wheel(false)?;
    install_wheel(&debug_wheel)?;
    // The hostile servers the Python tests face are the Rust tests' own.
    run(
        "hostile-server for the Python tests",
        cargo().args(["build", "-p", "secrets-testkit", "--bin", "hostile-server"]),
    )?;
    // The fuzz targets run while the Python tests and the soak mostly wait
    // on MLflow, moto and their clients.
    let fuzzing = Beside::start("fuzz targets, 20 s each", "fuzz.log", || fuzz(20))?;
    let python = run(
        "Python plugin tests (pytest, real MLflow and moto)",
        Command::new(venv().join("bin/python"))
            .current_dir(root())
            .env("HOSTILE_SERVER", root().join("target/debug/hostile-server"))
            .env("MSA_WHEEL", &debug_wheel)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root().join("mlflow-secrets-auth-py/tests")),
    )
    .and_then(|()| {
        timed("soak: 30 s under faults", || {
            soak(30, false, &venv().join("bin/python"))
        })
    });
    let fuzzed = fuzzing.join();
    python.and(fuzzed)?;
    sdist()?;
    run(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    for feature in FACADE_FEATURES {
        run(
            &format!("facade with `{feature}` alone"),
            cargo().args([
                "check",
                "-p",
                "mlflow-secrets-auth",
                "--no-default-features",
                "--features",
                feature,
            ]),
        )?;
    }
    run(
        "facade with no provider feature",
        cargo().args([
            "check",
            "-p",
            "mlflow-secrets-auth",
            "--no-default-features",
        ]),
    )?;
    // Every publishable crate packages and builds from its package alone,
    // in dependency order (unpublished workspace crates excluded).
    forget_packaged_sources()?;
    run(
        "cargo package of every published crate",
        cargo().args([
            "package",
            "--locked",
            "--workspace",
            "--exclude",
            "secrets-testkit",
            "--exclude",
            "xtask",
            "--exclude",
            "xtask-harness",
            "--exclude",
            "mlflow-secrets-auth-py",
        ]),
    )?;
    eprintln!("\nci: all steps passed");
    Ok(())
}

/// `cargo package` verifies each crate as a registry crate: it unpacks the
/// packaged crates of a local registry (`target/package/tmp-registry`) under
/// `$CARGO_HOME/registry/src/-<hash of that path>/` and builds them in
/// `target/`. Registry crates are taken as immutable, so sources unpacked and
/// builds made by an earlier run of the same name and version are reused even
/// when our sources changed since. Remove both for our crates so every run
/// verifies the sources it packages.
fn forget_packaged_sources() -> Result<()> {
    let debug = root().join("target/debug");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    // Local registries have no host, so their unpack directories start with
    // `-`; crates.io's (`index.crates.io-…`) are left alone.
    let mut dirs = vec![debug.join(".fingerprint"), debug.join("deps")];
    if let Some(Ok(entries)) = cargo_home.map(|home| std::fs::read_dir(home.join("registry/src"))) {
        dirs.extend(
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().starts_with('-'))
                .map(|entry| entry.path()),
        );
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("mlflow-secrets-auth") || name.contains("mlflow_secrets_auth") {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}
