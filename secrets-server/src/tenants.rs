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
    /// The line of each tenant's table.
    lines: HashMap<Arc<str>, usize>,
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
                crate::Error::Refused(at(&format!("field `secret` of tenant `{name}`: {why}")))
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
                if table.secret.contains("{user}") {
                    match user {
                        None => bail!(
                            "{}",
                            at(&format!(
                                "field `secret` of tenant `{name}` uses {{user}}, and uid {uid} has no name in /etc/passwd"
                            ))
                        ),
                        // A name is substituted only when it reads as one name.
                        Some(user) if !plain_name(user) => bail!(
                            "{}",
                            at(&format!(
                                "field `secret` of tenant `{name}` uses {{user}}, and the name of uid {uid} (`{}`) is not a plain user name (letters, digits, `.`, `_`, `-`)",
                                user.escape_debug()
                            ))
                        ),
                        Some(_) => {}
                    }
                }
                let secret = table
                    .secret
                    .replace("{uid}", &uid.to_string())
                    .replace("{user}", user.unwrap_or_default());
                claimed.insert(uid, (Arc::clone(&name), index));
                map.lines.insert(Arc::clone(&name), line);
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

    /// Where `tenant`'s table is, for an error: `the tenants file F: line N`.
    pub(crate) fn place(&self, tenant: &Tenant) -> String {
        format!(
            "the tenants file {}: line {}",
            self.file.display(),
            self.lines.get(&tenant.name).copied().unwrap_or_default()
        )
    }

    /// The map without `tenants` (refused when the file was read again).
    pub(crate) fn without(&mut self, tenants: &std::collections::HashSet<Tenant>) {
        self.by_uid.retain(|_, tenant| !tenants.contains(tenant));
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
        return Err("the reference is empty".to_owned());
    }
    // The provider reads its variable trimmed: the reference checked must
    // be the one used.
    if template.trim() != template {
        return Err("the reference starts or ends with a space".to_owned());
    }
    let rest = template.replace("{user}", "").replace("{uid}", "");
    if rest.contains('{') || rest.contains('}') {
        return Err(
            "only {user} and {uid} may be substituted; another brace is not allowed".to_owned(),
        );
    }
    if rest.chars().any(char::is_control) {
        return Err("the reference holds a control character".to_owned());
    }
    Ok(())
}

/// Whether a user name can be put in a reference as it is: letters, digits,
/// `.`, `_`, `-`, and not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A regular file's text, at most [`MAX_FILE_BYTES`]. It says who gets
/// which credential, so it must be root's or this user's and writable by
/// no one else. Opened without blocking (a FIFO put there cannot hold the
/// agent up).
fn read_bounded(file: &Path) -> crate::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = file.display();
    let unreadable = |e: std::io::Error| {
        crate::Error::Refused(format!("cannot read the tenants file {shown}: {e}"))
    };
    // It says who gets which credential: no one but root (or this user)
    // may change it or anything on its way.
    check_secure_path(file)
        .map_err(|why| crate::Error::Refused(format!("the tenants file {shown}: {why}")))?;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or_default())
        .open(file)
        .map_err(unreadable)?;
    if !opened.metadata().map_err(unreadable)?.is_file() {
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

/// Refuses a path another user could redirect, so root never reads (or
/// writes) what a user put there. The path is walked as the kernel resolves
/// it: every directory passed and every symlink followed must be root's or
/// this user's, and no directory writable by others (one higher up may be
/// sticky, as `/tmp` is: others add entries there, never replace ours); the
/// file's own directory is writable by no one else at all, and the file,
/// when it exists, is a regular one of root's or this user's with one link
/// and writable by no one else. Nothing on the way can then change but by
/// root or this user.
pub(crate) fn check_secure_path(path: &Path) -> Result<(), String> {
    use std::collections::VecDeque;
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Component;
    /// Symlinks followed at most (the kernel's limit).
    const MAX_HOPS: usize = 40;
    if !path.is_absolute() {
        return Err(format!("`{}` is not an absolute path", path.display()));
    }
    {
        use std::os::unix::ffi::OsStrExt as _;
        let raw = path.as_os_str().as_bytes();
        if raw.ends_with(b"/") || raw.ends_with(b"/.") || raw.ends_with(b"/..") {
            return Err(format!(
                "`{}` names a directory, not a file",
                path.display()
            ));
        }
    }
    let mine = rustix::process::getuid().as_raw();
    let owned = |what: &Path, meta: &std::fs::Metadata| -> Result<(), String> {
        let owner = meta.uid();
        if owner != 0 && owner != mine {
            return Err(format!(
                "{} belongs to uid {owner}: its owner could put another file in its place; keep it where only root (or this user) can write",
                what.display()
            ));
        }
        Ok(())
    };
    let unwritable = |what: &Path, meta: &std::fs::Metadata, sticky_ok: bool| {
        let others = meta.mode() & 0o022 != 0;
        if others && !(sticky_ok && meta.mode() & 0o1000 != 0) {
            return Err(format!(
                "{} (mode {:o}) may be changed by other users; keep it where only root (or this user) can write",
                what.display(),
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    };
    let mut pending: VecDeque<PathBuf> = path
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut current = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        let last = pending.is_empty();
        match part.components().next() {
            Some(Component::RootDir) => {
                current = PathBuf::from("/");
                let meta = std::fs::metadata(&current).map_err(|e| format!("/: {e}"))?;
                owned(&current, &meta)?;
                unwritable(&current, &meta, true)?;
                continue;
            }
            Some(Component::ParentDir) => {
                current.pop();
                continue;
            }
            Some(Component::Normal(_)) => {}
            _ => continue,
        }
        let next = current.join(&part);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            // Not there yet: only its directory's owner could make it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && last => {
                let dir = std::fs::metadata(&current)
                    .map_err(|e| format!("{}: {e}", current.display()))?;
                return unwritable(&current, &dir, false);
            }
            Err(e) => return Err(format!("{}: {e}", next.display())),
        };
        if meta.file_type().is_symlink() {
            owned(&next, &meta)?;
            hops += 1;
            if hops > MAX_HOPS {
                return Err(format!("{}: too many symlinks", path.display()));
            }
            let target =
                std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
            // The target's parts come next, relative to the link's directory.
            for part in target.components().rev() {
                pending.push_front(PathBuf::from(part.as_os_str()));
            }
            continue;
        }
        owned(&next, &meta)?;
        if meta.is_dir() {
            // A process's files (/proc/self/fd, /dev/fd) are links the
            // kernel makes: their text is not where they lead.
            if next.starts_with("/proc") {
                return Err(format!("{} passes through /proc", path.display()));
            }
            unwritable(&next, &meta, !last)?;
            current = next;
            continue;
        }
        if !last {
            return Err(format!("{} is not a directory", next.display()));
        }
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(format!(
                "{} is not a regular file with one link",
                next.display()
            ));
        }
        unwritable(&next, &meta, false)?;
        let dir = std::fs::metadata(&current).map_err(|e| format!("{}: {e}", current.display()))?;
        return unwritable(&current, &dir, false);
    }
    Err(format!("{} names no file", path.display()))
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
                "field `secret` of tenant `tenant-1`: only {user} and {uid}",
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
    fn errors_read_the_same_after_redaction() {
        for text in [
            "[[tenant]]\nuids = [1]\nsecret = \" \"\n",
            "[[tenant]]\nuids = [1]\nsecret = \"a/{home}\"\n",
            "[[tenant]]\nuids = [1]\nsecret = \"a\\u0007b\"\n",
            "[[tenant]]\nuids = [4242]\nsecret = \"a/{user}\"\n",
            "[[tenant]]\nuids = [1]\nsecret = \"/a/{uid} \"\n",
            "[[tenant]]\nuids = [1]\nsecret = \"/a/{uid}\u{a0}\"\n",
        ] {
            let message = error(text);
            assert_eq!(mlflow_secrets_auth::redact(&message), message);
        }
    }

    #[test]
    fn a_name_that_is_not_plain_is_never_substituted() {
        let accounts =
            Accounts::parse("dots:x:7:7::/:/bin/sh\n../cred-root:x:8:8::/:/bin/sh\n", "");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(&file, "[[tenant]]\nuids = [8]\nsecret = \"/c/{user}\"\n").unwrap();
        let message = TenantMap::load_with(&file, &accounts)
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a plain user name"), "{message}");
        std::fs::write(&file, "[[tenant]]\nuids = [8]\nsecret = \"/c/{uid}\"\n").unwrap();
        assert_eq!(
            TenantMap::load_with(&file, &accounts)
                .unwrap()
                .get(8)
                .unwrap()
                .secret,
            "/c/8"
        );
        for bad in ["", ".", "..", "a/b", "a b", "é"] {
            assert!(!plain_name(bad), "{bad}");
        }
        assert!(plain_name("alice.smith-2_x"));
    }

    #[test]
    fn a_tenants_file_others_may_change_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenants.toml");
        std::fs::write(&file, "[[tenant]]\nuids = [1]\nsecret = \"s\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let message = TenantMap::load(&file).unwrap_err().to_string();
        assert!(
            message.contains("may be changed by other users"),
            "{message}"
        );
        // A FIFO is refused without waiting for a writer.
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let message = TenantMap::load(&fifo).unwrap_err().to_string();
        assert!(message.contains("not a regular file"), "{message}");
    }

    #[test]
    fn a_path_others_could_redirect_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let safe = dir.path().join("creds");
        std::fs::create_dir(&safe).unwrap();
        std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cred = safe.join("alice");
        std::fs::write(&cred, "alice:pw").unwrap();
        check_secure_path(&cred).unwrap();
        // Not there yet, in a trusted directory: fine.
        check_secure_path(&safe.join("bob")).unwrap();
        // A directory others may write in.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let message = check_secure_path(&open.join("x")).unwrap_err();
        assert!(
            message.contains("may be changed by other users"),
            "{message}"
        );
        // A symlink in a trusted place to a file in an open one.
        std::fs::write(open.join("target"), "x").unwrap();
        std::os::unix::fs::symlink(open.join("target"), safe.join("link")).unwrap();
        let message = check_secure_path(&safe.join("link")).unwrap_err();
        assert!(message.contains("open"), "{message}");
        // A second link to a file.
        std::fs::hard_link(&cred, safe.join("hard")).unwrap();
        let message = check_secure_path(&cred).unwrap_err();
        assert!(message.contains("one link"), "{message}");
        assert!(check_secure_path(Path::new("relative/path")).is_err());
        for bad in ["/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"] {
            let message = check_secure_path(Path::new(bad)).unwrap_err();
            assert!(message.contains("/proc"), "{bad}: {message}");
        }
        let trailing = format!("{}/", cred.display());
        assert!(check_secure_path(Path::new(&trailing)).is_err());
        // A symlink in a directory another user owns, pointing into a
        // trusted place: refused (its owner could point it anywhere).
        if rustix::process::getuid().is_root() {
            let home = dir.path().join("home");
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::symlink(&cred, home.join("cred")).unwrap();
            std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
            let message = check_secure_path(&home.join("cred")).unwrap_err();
            assert!(message.contains("belongs to uid 65534"), "{message}");
            // A user's own symlink in a trusted directory: refused too.
            let theirs = safe.join("theirs");
            std::os::unix::fs::symlink(&cred, &theirs).unwrap();
            std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
            let message = check_secure_path(&theirs).unwrap_err();
            assert!(message.contains("belongs to uid 65534"), "{message}");
        }
        // Root's symlink in a trusted place to a trusted file: fine, `..` too.
        std::os::unix::fs::symlink(&cred, safe.join("root-link")).unwrap();
        std::fs::remove_file(safe.join("hard")).unwrap();
        check_secure_path(&safe.join("root-link")).unwrap();
        check_secure_path(&safe.join("../creds/alice")).unwrap();
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
