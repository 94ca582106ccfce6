//! `hostile-server`: the [`HostileKit`] for tests in other languages.
//!
//! Prints one JSON line with every listener's URL and the CA file, then reads
//! one JSON command per line on standard input and answers each with one JSON
//! line (see [`HostileKit::command`]). Stops at the end of its input.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};

use secrets_testkit::hostile::HostileKit;

fn main() {
    let kit = HostileKit::start();
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, value: serde_json::Value| {
        writeln!(out, "{value}").and_then(|()| out.flush())
    };
    if say(&mut out, kit.describe()).is_err() {
        return;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let answer = match serde_json::from_str(&line) {
            Ok(command) => kit.command(&command),
            Err(_) => serde_json::json!({"error": "not JSON"}),
        };
        if say(&mut out, answer).is_err() {
            return;
        }
    }
}
