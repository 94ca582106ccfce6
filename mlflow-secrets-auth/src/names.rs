//! The variables of this project's own families (`MLFLOW_SECRETS_…`,
//! `MLFLOW_VAULT_…`, …) and the near misses among the variables that are set:
//! `MLFLOW_SECRETS_AUTH_ENABLED` is read by nothing, and a person who set it
//! meant `MLFLOW_SECRETS_AUTH_ENABLE`.

use crate::config::{Warning, WarningKind};

/// Every variable of [`FAMILIES`] this project reads (docs/configuration.md
/// names the same; a test holds them together).
pub const VARIABLES: &[&str] = &[
    "MLFLOW_SECRETS_AGENT",
    "MLFLOW_SECRETS_AGENT_TOKEN_FILE",
    "MLFLOW_SECRETS_AGENT_UID",
    "MLFLOW_SECRETS_ALLOWED_HOSTS",
    "MLFLOW_SECRETS_AUTH_ENABLE",
    "MLFLOW_SECRETS_AUTH_ENABLE_VAULT",
    "MLFLOW_SECRETS_AUTH_ENABLE_AWS_SECRETS_MANAGER",
    "MLFLOW_SECRETS_AUTH_ENABLE_AZURE_KEY_VAULT",
    "MLFLOW_SECRETS_AUTH_ENABLE_FILE",
    "MLFLOW_SECRETS_BASE_DELAY",
    "MLFLOW_SECRETS_BREAKER_OPEN_SEC",
    "MLFLOW_SECRETS_BREAKER_THRESHOLD",
    "MLFLOW_SECRETS_CACHE_DISABLED",
    "MLFLOW_SECRETS_FETCH_DEADLINE_SEC",
    "MLFLOW_SECRETS_FILE_PATH",
    "MLFLOW_SECRETS_LOG_LEVEL",
    "MLFLOW_SECRETS_MAX_DELAY",
    "MLFLOW_SECRETS_MAX_RETRIES",
    "MLFLOW_SECRETS_OAUTH_AUDIENCE",
    "MLFLOW_SECRETS_OAUTH_CLIENT_AUTH",
    "MLFLOW_SECRETS_OAUTH_CLIENT_ID",
    "MLFLOW_SECRETS_OAUTH_ISSUER",
    "MLFLOW_SECRETS_OAUTH_RESOURCE",
    "MLFLOW_SECRETS_OAUTH_SCOPE",
    "MLFLOW_SECRETS_OAUTH_TOKEN_URL",
    "MLFLOW_SECRETS_REFETCH_INTERVAL_SEC",
    "MLFLOW_SECRETS_REQUEST_TIMEOUT_SEC",
    "MLFLOW_SECRETS_REQUIRE_TLS",
    "MLFLOW_SECRETS_STALE_IF_ERROR_SEC",
    "MLFLOW_SECRETS_TTL_MAX_SEC",
    "MLFLOW_SECRETS_TTL_MIN_SEC",
    "MLFLOW_VAULT_APPROLE_MOUNT",
    "MLFLOW_VAULT_AUTH_METHOD",
    "MLFLOW_VAULT_AUTH_MOUNT",
    "MLFLOW_VAULT_AUTH_ROLE",
    "MLFLOW_VAULT_JWT_FILE",
    "MLFLOW_VAULT_SECRET_PATH",
    "MLFLOW_VAULT_AUTH_MODE",
    "MLFLOW_VAULT_TTL_SEC",
    "MLFLOW_AWS_SECRET_ID",
    "MLFLOW_AWS_SECRET_NAME",
    "MLFLOW_AWS_SECRET_VERSION",
    "MLFLOW_AWS_AUTH_MODE",
    "MLFLOW_AWS_TTL_SEC",
    "MLFLOW_AZURE_KEY_VAULT_URL",
    "MLFLOW_AZURE_SECRET_NAME",
    "MLFLOW_AZURE_SECRET_VERSION",
    "MLFLOW_AZURE_AUTH_MODE",
    "MLFLOW_AZURE_TTL_SEC",
    "MLFLOW_FILE_AUTH_MODE",
    "MLFLOW_FILE_TTL_SEC",
];

/// The name families that belong to this project alone: a name in one of
/// them that is not in [`VARIABLES`] is a mistake, not another tool's.
pub const FAMILIES: &[&str] = &[
    "MLFLOW_SECRETS_",
    "MLFLOW_VAULT_",
    "MLFLOW_AWS_",
    "MLFLOW_AZURE_",
    "MLFLOW_FILE_",
];

/// The largest edit distance still taken for a slip of the hand.
const MAX_DISTANCE: usize = 3;

/// The longest set name looked at (ours are under 50 characters).
const MAX_NAME: usize = 100;

/// A warning for each set name of our families that nothing reads, with the
/// variable it most likely meant when one is close. Names only, never values.
pub(crate) fn near_misses(set: &[String]) -> Vec<Warning> {
    let mut unknown: Vec<&str> = set
        .iter()
        .map(String::as_str)
        .filter(|name| FAMILIES.iter().any(|family| name.starts_with(family)))
        // Only names spelled like variables, of a variable's length: a name
        // is printed, and must not carry a line break or a terminal escape
        // into the output, nor make the comparison long.
        .filter(|name| {
            name.len() <= MAX_NAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .filter(|name| !VARIABLES.contains(name))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| {
            let closest = VARIABLES
                .iter()
                // Names whose lengths differ by more cannot be that close.
                .filter(|known| known.len().abs_diff(name.len()) <= MAX_DISTANCE)
                .map(|known| (distance(name, known), *known))
                .min()
                .filter(|(d, _)| *d <= MAX_DISTANCE);
            Warning::new(
                WarningKind::Unread,
                match closest {
                    Some((_, known)) => {
                        format!("{name} is set but read by nothing: did you mean {known}?")
                    }
                    None => format!(
                        "{name} is set but read by nothing (docs/configuration.md lists the variables)"
                    ),
                },
            )
        })
        .collect()
}

/// The Levenshtein distance of two ASCII-ish names (bytes).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(names: &[&str]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        near_misses(&names)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_slip_of_the_hand_gets_the_name_it_meant() {
        assert_eq!(
            said(&["MLFLOW_SECRETS_AUTH_ENABLED", "MLFLOW_VAULT_SECRETS_PATH"]),
            [
                "MLFLOW_SECRETS_AUTH_ENABLED is set but read by nothing: did you mean MLFLOW_SECRETS_AUTH_ENABLE?",
                "MLFLOW_VAULT_SECRETS_PATH is set but read by nothing: did you mean MLFLOW_VAULT_SECRET_PATH?",
            ]
        );
        assert_eq!(
            said(&["MLFLOW_SECRETS_ALLOWED_HOST"]),
            [
                "MLFLOW_SECRETS_ALLOWED_HOST is set but read by nothing: did you mean MLFLOW_SECRETS_ALLOWED_HOSTS?"
            ]
        );
    }

    #[test]
    fn known_names_and_other_tools_names_are_left_alone() {
        // Ours, MLflow's own, the SDKs' and the Vault CLI's.
        assert!(
            said(&[
                "MLFLOW_SECRETS_AUTH_ENABLE",
                "MLFLOW_TRACKING_URI",
                "MLFLOW_TRACKING_INSECURE_TLS",
                "VAULT_FORMAT",
                "AWS_PROFILE",
            ])
            .is_empty()
        );
    }

    #[test]
    fn names_not_spelled_like_variables_are_not_printed() {
        assert!(said(&["MLFLOW_SECRETS_X\nwarning: all is fine\u{1b}[31m"]).is_empty());
        assert!(said(&["MLFLOW_SECRETS_auth_enable"]).is_empty());
        assert!(said(&[&format!("MLFLOW_SECRETS_{}", "A".repeat(120_000))]).is_empty());
    }

    #[test]
    fn a_far_name_of_our_family_is_named_without_a_guess() {
        assert_eq!(
            said(&["MLFLOW_SECRETS_SOMETHING_ELSE_ENTIRELY"]),
            [
                "MLFLOW_SECRETS_SOMETHING_ELSE_ENTIRELY is set but read by nothing (docs/configuration.md lists the variables)"
            ]
        );
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("ENABLE", "ENABLED"), 1);
        assert_eq!(distance("SECRETS_PATH", "SECRET_PATH"), 1);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_list_is_what_the_configuration_docs_name_in_our_families() {
        let docs = include_str!("../../docs/configuration.md");
        let mut documented: Vec<String> = Vec::new();
        for quoted in docs.split('`').skip(1).step_by(2) {
            // `MLFLOW_<P>_AUTH_MODE` and `MLFLOW_SECRETS_AUTH_ENABLE_<NAME>`
            // stand for one name per provider.
            let names: Vec<String> = if quoted.contains("<P>") {
                ["VAULT", "AWS", "AZURE", "FILE"]
                    .iter()
                    .map(|p| quoted.replace("<P>", p))
                    .collect()
            } else if quoted.contains("<NAME>") {
                ["VAULT", "AWS_SECRETS_MANAGER", "AZURE_KEY_VAULT", "FILE"]
                    .iter()
                    .map(|name| quoted.replace("<NAME>", name))
                    .collect()
            } else {
                vec![quoted.to_owned()]
            };
            documented.extend(names.into_iter().filter(|name| {
                FAMILIES.iter().any(|f| name.starts_with(f))
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            }));
        }
        documented.sort_unstable();
        documented.dedup();
        let mut listed: Vec<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
        listed.sort_unstable();
        assert_eq!(listed, documented);
    }
}
