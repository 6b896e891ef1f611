//! Who a service admits: the credentials it accepts, the groups it lets in, and where it
//! looks for an API key.

use gw_proto::v1 as pb;

use crate::domain::consumer::check_groups;
use crate::domain::validate::Problems;

/// A kind of credential a service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthMethod {
    /// An API key.
    ApiKey,
    /// A JWT in `Authorization: Bearer`.
    Jwt,
}

impl AuthMethod {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "key",
            Self::Jwt => "jwt",
        }
    }

    /// Inverse of [`AuthMethod::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "key" => Some(Self::ApiKey),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }
}

/// Where an API key is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeySource {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `X-API-Key: <key>`.
    Header,
    /// The `apikey` query parameter.
    Query,
}

impl KeySource {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Header => "header",
            Self::Query => "query",
        }
    }

    /// Inverse of [`KeySource::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "bearer" => Some(Self::Bearer),
            "header" => Some(Self::Header),
            "query" => Some(Self::Query),
            _ => None,
        }
    }
}

/// What a service requires of its callers. The default (no methods) admits anyone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Accepted credentials, sorted; empty: no authentication.
    pub methods: Vec<AuthMethod>,
    /// Groups admitted, sorted; empty: every authenticated consumer.
    pub allowed_groups: Vec<String>,
    /// Where keys are looked for, sorted; never empty when `methods` has `ApiKey`.
    pub key_sources: Vec<KeySource>,
}

/// Key sources when a service names none: the two headers. A query parameter is opt-in, since
/// URLs are logged by proxies and browsers along the way.
pub const DEFAULT_KEY_SOURCES: [KeySource; 2] = [KeySource::Bearer, KeySource::Header];

impl Auth {
    /// Whether the service admits anyone.
    pub fn is_open(&self) -> bool {
        self.methods.is_empty()
    }

    /// Checks `msg` (field names under `auth.`), recording problems in `p`.
    pub(crate) fn convert(msg: pb::ServiceAuth, p: &mut Problems) -> Auth {
        let pb::ServiceAuth {
            methods,
            allowed_groups,
            key_sources,
        } = msg;
        let mut checked = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            match pb::AuthMethod::try_from(*m) {
                Ok(pb::AuthMethod::ApiKey) => checked.push(AuthMethod::ApiKey),
                Ok(pb::AuthMethod::Jwt) => checked.push(AuthMethod::Jwt),
                Ok(pb::AuthMethod::Unspecified) | Err(_) => {
                    p.add(
                        format_args!("auth.methods[{i}]"),
                        format!("unknown value {m}"),
                    );
                }
            }
        }
        checked.sort();
        checked.dedup();
        let allowed_groups = check_groups("auth.allowed_groups", allowed_groups, p);
        let mut sources = Vec::new();
        for (i, s) in key_sources.iter().enumerate() {
            match pb::ApiKeySource::try_from(*s) {
                Ok(pb::ApiKeySource::Bearer) => sources.push(KeySource::Bearer),
                Ok(pb::ApiKeySource::Header) => sources.push(KeySource::Header),
                Ok(pb::ApiKeySource::Query) => sources.push(KeySource::Query),
                Ok(pb::ApiKeySource::Unspecified) | Err(_) => {
                    p.add(
                        format_args!("auth.key_sources[{i}]"),
                        format!("unknown value {s}"),
                    );
                }
            }
        }
        sources.sort();
        sources.dedup();
        let keys = checked.contains(&AuthMethod::ApiKey);
        if checked.is_empty() && (!allowed_groups.is_empty() || !sources.is_empty()) {
            p.add(
                "auth",
                "allowed_groups and key_sources need auth.methods (e.g. API_KEY)",
            );
        }
        if !checked.is_empty() && !keys {
            // Where to look for API keys means nothing once keys are not accepted (a service
            // switched from `key` to `jwt` keeps its old sources in gwctl's update).
            sources.clear();
        }
        if keys && sources.is_empty() {
            sources = DEFAULT_KEY_SOURCES.to_vec();
        }
        Auth {
            methods: checked,
            allowed_groups,
            key_sources: sources,
        }
    }

    /// The protobuf form; `None` for an open service, so listings stay as short as before.
    pub fn to_pb(&self) -> Option<pb::ServiceAuth> {
        (!self.is_open()).then(|| pb::ServiceAuth {
            methods: self
                .methods
                .iter()
                .map(|m| match m {
                    AuthMethod::ApiKey => pb::AuthMethod::ApiKey.into(),
                    AuthMethod::Jwt => pb::AuthMethod::Jwt.into(),
                })
                .collect(),
            allowed_groups: self.allowed_groups.clone(),
            key_sources: self
                .key_sources
                .iter()
                .map(|s| match s {
                    KeySource::Bearer => pb::ApiKeySource::Bearer.into(),
                    KeySource::Header => pb::ApiKeySource::Header.into(),
                    KeySource::Query => pb::ApiKeySource::Query.into(),
                })
                .collect(),
        })
    }
}
