//! Environment values against a reading written here: never a panic;
//! booleans accept exactly the documented words; durations and whole numbers
//! are accepted exactly when their grammar says so, with the value it says;
//! a rejected value's error names its variable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::{Env, MAX_DURATION, parse_bool};
use std::time::Duration;

/// Whether `text` is a decimal number: an optional sign, digits with at
/// most one `.` (at least one digit), an optional exponent.
fn decimal(text: &str) -> bool {
    let text = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    let dots = mantissa.bytes().filter(|&b| b == b'.').count();
    let mantissa_ok = digits > 0 && dots <= 1 && digits + dots == mantissa.len();
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let word = value.trim().to_ascii_lowercase();
    let expected = match word.as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    };
    assert_eq!(parse_bool(value), expected);

    let vars = [("MLFLOW_SECRETS_FUZZ_VAR", value)];
    let env = Env::new(&vars);
    let name = "MLFLOW_SECRETS_FUZZ_VAR";
    let trimmed = value.trim();
    if let Err(e) = env.flag(name, false) {
        assert!(e.to_string().contains(name), "{e}");
    }

    // Seconds: a decimal number that is not below zero ("-0" is zero).
    let default = Duration::from_secs(7);
    match env.seconds(name, default) {
        Ok(d) if trimmed.is_empty() => assert_eq!(d, default),
        Ok(d) => {
            assert!(decimal(trimmed), "{value:?} accepted as {d:?}");
            assert!(d <= MAX_DURATION, "{value:?}: {d:?}");
            if trimmed.starts_with('-') {
                assert_eq!(
                    d,
                    Duration::ZERO,
                    "{value:?}: only a negative zero is taken"
                );
            }
            // Whole seconds are checked exactly, without floating point.
            if trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let whole = trimmed.trim_start_matches('0').parse::<u64>().unwrap_or(
                    if trimmed.trim_start_matches('0').is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                );
                assert_eq!(
                    d,
                    Duration::from_secs(whole.min(MAX_DURATION.as_secs())),
                    "{value:?}"
                );
            }
        }
        Err(e) => {
            assert!(e.to_string().contains(name), "{e}");
            // Refused: not a number, a number below zero, or one too large
            // for a float (`1e400`).
            let too_large = trimmed.parse::<f64>().is_ok_and(f64::is_infinite);
            assert!(
                !decimal(trimmed) || trimmed.starts_with('-') || too_large,
                "{value:?} refused: {e}"
            );
        }
    }

    // Whole numbers: an optional `+`, digits, at most u32::MAX.
    match env.u32(name, 3) {
        Ok(n) if trimmed.is_empty() => assert_eq!(n, 3),
        Ok(n) => {
            let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                "{value:?}"
            );
            assert_eq!(
                u64::from(n),
                digits.trim_start_matches('0').parse::<u64>().unwrap_or(0)
            );
        }
        Err(e) => {
            assert!(e.to_string().contains(name), "{e}");
            let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
            let fits = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.trim_start_matches('0').len() <= 10
                && digits.trim_start_matches('0').parse::<u64>().unwrap_or(0)
                    <= u64::from(u32::MAX);
            assert!(!fits, "{value:?} refused: {e}");
        }
    }
    if let Ok(Some(list)) = env.list(name) {
        assert!(
            list.iter()
                .all(|item| !item.is_empty() && item.trim() == item)
        );
    }
});
