//! The tenants of a shared agent: a TOML file mapping Unix users (by uid,
//! name or group) to the secret each is served, read at start and again on
//! SIGHUP. Users and groups are read from `/etc/passwd` and `/etc/group`;
//! accounts only a directory service knows are named by uid.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mlflow_secrets_auth::{Env, EnvSource, ProviderKind, SecretsAuth};
use serde::Deserialize;

use crate::error::bail;

/// The largest tenants file read, in bytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The longest tenant name (it is a metric label).
const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    tenant: Vec<toml::Spanned<TableSchema>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSchema {
    name: Option<String>,
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    secret: String,
    auth_mode: Option<String>,
    ttl_sec: Option<f64>,
}

/// What one peer uid is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Tenant {
    /// The tenant's name (from the file, or `tenant-N`): a metric label.
    pub(crate) name: Arc<str>,
    /// The secret reference, `{user}` and `{uid}` substituted.
    pub(crate) secret: String,
    /// The auth mode, when the tenant sets one.
    pub(crate) auth_mode: Option<&'static str>,
    /// The TTL in milliseconds, when the tenant sets one.
    pub(crate) ttl_ms: Option<u64>,
}

/// The uids a tenants file maps, each to what it is served.
#[derive(Debug, Default)]
pub(crate) struct TenantMap {
    /// The file it was read from.
    pub(crate) file: PathBuf,
    by_uid: HashMap<u32, Tenant>,
    /// The tenants' names, in file order.
    pub(crate) names: Vec<Arc<str>>,
}

impl TenantMap {
    /// Reads `file`, resolving users and groups from `/etc/passwd` and `/etc/group`.
    pub(crate) fn load(file: &Path) -> crate::Result<Self> {
        let accounts = Accounts::read(Path::new("/etc/passwd"), Path::new("/etc/group"));
        Self::load_with(file, &accounts)
    }

    fn load_with(file: &Path, accounts: &Accounts) -> crate::Result<Self> {
        let text = read_bounded(file)?;
        let shown = file.display();
        let parsed: FileSchema = toml::from_str(&text).map_err(|error| {
            let line = error.span().map_or_else(String::new, |s| {
                format!(" line {}:", line_of(&text, s.start))
            });
            crate::Error::Refused(format!(
                "the tenants file {shown}:{line} {}",
                error.message().trim()
            ))
        })?;
        if parsed.tenant.is_empty() {
            bail!("the tenants file {shown} names no tenant: add [[tenant]] tables");
        }
        let mut map = Self {
            file: file.to_owned(),
            ..Self::default()
        };
        let mut claimed: HashMap<u32, (Arc<str>, usize)> = HashMap::new();
        for (index, spanned) in parsed.tenant.iter().enumerate() {
            let line = line_of(&text, spanned.span().start);
            let table = spanned.get_ref();
            let at = |what: &str| format!("the tenants file {shown}: line {line}: {what}");
            let name: Arc<str> = match &table.name {
                Some(name) => {
                    if name.is_empty()
                        || name.chars().count() > MAX_NAME_CHARS
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    {
                        bail!(
                            "{}",
                            at(&format!(
                                "name: `{}` is not a tenant name (1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`)",
                                name.escape_debug()
                            ))
                        );
                    }
                    Arc::from(name.as_str())
                }
                None => Arc::from(format!("tenant-{}", index + 1)),
            };
            if map.names.contains(&name) {
                bail!("{}", at(&format!("name: `{name}` names two tenants")));
            }
            map.names.push(Arc::clone(&name));
            if table.uids.is_empty() && table.users.is_empty() && table.groups.is_empty() {
                bail!(
                    "{}",
                    at(&format!(
                        "tenant `{name}` names no one: give uids, users or groups"
                    ))
                );
            }
            check_template(&table.secret).map_err(|why| {
                crate::Error::Refused(at(&format!("secret: {why} (tenant `{name}`)")))
            })?;
            let auth_mode = match table.auth_mode.as_deref() {
                None => None,
                Some(mode) => Some(match mode.to_ascii_lowercase().as_str() {
                    "bearer" => "bearer",
                    "basic" => "basic",
                    _ => bail!(
                        "{}",
                        at(&format!(
                            "auth_mode: `{}` is neither `bearer` nor `basic` (tenant `{name}`)",
                            mode.escape_debug()
                        ))
                    ),
                }),
            };
            let ttl_ms = match table.ttl_sec {
                None => None,
                Some(ttl) => match Duration::try_from_secs_f64(ttl) {
                    Ok(ttl) if !ttl.is_zero() => {
                        Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    }
                    _ => bail!(
                        "{}",
                        at(&format!(
                            "ttl_sec: {ttl} is not a positive number of seconds (tenant `{name}`)"
                        ))
                    ),
                },
            };
            let mut uids: Vec<u32> = table.uids.clone();
            for user in &table.users {
                match accounts.uid_of(user) {
                    Some(uid) => uids.push(uid),
                    None => bail!(
                        "{}",
                        at(&format!(
                            "users: no user `{}` in /etc/passwd (tenant `{name}`; name a directory user by uid)",
                            user.escape_debug()
                        ))
                    ),
                }
            }
            for group in &table.groups {
                match accounts.members_of(group) {
                    Some(members) => uids.extend(members),
                    None => bail!(
                        "{}",
                        at(&format!(
                            "groups: no group `{}` in /etc/group (tenant `{name}`)",
                            group.escape_debug()
                        ))
                    ),
                }
            }
            uids.sort_unstable();
            uids.dedup();
            for uid in uids {
                if let Some((other, _)) = claimed.get(&uid) {
                    if *other != name {
                        bail!(
                            "{}",
                            at(&format!(
                                "uid {uid} is in tenant `{other}` and in tenant `{name}`: a uid may be in one tenant only"
                            ))
                        );
                    }
                    continue;
                }
                let user = accounts.name_of(uid);
                if table.secret.contains("{user}") && user.is_none() {
                    bail!(
                        "{}",
                        at(&format!(
                            "secret: uses {{user}}, and uid {uid} has no name in /etc/passwd (tenant `{name}`)"
                        ))
                    );
                }
                let secret = table
                    .secret
                    .replace("{uid}", &uid.to_string())
                    .replace("{user}", user.unwrap_or_default());
                claimed.insert(uid, (Arc::clone(&name), index));
                map.by_uid.insert(
                    uid,
                    Tenant {
                        name: Arc::clone(&name),
                        secret,
                        auth_mode,
                        ttl_ms,
                    },
                );
            }
        }
        Ok(map)
    }

    /// What `uid` is served, if the file maps it.
    pub(crate) fn get(&self, uid: u32) -> Option<&Tenant> {
        self.by_uid.get(&uid)
    }

    /// How many uids the file maps.
    pub(crate) fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Every distinct secret the map serves.
    pub(crate) fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.by_uid.values()
    }
}

/// Why a secret template is refused: a placeholder other than `{user}` and
/// `{uid}`, or a brace outside one.
fn check_template(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    let rest = template.replace("{user}", "").replace("{uid}", "");
    if rest.contains('{') || rest.contains('}') {
        return Err(
            "only {user} and {uid} may be substituted; another brace is not allowed".to_owned(),
        );
    }
    if rest.chars().any(char::is_control) {
        return Err("it holds a control character".to_owned());
    }
    Ok(())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A regular file's text, at most [`MAX_FILE_BYTES`].
fn read_bounded(file: &Path) -> crate::Result<String> {
    use std::io::Read as _;
    let shown = file.display();
    let opened = std::fs::File::open(file)
        .map_err(|e| crate::Error::Refused(format!("cannot read the tenants file {shown}: {e}")))?;
    let meta = opened
        .metadata()
        .map_err(|e| crate::Error::Refused(format!("cannot read the tenants file {shown}: {e}")))?;
    if !meta.is_file() {
        bail!("the tenants file {shown} is not a regular file");
    }
    let mut text = String::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| crate::Error::Refused(format!("cannot read the tenants file {shown}: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!("the tenants file {shown} is larger than {MAX_FILE_BYTES} bytes");
    }
    Ok(text)
}

/// Users and groups as `/etc/passwd` and `/etc/group` list them.
#[derive(Debug, Default)]
struct Accounts {
    /// name → (uid, primary gid).
    users: BTreeMap<String, (u32, u32)>,
    /// uid → name (the first line naming the uid).
    names: HashMap<u32, String>,
    /// group name → (gid, member names).
    groups: BTreeMap<String, (u32, Vec<String>)>,
}

impl Accounts {
    /// Reads both files; one that cannot be read holds no one.
    fn read(passwd: &Path, group: &Path) -> Self {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        Self::parse(&read(passwd), &read(group))
    }

    fn parse(passwd: &str, group: &str) -> Self {
        let mut accounts = Self::default();
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, gid, ..] = fields[..]
                && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
                && !name.is_empty()
            {
                accounts.users.entry(name.to_owned()).or_insert((uid, gid));
                accounts.names.entry(uid).or_insert_with(|| name.to_owned());
            }
        }
        for line in group.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, gid, members, ..] = fields[..]
                && let Ok(gid) = gid.parse()
                && !name.is_empty()
            {
                let members = members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                accounts
                    .groups
                    .entry(name.to_owned())
                    .or_insert((gid, members));
            }
        }
        accounts
    }

    fn uid_of(&self, user: &str) -> Option<u32> {
        self.users.get(user).map(|(uid, _)| *uid)
    }

    fn name_of(&self, uid: u32) -> Option<&str> {
        self.names.get(&uid).map(String::as_str)
    }

    /// The uids of a group's members: listed ones and those whose primary group it is.
    fn members_of(&self, group: &str) -> Option<Vec<u32>> {
        let (gid, members) = self.groups.get(group)?;
        let mut uids: Vec<u32> = members.iter().filter_map(|m| self.uid_of(m)).collect();
        uids.extend(
            self.users
                .values()
                .filter(|(_, primary)| primary == gid)
                .map(|(uid, _)| *uid),
        );
        Some(uids)
    }
}

/// The variables holding the secret reference of `kind`: the first is set,
/// the others hidden.
fn secret_vars(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Vault => &["MLFLOW_VAULT_SECRET_PATH"],
        ProviderKind::AwsSecretsManager => &["MLFLOW_AWS_SECRET_NAME", "MLFLOW_AWS_SECRET_ID"],
        ProviderKind::AzureKeyVault => &["MLFLOW_AZURE_SECRET_NAME"],
        ProviderKind::File => &["MLFLOW_SECRETS_FILE_PATH"],
    }
}

/// The one provider a tenants file's references are for: the agent's
/// configuration must enable exactly one.
pub(crate) fn tenant_provider(auth: &SecretsAuth) -> crate::Result<ProviderKind> {
    match auth.config().enabled[..] {
        [kind] => Ok(kind),
        ref enabled => bail!(
            "--tenants needs exactly one provider enabled (MLFLOW_SECRETS_AUTH_ENABLE), whose secret each tenant names; {} are enabled",
            enabled.len()
        ),
    }
}

/// `base` with a tenant's secret reference and options in place of the
/// provider's own variables.
struct Overlay<'a> {
    base: &'a dyn EnvSource,
    set: Vec<(&'static str, String)>,
    hidden: &'static [&'static str],
}

impl EnvSource for Overlay<'_> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        if let Some((_, value)) = self.set.iter().find(|(n, _)| *n == name) {
            return Some(OsString::from(value));
        }
        if self.hidden.contains(&name) {
            return None;
        }
        self.base.var_os(name)
    }

    fn names(&self) -> Option<Vec<String>> {
        self.base.names()
    }
}

/// The configuration serving `tenant`: the agent's environment (`base`)
/// with the tenant's secret reference (and auth mode and TTL, when set).
pub(crate) fn tenant_auth(
    base: &dyn EnvSource,
    kind: ProviderKind,
    tenant: &Tenant,
) -> mlflow_secrets_auth::Result<SecretsAuth> {
    let vars = secret_vars(kind);
    let mut set = vec![(vars[0], tenant.secret.clone())];
    if let Some(mode) = tenant.auth_mode {
        set.push((kind.auth_mode_var(), mode.to_owned()));
    }
    if let Some(ms) = tenant.ttl_ms {
        #[allow(clippy::cast_precision_loss)]
        set.push((kind.ttl_var(), format!("{}", ms as f64 / 1000.0)));
    }
    let overlay = Overlay {
        base,
        set,
        hidden: &vars[1..],
    };
    SecretsAuth::from_source_serving(&Env::new(&overlay))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
alice:x:1001:1001::/home/alice:/bin/bash
bob:x:1002:2000::/home/bob:/bin/bash
carol:x:1003:1003::/home/carol:/bin/bash
";
    const GROUP: &str = "root:x:0:
alice:x:1001:
ml-team:x:2000:carol
";

    fn load(text: &str) -> crate::Result<TenantMap> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(&file, text).unwrap();
        TenantMap::load_with(&file, &Accounts::parse(PASSWD, GROUP))
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn uids_users_and_groups_map_to_their_substituted_secret() {
        let map = load(
            r#"
[[tenant]]
name = "alice"
users = ["alice"]
secret = "secret/mlflow/alice"
auth_mode = "Basic"

[[tenant]]
name = "ml-team"
groups = ["ml-team"]
uids = [5000]
secret = "secret/mlflow/{uid}"
ttl_sec = 30
"#,
        )
        .unwrap();
        let alice = map.get(1001).unwrap();
        assert_eq!(&*alice.name, "alice");
        assert_eq!(alice.secret, "secret/mlflow/alice");
        assert_eq!(alice.auth_mode, Some("basic"));
        // bob by his primary group, carol as a listed member, 5000 by uid.
        for uid in [1002, 1003, 5000] {
            let tenant = map.get(uid).unwrap();
            assert_eq!(&*tenant.name, "ml-team");
            assert_eq!(tenant.secret, format!("secret/mlflow/{uid}"));
            assert_eq!(tenant.ttl_ms, Some(30_000));
        }
        assert!(map.get(0).is_none());
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn the_user_template_takes_each_members_name() {
        let map =
            load("[[tenant]]\ngroups = [\"ml-team\"]\nsecret = \"/etc/mlflow/{user}.cred\"\n")
                .unwrap();
        assert_eq!(map.get(1002).unwrap().secret, "/etc/mlflow/bob.cred");
        assert_eq!(map.get(1003).unwrap().secret, "/etc/mlflow/carol.cred");
        assert_eq!(&*map.get(1003).unwrap().name, "tenant-1");
    }

    #[test]
    fn a_schema_error_names_the_file_the_line_and_the_field() {
        let text = "[[tenant]]\nusers = [\"alice\"]\nsecret = \"s\"\n\n[[tenant]]\nuid = [1]\nsecret = \"t\"\n";
        let message = error(text);
        assert!(message.contains("tenants.toml"), "{message}");
        assert!(message.contains("line 6"), "{message}");
        assert!(message.contains("uid"), "{message}");

        for (text, field, line) in [
            ("[[tenant]]\nsecret = \"s\"\n", "names no one", 1),
            (
                "[[tenant]]\nuids = [1]\nsecret = \"s\"\n[[tenant]]\nusers = [\"nobody-here\"]\nsecret = \"t\"\n",
                "users: no user `nobody-here`",
                4,
            ),
            (
                "[[tenant]]\ngroups = [\"nope\"]\nsecret = \"s\"\n",
                "groups: no group `nope`",
                1,
            ),
            (
                "[[tenant]]\nuids = [1]\nsecret = \"a/{home}\"\n",
                "secret: only {user} and {uid}",
                1,
            ),
            (
                "[[tenant]]\nuids = [4242]\nsecret = \"a/{user}\"\n",
                "uid 4242 has no name",
                1,
            ),
            (
                "[[tenant]]\nuids = [1]\nsecret = \"s\"\nauth_mode = \"digest\"\n",
                "auth_mode: `digest`",
                1,
            ),
            (
                "[[tenant]]\nuids = [1]\nsecret = \"s\"\nttl_sec = -1\n",
                "ttl_sec: -1",
                1,
            ),
            (
                "[[tenant]]\nname = \"a b\"\nuids = [1]\nsecret = \"s\"\n",
                "name: `a b`",
                1,
            ),
            (
                "[[tenant]]\nuids = [1002]\nsecret = \"s\"\n[[tenant]]\ngroups = [\"ml-team\"]\nsecret = \"t\"\n",
                "uid 1002 is in tenant `tenant-1` and in tenant `tenant-2`",
                4,
            ),
            ("[[tenant]]\nuids = [1]\n", "missing field `secret`", 1),
            ("", "names no tenant", 0),
        ] {
            let message = error(text);
            assert!(message.contains(field), "{field}: {message}");
            if line > 0 {
                assert!(message.contains(&format!("line {line}")), "{message}");
            }
        }
    }

    #[test]
    fn the_overlay_replaces_only_the_secret_and_the_tenants_options() {
        struct Base;
        impl EnvSource for Base {
            fn var_os(&self, name: &str) -> Option<OsString> {
                match name {
                    "MLFLOW_AWS_SECRET_ID" => Some("agent-own".into()),
                    "MLFLOW_SECRETS_ALLOWED_HOSTS" => Some("mlflow.example.com".into()),
                    _ => None,
                }
            }
        }
        let tenant = Tenant {
            name: Arc::from("t"),
            secret: "tenant-secret".to_owned(),
            auth_mode: Some("basic"),
            ttl_ms: Some(1500),
        };
        let vars = secret_vars(ProviderKind::AwsSecretsManager);
        let overlay = Overlay {
            base: &Base,
            set: vec![
                (vars[0], tenant.secret.clone()),
                ("MLFLOW_AWS_TTL_SEC", "1.5".to_owned()),
            ],
            hidden: &vars[1..],
        };
        assert_eq!(
            overlay.var_os("MLFLOW_AWS_SECRET_NAME").unwrap(),
            "tenant-secret"
        );
        assert_eq!(overlay.var_os("MLFLOW_AWS_SECRET_ID"), None);
        assert_eq!(
            overlay.var_os("MLFLOW_SECRETS_ALLOWED_HOSTS").unwrap(),
            "mlflow.example.com"
        );
    }
}
