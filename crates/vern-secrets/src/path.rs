//! Secret paths, parsed once: a [`SecretPath`] always names a tenant,
//! project and environment, so authorization decides on a typed scope and
//! never on string prefixes.

use vern_core::{EnvironmentId, IdError, ProjectId, Scope, TenantId};

/// Longest secret path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Why a path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// No path was given.
    #[error("secret path is empty")]
    Empty,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("secret path is {0} bytes long; the limit is {MAX_PATH_LEN}")]
    TooLong(usize),
    /// Two slashes in a row, or a leading or trailing slash.
    #[error("secret path `{0}` has an empty segment")]
    EmptySegment(String),
    /// A `.` or `..` segment.
    #[error("secret path `{0}` has a `.` or `..` segment")]
    DotSegment(String),
    /// A control character.
    #[error("secret path contains the control character {0:?}")]
    ControlChar(char),
    /// Fewer than four segments.
    #[error("secret path `{0}` must be <tenant>/<project>/<environment>/<name>")]
    NotScoped(String),
    /// A scope segment is not a valid name.
    #[error("secret path `{path}`: {source}")]
    Scope {
        /// The path.
        path: String,
        /// What is wrong with the segment.
        source: IdError,
    },
}

fn check(s: &str) -> Result<Vec<&str>, PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong(s.len()));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || *c == '\u{10FFFF}') {
        return Err(PathError::ControlChar(c));
    }
    let segments: Vec<&str> = s.split('/').collect();
    if segments.iter().any(|seg| seg.is_empty()) {
        return Err(PathError::EmptySegment(s.to_owned()));
    }
    if segments.iter().any(|seg| *seg == "." || *seg == "..") {
        return Err(PathError::DotSegment(s.to_owned()));
    }
    Ok(segments)
}

fn scope_err(path: &str) -> impl Fn(IdError) -> PathError + '_ {
    move |source| PathError::Scope {
        path: path.to_owned(),
        source,
    }
}

/// The full path of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretPath {
    raw: String,
    scope: Scope,
}

impl SecretPath {
    /// Parses `<tenant>/<project>/<environment>/<name…>`.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let segments = check(s)?;
        let [tenant, project, environment, _name, ..] = segments[..] else {
            return Err(PathError::NotScoped(s.to_owned()));
        };
        let scope = Scope {
            tenant: TenantId::parse(tenant).map_err(scope_err(s))?,
            project: ProjectId::parse(project).map_err(scope_err(s))?,
            environment: EnvironmentId::parse(environment).map_err(scope_err(s))?,
        };
        Ok(Self {
            raw: s.to_owned(),
            scope,
        })
    }

    /// The path as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The environment the secret belongs to.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

/// A folder to list: empty (all tenants) or any number of leading segments.
/// Its scope parts are known for as many levels as it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPrefix {
    raw: String,
    /// The tenant, when the prefix has at least one segment.
    pub tenant: Option<TenantId>,
    /// The project, when it has at least two.
    pub project: Option<ProjectId>,
    /// The environment, when it has at least three.
    pub environment: Option<EnvironmentId>,
}

impl ListPrefix {
    /// Parses a folder path; one trailing slash is allowed.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        if trimmed.is_empty() {
            return Ok(Self {
                raw: String::new(),
                tenant: None,
                project: None,
                environment: None,
            });
        }
        let segments = check(trimmed)?;
        let err = scope_err(trimmed);
        Ok(Self {
            raw: trimmed.to_owned(),
            tenant: segments
                .first()
                .map(|t| TenantId::parse(t))
                .transpose()
                .map_err(&err)?,
            project: segments
                .get(1)
                .map(|p| ProjectId::parse(p))
                .transpose()
                .map_err(&err)?,
            environment: segments
                .get(2)
                .map(|e| EnvironmentId::parse(e))
                .transpose()
                .map_err(&err)?,
        })
    }

    /// The folder without trailing slash; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_path(input: &str, expect: Result<&str, &str>) {
        match (SecretPath::parse(input), expect) {
            (Ok(p), Ok(scope)) => assert_eq!(p.scope().to_string(), scope, "{input}"),
            (Err(e), Err(needle)) => assert!(e.to_string().contains(needle), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn secret_paths() {
        check_path("acme/web/prod/db", Ok("acme/web/prod"));
        check_path("acme/web/prod/db/primary/password", Ok("acme/web/prod"));
        check_path("acme/web/prod/Ünïcode name", Ok("acme/web/prod"));
        check_path("", Err("empty"));
        check_path(
            "acme/web/prod",
            Err("<tenant>/<project>/<environment>/<name>"),
        );
        check_path("acme//prod/db", Err("empty segment"));
        check_path("/acme/web/prod/db", Err("empty segment"));
        check_path("acme/web/prod/db/", Err("empty segment"));
        check_path("acme/web/prod/../db", Err("`..`"));
        check_path("acme/web/./db", Err("`..`"));
        check_path("acme/web/prod/a\u{7}b", Err("control character"));
        check_path("Acme/web/prod/db", Err("tenant name `Acme`"));
        check_path(
            &format!("acme/web/prod/{}", "x".repeat(1100)),
            Err("limit is 1024"),
        );
    }

    #[test]
    fn list_prefixes() {
        let root = ListPrefix::parse("").unwrap();
        assert_eq!((root.as_str(), root.tenant.is_none()), ("", true));
        let p = ListPrefix::parse("acme/web/").unwrap();
        assert_eq!(p.as_str(), "acme/web");
        assert_eq!(p.tenant.unwrap().as_str(), "acme");
        assert_eq!(p.project.unwrap().as_str(), "web");
        assert!(p.environment.is_none());
        assert!(ListPrefix::parse("acme//x").is_err());
        assert!(ListPrefix::parse("ACME/").is_err());
        assert!(ListPrefix::parse("acme/web/prod/deep/er/").is_ok());
    }

    proptest! {
        #[test]
        fn parsed_paths_are_clean(s in "[a-z0-9./\\-_ ]{0,40}") {
            if let Ok(p) = SecretPath::parse(&s) {
                prop_assert_eq!(p.as_str(), s.as_str());
                prop_assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
                prop_assert!(s.split('/').all(|seg| seg != "." && seg != ".."));
                prop_assert!(s.split('/').count() >= 4);
            }
        }
    }
}
