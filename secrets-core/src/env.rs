//! Typed reading of configuration from the environment, in one place.
//!
//! Every reader takes the variable name (or a list of aliases, first set wins) and
//! returns a [`SecretError`] of kind `config` that names the variable and says
//! what is wrong. Values of variables read with [`Env::secret`] never appear in
//! an error. Reading goes through [`EnvSource`] so tests and embedders can supply
//! a map instead of the process environment.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Result, SecretError};

/// Where variables come from: the process environment or a map.
pub trait EnvSource: Send + Sync {
    /// The raw value of `name`, if set.
    fn var_os(&self, name: &str) -> Option<OsString>;

    /// The names of every variable set, when the source can list them
    /// (used to point out a near-miss name such as `MLFLOW_SECRETS_AUTH_ENABLED`).
    fn names(&self) -> Option<Vec<String>> {
        None
    }
}

/// The environment of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn names(&self) -> Option<Vec<String>> {
        Some(
            std::env::vars_os()
                .filter_map(|(name, _)| name.into_string().ok())
                .collect(),
        )
    }
}

impl EnvSource for HashMap<String, String> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.get(name).map(OsString::from)
    }

    fn names(&self) -> Option<Vec<String>> {
        Some(self.keys().cloned().collect())
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.get(name).map(OsString::from)
    }

    fn names(&self) -> Option<Vec<String>> {
        Some(self.keys().cloned().collect())
    }
}

impl EnvSource for [(&str, &str)] {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| OsString::from(v))
    }

    fn names(&self) -> Option<Vec<String>> {
        Some(self.iter().map(|(k, _)| (*k).to_owned()).collect())
    }
}

impl<T: EnvSource + ?Sized> EnvSource for &T {
    fn var_os(&self, name: &str) -> Option<OsString> {
        (**self).var_os(name)
    }

    fn names(&self) -> Option<Vec<String>> {
        (**self).names()
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.as_slice().var_os(name)
    }

    fn names(&self) -> Option<Vec<String>> {
        self.as_slice().names()
    }
}

/// Parses a truthy (`1,true,yes,on`) or falsy (`0,false,no,off,""`) word, any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Typed access to an [`EnvSource`].
///
/// ```
/// use std::time::Duration;
/// use mlflow_secrets_auth_core::Env;
/// let vars = [("MLFLOW_SECRETS_MAX_RETRIES", "5"), ("MLFLOW_SECRETS_CACHE_DISABLED", "YES")];
/// let env = Env::new(&vars);
/// assert_eq!(env.u32("MLFLOW_SECRETS_MAX_RETRIES", 3)?, 5);
/// assert!(env.flag("MLFLOW_SECRETS_CACHE_DISABLED", false)?);
/// assert_eq!(env.seconds("MLFLOW_SECRETS_BASE_DELAY", Duration::from_secs(1))?, Duration::from_secs(1));
/// # Ok::<(), mlflow_secrets_auth_core::SecretError>(())
/// ```
#[derive(Clone, Copy)]
pub struct Env<'a> {
    source: &'a dyn EnvSource,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env { .. }")
    }
}

impl Env<'static> {
    /// Reads the process environment.
    pub fn process() -> Self {
        Self {
            source: &ProcessEnv,
        }
    }
}

impl<'a> Env<'a> {
    /// Reads `source`.
    pub fn new(source: &'a dyn EnvSource) -> Self {
        Self { source }
    }

    /// The names of every variable set, when the source can list them.
    pub fn names(&self) -> Option<Vec<String>> {
        self.source.names()
    }

    /// The raw value of `name`; a value that is not UTF-8 is an error naming it.
    fn raw(&self, name: &str) -> Result<Option<String>> {
        self.source
            .var_os(name)
            .map(|raw| {
                raw.into_string()
                    .map_err(|_| SecretError::config(name, "is not valid UTF-8"))
            })
            .transpose()
    }

    /// The first of `names` that is set to a non-blank value, with the value
    /// trimmed. A value that is not UTF-8 is an error naming the variable.
    pub fn lookup<'n>(&self, names: &[&'n str]) -> Result<Option<(&'n str, String)>> {
        for &name in names {
            if let Some(value) = self.raw(name)? {
                let trimmed = value.trim();
                if !trimmed.is_empty() {
                    return Ok(Some((name, trimmed.to_owned())));
                }
            }
        }
        Ok(None)
    }

    /// The value of `name` trimmed, blank included: `Some("")` for a variable
    /// that is set but empty (where that means something different from unset).
    pub fn present(&self, name: &str) -> Result<Option<String>> {
        Ok(self.raw(name)?.map(|value| value.trim().to_owned()))
    }

    /// A text value from the first set alias.
    pub fn string(&self, names: &[&str]) -> Result<Option<String>> {
        Ok(self.lookup(names)?.map(|(_, v)| v))
    }

    /// A secret value from the first set alias; errors never include the
    /// value, and [`redact`](crate::redact) hides it from then on
    /// ([`hide_everywhere`](crate::hide_everywhere)).
    pub fn secret(&self, names: &[&str]) -> Result<Option<SecretString>> {
        for &name in names {
            if let Some(value) = self.raw(name)? {
                let value = Zeroizing::new(value);
                let trimmed = value.trim();
                if !trimmed.is_empty() {
                    crate::redact::hide_everywhere(trimmed);
                    return Ok(Some(trimmed.into()));
                }
            }
        }
        Ok(None)
    }

    /// A value parsed with `FromStr`; `what` names the expected kind of value.
    pub fn parse<T>(&self, name: &str, what: &str) -> Result<Option<T>>
    where
        T: FromStr,
    {
        let Some((name, value)) = self.lookup(&[name])? else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|_| SecretError::config(name, format!("{} is not {what}", shown(&value))))
    }

    /// A boolean (see [`parse_bool`]); an empty value is `false`, unset is `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        let Some(value) = self.raw(name)? else {
            return Ok(default);
        };
        parse_bool(&value).ok_or_else(|| {
            SecretError::config(
                name,
                format!(
                    "{} is not a boolean (use 1/true/yes/on or 0/false/no/off)",
                    shown(&value)
                ),
            )
        })
    }

    /// A non-negative whole number.
    pub fn u32(&self, name: &str, default: u32) -> Result<u32> {
        Ok(self
            .parse(name, "a whole number (0 or more)")?
            .unwrap_or(default))
    }

    /// A duration in seconds, fractions allowed (`1.5`), not negative, capped
    /// at [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn seconds(&self, name: &str, default: Duration) -> Result<Duration> {
        let Some((name, value)) = self.lookup(&[name])? else {
            return Ok(default);
        };
        value
            .parse::<f64>()
            .ok()
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .and_then(|secs| {
                Duration::try_from_secs_f64(secs.min(crate::MAX_DURATION.as_secs_f64())).ok()
            })
            .ok_or_else(|| {
                SecretError::config(
                    name,
                    format!("{} is not a number of seconds (0 or more)", shown(&value)),
                )
            })
    }

    /// A comma-separated list; blank items are dropped. `None` when unset or blank.
    pub fn list(&self, name: &str) -> Result<Option<Vec<String>>> {
        Ok(self.lookup(&[name])?.map(|(_, value)| {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }))
    }
}

/// Shows a bad value of a variable that holds no secret (a mode, a flag, a
/// number) in an error: quoted and escaped when it is short enough to be a
/// slip of the keyboard (16 characters); a longer one is more likely
/// something pasted into the wrong variable — perhaps a token — and only
/// its length is shown.
fn shown(value: &str) -> String {
    const LIMIT: usize = 16;
    let count = value.chars().count();
    if count <= LIMIT {
        format!("{value:?}")
    } else {
        format!("a value of {count} characters (not shown)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_long_value_in_a_variable_of_words_is_not_shown() {
        struct Vars;
        impl EnvSource for Vars {
            fn var_os(&self, name: &str) -> Option<OsString> {
                match name {
                    "A" => Some("bearr".into()),
                    "B" => Some("hvs.CAESIpastedHereByMistake".into()),
                    _ => None,
                }
            }
        }
        let env = Env::new(&Vars);
        let typo = env.flag("A", false).unwrap_err().to_string();
        assert!(typo.contains(r#""bearr" is not a boolean"#), "{typo}");
        let pasted = env.u32("B", 0).unwrap_err().to_string();
        assert!(!pasted.contains("CAESI"), "{pasted}");
        assert!(
            pasted.contains("a value of 28 characters (not shown) is not a whole number"),
            "{pasted}"
        );
    }

    #[test]
    fn bool_words() {
        for t in ["1", "true", "YES", "On", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "No", "OFF", ""] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn bad_flag_names_the_variable() {
        let env = [("MLFLOW_SECRETS_REQUIRE_TLS", "sure")];
        let err = Env::new(&env)
            .flag("MLFLOW_SECRETS_REQUIRE_TLS", false)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("MLFLOW_SECRETS_REQUIRE_TLS"),
            "{err}"
        );
        assert!(err.to_string().contains("not a boolean"), "{err}");
    }

    #[test]
    fn empty_flag_is_false_and_unset_is_default() {
        let env = [("A", "")];
        assert!(!Env::new(&env).flag("A", true).unwrap());
        assert!(Env::new(&env).flag("B", true).unwrap());
    }

    #[test]
    fn numbers_and_seconds() {
        let env = [
            ("N", " 7 "),
            ("S", "1.5"),
            ("NEG", "-1"),
            ("BAD", "ten"),
            ("INF", "inf"),
        ];
        let env = Env::new(&env);
        assert_eq!(env.u32("N", 3).unwrap(), 7);
        assert_eq!(env.u32("MISSING", 3).unwrap(), 3);
        assert_eq!(
            env.seconds("S", Duration::ZERO).unwrap(),
            Duration::from_millis(1500)
        );
        let huge = [("HUGE", "1e300")];
        assert_eq!(
            Env::new(&huge).seconds("HUGE", Duration::ZERO).unwrap(),
            crate::MAX_DURATION
        );
        for bad in ["NEG", "BAD", "INF"] {
            let err = env.seconds(bad, Duration::ZERO).unwrap_err();
            assert!(err.to_string().starts_with(bad), "{err}");
        }
        assert!(
            env.u32("NEG", 0)
                .unwrap_err()
                .to_string()
                .contains("\"-1\" is not a whole number")
        );
    }

    #[test]
    fn aliases_first_set_wins_and_blank_is_unset() {
        let env = [
            ("MLFLOW_AWS_SECRET_NAME", "  "),
            ("MLFLOW_AWS_SECRET_ID", "prod/mlflow"),
        ];
        let env = Env::new(&env);
        assert_eq!(
            env.lookup(&["MLFLOW_AWS_SECRET_NAME", "MLFLOW_AWS_SECRET_ID"])
                .unwrap(),
            Some(("MLFLOW_AWS_SECRET_ID", "prod/mlflow".to_owned()))
        );
    }

    #[test]
    fn lists_drop_blank_items() {
        let env = [("L", " vault, ,file ,"), ("E", " ")];
        let env = Env::new(&env);
        assert_eq!(
            env.list("L").unwrap(),
            Some(vec!["vault".into(), "file".into()])
        );
        assert_eq!(env.list("E").unwrap(), None);
    }

    #[test]
    fn secret_errors_never_show_the_value() {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            struct Bad;
            impl EnvSource for Bad {
                fn var_os(&self, _: &str) -> Option<OsString> {
                    Some(OsString::from_vec(b"sekrit\xff".to_vec()))
                }
            }
            let err = Env::new(&Bad).secret(&["VAULT_TOKEN"]).unwrap_err();
            assert_eq!(err.to_string(), "VAULT_TOKEN: is not valid UTF-8 (config)");
        }
    }

    #[test]
    fn long_bad_values_are_cut() {
        let long = "x".repeat(500);
        let env = [("N", long.as_str())];
        let err = Env::new(&env).u32("N", 0).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
