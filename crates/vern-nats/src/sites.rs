//! The `nats:` section of an apply file: this deployment's site, the
//! other sites it links to (a gateway carries every account, a leafnode
//! remote one account each), and the subject mappings of tenants'
//! accounts. Stored behind the barrier in the view `nats/`: `site` (this
//! site), `sites/<name>` (one per linked site) and `mappings/<tenant>`
//! (a tenant's mappings), planned like the other sections of an apply
//! (create, update, delete with prune, unchanged, kept) and committed in
//! the apply's one batch.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError, ViewBatch};

use crate::{view, NatsError, Subject, VIEW_PREFIX};

const LOCAL: &str = "site";
const SITES: &str = "sites/";
const MAPPINGS: &str = "mappings/";
/// The most linked sites, and mappings per tenant.
const MAX_ITEMS: usize = 64;
/// nats-server's default gateway port.
pub const DEFAULT_GATEWAY_PORT: u16 = 7222;
/// Subjects a leafnode link never carries, in either direction: the
/// system account's and the JetStream API's.
pub const LEAF_ALWAYS_DENIED: [&str; 2] = ["$SYS.>", "$JS.API.>"];

/// The `nats:` section as declared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// This deployment's site name (nats-server's `server_name` and its
    /// gateway name).
    pub site: Option<String>,
    /// The port this site's gateway listens on [default: 7222, only when
    /// a gateway is declared].
    pub gateway_port: Option<u16>,
    /// The sites this one links to.
    pub sites: Vec<Site>,
    /// Subject mappings of tenants' accounts.
    pub mappings: Vec<Mapping>,
}

/// A site this one links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Its name (its gateway name).
    pub name: String,
    /// A gateway link: the supercluster carries every account.
    #[serde(default)]
    pub gateway: Option<Gateway>,
    /// A leafnode remote: one link per listed account.
    #[serde(default)]
    pub leafnode: Option<Leafnode>,
}

/// A gateway link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `nats://HOST:PORT` (or `tls://`) of the site's gateways.
    pub urls: Vec<String>,
}

/// A leafnode remote this site dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leafnode {
    /// `nats-leaf://HOST:PORT` (or `nats://`, `tls://`, `ws://`, `wss://`),
    /// without credentials.
    pub url: String,
    /// The tenants' accounts linked.
    pub accounts: Vec<String>,
    /// Subjects this site never sends over the link.
    #[serde(default)]
    pub deny_exports: Vec<Subject>,
    /// Subjects this site never receives over the link.
    #[serde(default)]
    pub deny_imports: Vec<Subject>,
    /// A credentials file on the nats-server host that authenticates the
    /// link to the remote site, so that no secret is in the apply file.
    #[serde(default)]
    pub credentials: Option<String>,
}

/// A subject mapping of one tenant's account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// The tenant (its account).
    pub tenant: String,
    /// The subject messages are published on.
    pub from: Subject,
    /// The subject they are delivered on instead.
    pub to: Subject,
}

/// This site as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSite {
    /// Its name.
    pub name: String,
    /// Its gateway port, if declared.
    pub gateway_port: Option<u16>,
}

/// Everything stored: what the configuration and the path report use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// This site.
    pub local: Option<LocalSite>,
    /// The linked sites, by name.
    pub sites: Vec<Site>,
    /// Every mapping, by tenant.
    pub mappings: Vec<Mapping>,
}

impl Topology {
    /// The accounts the topology names (leafnode links, mappings).
    pub fn accounts(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.mappings.iter().map(|m| m.tenant.clone()).collect();
        for s in &self.sites {
            if let Some(l) = &s.leafnode {
                out.extend(l.accounts.iter().cloned());
            }
        }
        out
    }

    /// The mappings of one account.
    pub fn mappings_of<'a>(&'a self, account: &'a str) -> impl Iterator<Item = &'a Mapping> + 'a {
        self.mappings.iter().filter(move |m| m.tenant == account)
    }

    /// Reads what is stored.
    pub async fn load(barrier: &Barrier) -> Result<Self, NatsError> {
        let v = view(barrier)?;
        let corrupt =
            |key: &str| NatsError::Seal(SealError::Corrupt(format!("{VIEW_PREFIX}{key}")));
        let local = match v.get(LOCAL).await? {
            Some(p) => Some(serde_json::from_slice(p.value.expose()).map_err(|_| corrupt(LOCAL))?),
            None => None,
        };
        let mut out = Self {
            local,
            ..Self::default()
        };
        for key in v.list(SITES, None, usize::MAX).await? {
            if let Some(p) = v.get(&key).await? {
                out.sites
                    .push(serde_json::from_slice(p.value.expose()).map_err(|_| corrupt(&key))?);
            }
        }
        for key in v.list(MAPPINGS, None, usize::MAX).await? {
            if let Some(p) = v.get(&key).await? {
                let list: Vec<Mapping> =
                    serde_json::from_slice(p.value.expose()).map_err(|_| corrupt(&key))?;
                out.mappings.extend(list);
            }
        }
        Ok(out)
    }
}

/// What an apply does to the section: names such as `this site dc1`,
/// `site dc2` and `mappings of acme`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SitePlan {
    /// Created.
    pub create: Vec<String>,
    /// Changed.
    pub update: Vec<String>,
    /// Deleted (only with prune).
    pub delete: Vec<String>,
    /// Already as declared.
    pub unchanged: Vec<String>,
    /// Not declared, kept because prune is off (only those the caller
    /// could delete are named).
    pub kept: Vec<String>,
}

/// Whether `s` is a site or tenant name: 1–63 of `a-z`, `0-9`, `-`, `_`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks a link URL: one of `schemes`, a host and port, no credentials,
/// nothing the configuration's quoting could not hold.
fn check_url(url: &str, schemes: &[&str], at: &str) -> Result<(), NatsError> {
    let bad = |why: &str| NatsError::BadSubject(format!("{at}: `{}` {why}", url.escape_default()));
    let rest = schemes
        .iter()
        .find_map(|s| url.strip_prefix(s).and_then(|r| r.strip_prefix("://")))
        .ok_or_else(|| {
            bad(&format!(
                "must start with {}",
                schemes.join("://, ") + "://"
            ))
        })?;
    if url.len() > 256
        || !url
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(bad("must be at most 256 visible characters, no quotes"));
    }
    if rest.contains('@') {
        return Err(bad(
            "must not hold credentials: name a credentials file on the nats-server host",
        ));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("must be SCHEME://HOST:PORT"))?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("must be SCHEME://HOST:PORT"));
    }
    Ok(())
}

/// Whether the destination of a mapping can be one nats-server accepts:
/// no `*` (nats-server refuses it: a destination names the source's N-th
/// `*` as `$N` or `{{wildcard(N)}}`), references only to wildcards the
/// source has, `>` only if the source ends with one.
fn check_mapping(m: &Mapping, at: &str) -> Result<(), NatsError> {
    if !is_name(&m.tenant) {
        return Err(NatsError::BadSubject(format!(
            "{at}: `{}` is not a tenant name",
            m.tenant.escape_default()
        )));
    }
    // A mapping into a privileged namespace would turn an ordinary publish
    // permission into one on the server's own subjects; a mapping out of
    // one would move them.
    for s in [&m.from, &m.to] {
        if s.is_privileged() {
            return Err(NatsError::BadSubject(format!(
                "{at}: privileged subject `{s}` cannot be mapped"
            )));
        }
    }
    let stars = m.from.as_str().split('.').filter(|x| *x == "*").count();
    for t in m.to.as_str().split('.') {
        if t == "*" {
            return Err(NatsError::BadSubject(format!(
                "{at}: `{}` has a `*`; name the source's N-th `*` as $N",
                m.to
            )));
        }
        if t == ">" && !m.from.as_str().ends_with('>') {
            return Err(NatsError::BadSubject(format!(
                "{at}: `{}` has wildcards `{}` does not",
                m.to, m.from
            )));
        }
        if let Some(n) = wildcard_reference(t) {
            if n == 0 || n > stars {
                return Err(NatsError::BadSubject(format!(
                    "{at}: `{t}` names a `*` `{}` does not have",
                    m.from
                )));
            }
        } else if t.starts_with('$') || t.starts_with("{{") {
            return Err(NatsError::BadSubject(format!(
                "{at}: `{t}` is not $N or {{{{wildcard(N)}}}}"
            )));
        }
    }
    if m.from == m.to {
        return Err(NatsError::BadSubject(format!(
            "{at}: `{}` is mapped to itself",
            m.from
        )));
    }
    Ok(())
}

/// The N of a destination token `$N` or `{{wildcard(N)}}`.
fn wildcard_reference(token: &str) -> Option<usize> {
    token
        .strip_prefix('$')
        .or_else(|| {
            token
                .strip_prefix("{{wildcard(")
                .and_then(|r| r.strip_suffix(")}}"))
        })
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

impl Mapping {
    /// The subjects the destination can be, as a pattern: each reference
    /// to a source wildcard stands for any one token.
    pub fn destination(&self) -> Subject {
        let tokens: Vec<&str> = self
            .to
            .as_str()
            .split('.')
            .map(|t| {
                if wildcard_reference(t).is_some() {
                    "*"
                } else {
                    t
                }
            })
            .collect();
        Subject::parse(&tokens.join(".")).unwrap_or_else(|_| self.to.clone())
    }
}

impl NatsSection {
    /// Checks every declaration; errors name the item (`nats.sites[1]`).
    pub fn check(&self) -> Result<(), NatsError> {
        let bad = |s: String| NatsError::BadSubject(s);
        if let Some(site) = &self.site {
            if !is_name(site) {
                return Err(bad(format!(
                    "nats.site: `{}` is not a site name (1–63 of a-z, 0-9, -, _)",
                    site.escape_default()
                )));
            }
        }
        if self.gateway_port == Some(0) {
            return Err(bad("nats.gateway_port: 0 is not a port".to_owned()));
        }
        if self.sites.len() > MAX_ITEMS {
            return Err(bad(format!("nats.sites: at most {MAX_ITEMS} sites")));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.sites.iter().enumerate() {
            let at = format!("nats.sites[{i}]");
            if !is_name(&s.name) {
                return Err(bad(format!(
                    "{at}: `{}` is not a site name (1–63 of a-z, 0-9, -, _)",
                    s.name.escape_default()
                )));
            }
            if Some(&s.name) == self.site.as_ref() {
                return Err(bad(format!("{at}: {} is this site", s.name)));
            }
            if !names.insert(&s.name) {
                return Err(bad(format!("{at}: site {} is declared twice", s.name)));
            }
            if s.gateway.is_none() && s.leafnode.is_none() {
                return Err(bad(format!("{at}: a site needs a gateway or a leafnode")));
            }
            if let Some(g) = &s.gateway {
                if self.site.is_none() {
                    return Err(bad(format!(
                        "{at}: a gateway needs this site's name (nats.site)"
                    )));
                }
                if g.urls.is_empty() || g.urls.len() > 16 {
                    return Err(bad(format!("{at}.gateway: 1–16 urls")));
                }
                for u in &g.urls {
                    check_url(u, &["nats", "tls"], &format!("{at}.gateway"))?;
                }
            }
            if let Some(l) = &s.leafnode {
                check_url(
                    &l.url,
                    &["nats-leaf", "nats", "tls", "ws", "wss"],
                    &format!("{at}.leafnode"),
                )?;
                if l.accounts.is_empty() || l.accounts.len() > MAX_ITEMS {
                    return Err(bad(format!("{at}.leafnode: 1–{MAX_ITEMS} accounts")));
                }
                let mut seen = BTreeSet::new();
                for a in &l.accounts {
                    if !is_name(a) {
                        return Err(bad(format!(
                            "{at}.leafnode: `{}` is not a tenant's account",
                            a.escape_default()
                        )));
                    }
                    if !seen.insert(a) {
                        return Err(bad(format!("{at}.leafnode: {a} is listed twice")));
                    }
                }
                if l.deny_exports.len() > MAX_ITEMS || l.deny_imports.len() > MAX_ITEMS {
                    return Err(bad(format!(
                        "{at}.leafnode: at most {MAX_ITEMS} denied subjects each way"
                    )));
                }
                if let Some(c) = &l.credentials {
                    let ok = c.starts_with('/')
                        && c.len() <= 1024
                        && c.bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
                    if !ok {
                        return Err(bad(format!(
                            "{at}.leafnode.credentials: an absolute path without quotes or spaces"
                        )));
                    }
                }
            }
        }
        let mut per_tenant: BTreeMap<&str, BTreeSet<&Subject>> = BTreeMap::new();
        for (i, m) in self.mappings.iter().enumerate() {
            let at = format!("nats.mappings[{i}]");
            check_mapping(m, &at)?;
            let of = per_tenant.entry(&m.tenant).or_default();
            if !of.insert(&m.from) {
                return Err(bad(format!(
                    "{at}: `{}` of {} is mapped twice",
                    m.from, m.tenant
                )));
            }
            if of.len() > MAX_ITEMS {
                return Err(bad(format!(
                    "{at}: at most {MAX_ITEMS} mappings per tenant"
                )));
            }
        }
        Ok(())
    }

    /// The tenants whose mappings are declared.
    pub fn mapping_tenants(&self) -> BTreeSet<&str> {
        self.mappings.iter().map(|m| m.tenant.as_str()).collect()
    }

    /// Whether the section declares anything of the platform's (this site
    /// or a linked one).
    pub fn declares_sites(&self) -> bool {
        self.site.is_some() || self.gateway_port.is_some() || !self.sites.is_empty()
    }

    /// Plans the section against what is stored: `platform` says whether
    /// the caller manages sites (undeclared ones are deleted with `prune`
    /// only then), `tenant` whether it manages a tenant's mappings.
    pub async fn plan(
        &self,
        barrier: &Barrier,
        prune: bool,
        platform: bool,
        tenant: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(SitePlan, ViewBatch), NatsError> {
        self.check()?;
        let v = view(barrier)?;
        let mut plan = SitePlan::default();
        let mut writes = Vec::new();
        // One item: compared with what is stored, written only if it differs.
        let mut item = |plan: &mut SitePlan,
                        name: String,
                        key: String,
                        value: Option<Vec<u8>>,
                        stored: Option<(Vec<u8>, u64)>,
                        manages: bool| {
            match (value, stored) {
                (Some(value), None) => {
                    plan.create.push(name);
                    writes.push(put(key, Some(value), Expect::Absent));
                }
                (Some(value), Some((old, version))) => {
                    if old == value {
                        plan.unchanged.push(name);
                    } else {
                        plan.update.push(name);
                        writes.push(put(key, Some(value), Expect::Version(version)));
                    }
                }
                // What the caller may not declare is not its business:
                // not even named, so a tenant administrator learns
                // nothing of the sites or of other tenants' mappings.
                (None, Some((_, version))) if manages => {
                    if prune {
                        plan.delete.push(name);
                        writes.push(put(key, None, Expect::Version(version)));
                    } else {
                        plan.kept.push(name);
                    }
                }
                (None, Some(_)) => {}
                (None, None) => {}
            }
        };
        let stored =
            |p: Option<vern_seal::Plain>| p.map(|p| (p.value.expose().to_vec(), p.version));
        let local = self.site.as_ref().map(|name| LocalSite {
            name: name.clone(),
            gateway_port: self.gateway_port,
        });
        let old_local = stored(v.get(LOCAL).await?);
        let local_name = local
            .as_ref()
            .map(|l| l.name.clone())
            .or_else(|| {
                old_local
                    .as_ref()
                    .and_then(|(b, _)| serde_json::from_slice::<LocalSite>(b).ok())
                    .map(|l| l.name)
            })
            .unwrap_or_default();
        item(
            &mut plan,
            format!("this site {local_name}"),
            LOCAL.to_owned(),
            local.as_ref().map(json).transpose()?,
            old_local,
            platform,
        );
        let declared: BTreeMap<&str, &Site> =
            self.sites.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut keys: BTreeSet<String> =
            v.list(SITES, None, usize::MAX).await?.into_iter().collect();
        keys.extend(declared.keys().map(|n| format!("{SITES}{n}")));
        for key in keys {
            let name = key.strip_prefix(SITES).unwrap_or_default().to_owned();
            let value = declared.get(name.as_str()).map(|s| json(*s)).transpose()?;
            let old = stored(v.get(&key).await?);
            item(&mut plan, format!("site {name}"), key, value, old, platform);
        }
        let mut by_tenant: BTreeMap<&str, Vec<&Mapping>> = BTreeMap::new();
        for m in &self.mappings {
            by_tenant.entry(&m.tenant).or_default().push(m);
        }
        let mut keys: BTreeSet<String> = v
            .list(MAPPINGS, None, usize::MAX)
            .await?
            .into_iter()
            .collect();
        keys.extend(by_tenant.keys().map(|t| format!("{MAPPINGS}{t}")));
        for key in keys {
            let t = key.strip_prefix(MAPPINGS).unwrap_or_default().to_owned();
            let value = match by_tenant.get_mut(t.as_str()) {
                Some(list) => {
                    list.sort();
                    Some(json(&*list)?)
                }
                None => None,
            };
            let old = stored(v.get(&key).await?);
            let manages = tenant(&t);
            item(
                &mut plan,
                format!("mappings of {t}"),
                key,
                value,
                old,
                manages,
            );
        }
        Ok((plan, v.batch(writes)?))
    }
}

fn json<T: Serialize>(x: &T) -> Result<Vec<u8>, NatsError> {
    serde_json::to_vec(x).map_err(|e| NatsError::Internal(e.to_string()))
}

fn put(key: String, value: Option<Vec<u8>>, expect: Expect) -> BarrierWrite {
    BarrierWrite {
        key,
        value: value.map(SecretBytes::new),
        expect,
    }
}

#[cfg(test)]
mod tests;
