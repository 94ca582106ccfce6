//! Environment values: never a panic; booleans accept exactly the documented
//! words; a rejected value's error names its variable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_secrets_auth_core::{Env, parse_bool};
use std::time::Duration;

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
    if let Err(e) = env.flag(name, false) {
        assert!(e.to_string().contains(name), "{e}");
    }
    match env.seconds(name, Duration::from_secs(1)) {
        Ok(d) => assert!(d.as_secs_f64().is_finite()),
        Err(e) => assert!(e.to_string().contains(name), "{e}"),
    }
    if let Err(e) = env.u32(name, 3) {
        assert!(e.to_string().contains(name), "{e}");
    }
    if let Ok(Some(list)) = env.list(name) {
        assert!(
            list.iter()
                .all(|item| !item.is_empty() && item.trim() == item)
        );
    }
});
