//! gwctl's command line, declared with clap derive.
//!
//! Global flags (`--control-plane`, `--token`, `--timeout`, `-o`) work before or after the subcommand.
//! Flag values that have a grammar (durations, rate-limit keys) are parsed here, so a bad
//! value is a usage error (exit code 2) naming the flag, before anything is sent.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::defaults::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_BACKEND_PORTS, DEFAULT_CONTROL_PLANE,
    DEFAULT_CONTROL_PLANE_LISTEN, DEFAULT_LISTEN, DEFAULT_TIMEOUT,
};
use crate::output::OutputFormat;

/// Global flags sort after each command's own flags in help, where they are least in the way.
const GLOBAL_ORDER: usize = 1000;

/// gwctl: manage the gw API gateway's services and rate-limit policies.
#[derive(Debug, Parser)]
#[command(name = "gwctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Control plane address (https://host:port, or http://host:port on loopback).
    #[arg(
        long,
        global = true,
        env = "GW_CONTROL_PLANE",
        display_order = GLOBAL_ORDER,
        default_value = DEFAULT_CONTROL_PLANE,
        value_name = "URL"
    )]
    pub control_plane: String,

    /// Admin token, sent as `authorization: Bearer <token>`.
    #[arg(
        long,
        global = true,
        env = "GW_ADMIN_TOKEN",
        hide_env_values = true,
        display_order = GLOBAL_ORDER,
        value_name = "T"
    )]
    pub token: Option<gw_tls::Secret>,

    /// How long to wait for the control plane's answer to each call (more than 0).
    /// CA certificates (PEM) the control plane's certificate must chain to, for https://.
    /// Default: the system's trust store.
    #[arg(
        long,
        global = true,
        env = "GW_CA_CERT",
        display_order = GLOBAL_ORDER,
        value_name = "PEM"
    )]
    pub ca_cert: Option<std::path::PathBuf>,

    /// Client certificate (PEM) to present to the control plane (mTLS).
    #[arg(
        long,
        global = true,
        env = "GW_CLIENT_CERT",
        display_order = GLOBAL_ORDER,
        value_name = "PEM"
    )]
    pub client_cert: Option<std::path::PathBuf>,

    /// The private key of --client-cert (PEM).
    #[arg(
        long,
        global = true,
        env = "GW_CLIENT_KEY",
        display_order = GLOBAL_ORDER,
        value_name = "PEM"
    )]
    pub client_key: Option<std::path::PathBuf>,

    /// How long to wait for the control plane's answer to each call.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_TIMEOUT,
        value_parser = crate::duration::parse_positive,
        value_name = "DURATION",
        display_order = GLOBAL_ORDER
    )]
    pub timeout: Duration,

    /// Output format: aligned tables for people, or JSON for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table,
        display_order = GLOBAL_ORDER,
        value_name = "FORMAT"
    )]
    pub output: OutputFormat,

    /// Log format of `gwctl dev`'s servers on stderr: `text` (coloured only on a terminal) or
    /// `json`. Other commands print no logs.
    #[arg(
        long,
        global = true,
        env = "GW_LOG_FORMAT",
        value_enum,
        default_value_t = gw_ops::logging::LogFormat::Text,
        display_order = GLOBAL_ORDER,
        value_name = "FORMAT"
    )]
    pub log_format: gw_ops::logging::LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// gwctl's top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, change, list and remove services.
    #[command(subcommand, visible_alias = "services")]
    Service(ServiceCommand),
    /// Set, list and remove rate-limit policies.
    #[command(subcommand, visible_alias = "policies")]
    Policy(PolicyCommand),
    /// Show the data planes connected to the control plane and the config they hold.
    Nodes,
    /// Show endpoint health as the connected data planes see it (unhealthy ones are flagged).
    Health {
        /// Only this service (default: every service).
        service: Option<String>,
    },
    /// Show traffic figures reported by the data planes: per service and node, and per policy.
    Stats(StatsArgs),
    /// Add, list and remove the certificates data planes serve HTTPS with.
    #[command(subcommand, visible_alias = "certs")]
    Cert(CertCommand),
    /// Register, change, list and remove consumers (who calls services), and give them API
    /// keys (`consumer key add NAME`).
    #[command(subcommand, visible_alias = "consumers")]
    Consumer(ConsumerCommand),
    /// List and revoke API keys.
    #[command(subcommand, visible_alias = "keys")]
    Key(KeyCommand),
    /// Make the configuration match a file (YAML or JSON) of services, policies and
    /// certificates, as one config version. Exit status: 0 done (or, with --dry-run, nothing
    /// would change), 2 with --dry-run when something would change, 1 on any error.
    Apply(ApplyArgs),
    /// Print the configuration in force as a file for `apply` (YAML; `-o json` for JSON).
    /// Certificates are not exported (their private keys never leave the control plane).
    Export,
    /// Run a whole local gateway in this process: control plane, data plane, three demo
    /// backends, a demo service and rate-limit policy. Ctrl-C stops it.
    ///
    /// Every address can be changed; port 0 picks a free port, and the addresses actually
    /// bound are printed. Of the global flags only --timeout applies (to the set-up calls).
    Dev(DevArgs),
    /// Print a shell completion script (e.g. `gwctl completions bash > /etc/bash_completion.d/gwctl`).
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Checks what clap cannot: flag combinations that parse but make no sense.
    pub fn check(&self) -> Result<(), crate::Error> {
        match self {
            Command::Service(ServiceCommand::Update(args)) => args.check(),
            _ => Ok(()),
        }
    }
}

/// Flags of `gwctl apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The configuration file, YAML or JSON (see README's "Declarative configuration").
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Print what would change and change nothing; exit 0 if nothing would, 2 if something
    /// would.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the services and policies (and, if the file has a `certificates:` list,
    /// certificates) that the file does not name. Without it nothing is removed.
    #[arg(long)]
    pub prune: bool,
}

/// Flags of `gwctl stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this service and the policies that apply to it (default: every service).
    pub service: Option<String>,
    /// Only this node's figures (default: every node, connected or not).
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// This consumer's traffic (requests that authenticated as it, over every service)
    /// instead of the services' and policies'.
    #[arg(long, value_name = "NAME", conflicts_with = "service")]
    pub consumer: Option<String>,
}

/// `gwctl service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Register a new service.
    Add(ServiceAddArgs),
    /// List every service.
    #[command(visible_alias = "ls")]
    List,
    /// Show one service in full.
    Get {
        /// Service name.
        name: String,
    },
    /// Change some fields of a service; flags not given keep their current value.
    Update(ServiceUpdateArgs),
    /// Remove a service (policies that name it must be removed first).
    #[command(visible_alias = "delete")]
    Rm {
        /// Service name.
        name: String,
    },
}

/// Flags of `service add`.
#[derive(Debug, Args)]
pub struct ServiceAddArgs {
    /// Service name: lowercase letters, digits and '-', up to 63 characters.
    pub name: String,
    /// Path prefix the service takes, e.g. /api.
    #[arg(long, value_name = "PATH")]
    pub prefix: String,
    /// Backend base URL, http://host:port (repeat for several).
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoints: Vec<String>,
    /// Host name the route applies to (repeat for several; none: any host).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Remove the matched prefix before forwarding (/api/x -> /x).
    #[arg(long)]
    pub strip_prefix: bool,
    /// Forward CONNECT requests to an endpoint and tunnel them (needs --prefix /; without
    /// it CONNECT gets 405).
    #[arg(long)]
    pub allow_connect: bool,
    /// Health-check and timeout settings.
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// HTTPS settings.
    #[command(flatten)]
    pub https: HttpsArgs,
    /// Authentication settings.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Authentication flags shared by `service add` and `service update`.
#[derive(Debug, Args, Default)]
pub struct AuthArgs {
    /// Credentials callers must present: `key` (an API key of a consumer), `jwt` (a JWT of a
    /// consumer's credential), `key,jwt` (either), or `none` (anyone may call: the default; on
    /// update, turns authentication off).
    #[arg(long, value_name = "METHODS", value_parser = parse_auth)]
    pub auth: Option<AuthArg>,
    /// Admit only consumers in this group (repeat for several; default: every consumer with a
    /// valid key; on update, the list replaces the current one).
    #[arg(long = "allow-group", value_name = "GROUP")]
    pub allow_groups: Vec<String>,
    /// Admit every authenticated consumer again (update only).
    #[arg(long, conflicts_with = "allow_groups")]
    pub any_group: bool,
    /// Where API keys are accepted: `bearer` (Authorization: Bearer), `header` (X-API-Key),
    /// `query` (?apikey=); repeat or comma-separate. Default: bearer,header.
    #[arg(long = "key-source", value_name = "SOURCE", value_delimiter = ',',
        value_parser = parse_key_source)]
    pub key_sources: Vec<KeySourceArg>,
}

/// `--auth`: the methods, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthArg(pub Vec<gw_proto::v1::AuthMethod>);

/// A `--key-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySourceArg(pub gw_proto::v1::ApiKeySource);

/// Parses `--auth`: `none`, or methods separated by commas (`key`, `key,jwt`).
pub fn parse_auth(text: &str) -> Result<AuthArg, String> {
    if text.trim() == "none" {
        return Ok(AuthArg(Vec::new()));
    }
    text.split(',')
        .map(gw_config_file::parse_auth_method)
        .collect::<Result<Vec<_>, _>>()
        .map(AuthArg)
}

/// Parses one `--key-source`.
pub fn parse_key_source(text: &str) -> Result<KeySourceArg, String> {
    gw_config_file::parse_key_source(text).map(KeySourceArg)
}

/// `gwctl consumer …`
#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Register a consumer.
    Add {
        /// Consumer name: lowercase letters, digits and '-', up to 63 characters.
        name: String,
        /// A group it belongs to (repeat for several).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Replace a consumer's groups (its keys stay).
    Update {
        /// Consumer name.
        name: String,
        /// A group it belongs to (repeat for several); the list replaces the current one.
        #[arg(
            long = "group",
            value_name = "GROUP",
            required_unless_present = "clear_groups"
        )]
        groups: Vec<String>,
        /// Remove it from every group.
        #[arg(long, conflicts_with = "groups")]
        clear_groups: bool,
    },
    /// List consumers.
    #[command(visible_alias = "ls")]
    List,
    /// Show one consumer and its keys (id, creation, expiry, last 4 characters).
    Get {
        /// Consumer name.
        name: String,
    },
    /// Remove a consumer and revoke all its keys.
    #[command(visible_alias = "delete")]
    Rm {
        /// Consumer name.
        name: String,
    },
    /// Give a consumer an API key.
    #[command(subcommand)]
    Key(ConsumerKeyCommand),
    /// Add, list and remove a consumer's JWT credentials.
    #[command(subcommand)]
    Jwt(ConsumerJwtCommand),
}

/// `gwctl consumer jwt …`
#[derive(Debug, Subcommand)]
pub enum ConsumerJwtCommand {
    /// Accept JWTs from an issuer as this consumer: tokens whose `iss` is ISSUER, signed with
    /// the given key, whose claim (default `sub`) is the consumer's name.
    #[command(group(
        clap::ArgGroup::new("jwt_key")
            .required(true)
            .args(["secret_file", "public_key_file", "jwks_url"])
    ))]
    Add(JwtAddArgs),
    /// List JWT credentials (never an HS256 secret).
    #[command(visible_alias = "ls")]
    List {
        /// Only this consumer's credentials.
        name: Option<String>,
    },
    /// Remove a JWT credential (data planes refuse its tokens once they have the new config
    /// version).
    #[command(visible_alias = "delete")]
    Rm {
        /// The credential's id (as `consumer jwt list` shows it).
        id: String,
    },
}

/// Flags of `consumer jwt add`.
#[derive(Debug, Args)]
pub struct JwtAddArgs {
    /// Consumer name.
    pub name: String,
    /// The `iss` the tokens carry, compared exactly.
    #[arg(long, value_name = "ISSUER")]
    pub issuer: String,
    /// HS256: read the shared secret (at least 32 bytes) from this file, or from stdin with
    /// `-`. Never on the command line, where `ps` would show it.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<std::path::PathBuf>,
    /// RS256, ES256 or EdDSA: the issuer's public key, a PEM `PUBLIC KEY` file (RSA of at
    /// least 2048 bits, P-256 or Ed25519).
    #[arg(long, value_name = "FILE")]
    pub public_key_file: Option<std::path::PathBuf>,
    /// The issuer's JWKS document (https://, or http:// to a loopback address), fetched and
    /// refreshed by every data plane.
    #[arg(long, value_name = "URL")]
    pub jwks_url: Option<String>,
    /// An accepted `aud` (repeat for several); tokens must name one. Default: no check.
    #[arg(long = "audience", value_name = "AUD")]
    pub audiences: Vec<String>,
    /// The claim whose value must be the consumer's name (default `sub`). Every credential of
    /// one issuer must name the same claim.
    #[arg(long, value_name = "CLAIM")]
    pub claim: Option<String>,
    /// Use the key only for tokens with this `kid` header (with a secret or public key).
    #[arg(long, value_name = "KID", conflicts_with = "jwks_url")]
    pub kid: Option<String>,
    /// The algorithm; it must match the key (default: the key's own).
    #[arg(long, value_enum, value_name = "ALG", conflicts_with = "jwks_url")]
    pub algorithm: Option<JwtAlgorithmArg>,
}

/// `--algorithm` of `consumer jwt add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithmArg {
    /// HMAC SHA-256 (a shared secret).
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256.
    Rs256,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// Ed25519.
    Eddsa,
}

/// `gwctl consumer key …`
#[derive(Debug, Subcommand)]
pub enum ConsumerKeyCommand {
    /// Generate a new API key for a consumer and print it, once: only its hash is kept.
    Add {
        /// Consumer name.
        name: String,
        /// The key stops working after this long (e.g. 720h); default: when revoked.
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_positive)]
        expires: Option<Duration>,
    },
}

/// `gwctl key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List API keys: id, consumer, creation, expiry, last 4 characters (never the key).
    #[command(visible_alias = "ls")]
    List {
        /// Only this consumer's keys.
        #[arg(long, value_name = "NAME")]
        consumer: Option<String>,
    },
    /// Revoke an API key (data planes refuse it once they have the new config version).
    #[command(visible_alias = "delete")]
    Rm {
        /// The key's id (as `key list` shows it).
        id: String,
    },
}

/// HTTPS flags shared by `service add` and `service update`.
#[derive(Debug, Args, Default)]
pub struct HttpsArgs {
    /// Answer plain-HTTP requests with a 308 redirect to HTTPS.
    #[arg(long)]
    pub https_redirect: bool,
    /// Verify https:// endpoints against the CA certificates in this PEM file instead of the
    /// system's trust store.
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Option<std::path::PathBuf>,
    /// Do not verify https:// endpoints' certificates at all (flagged in `service list`).
    #[arg(long)]
    pub upstream_insecure: bool,
}

/// Flags of `service update`: like `add`, all optional, plus ways to unset.
#[derive(Debug, Args)]
pub struct ServiceUpdateArgs {
    /// Service name.
    pub name: String,
    /// New path prefix.
    #[arg(long, value_name = "PATH")]
    pub prefix: Option<String>,
    /// Backend base URL; given at all, the list replaces the current endpoints.
    #[arg(long = "endpoint", value_name = "URL")]
    pub endpoints: Vec<String>,
    /// Remove every endpoint (matching requests then get 503).
    #[arg(long, conflicts_with = "endpoints")]
    pub clear_endpoints: bool,
    /// Host name; given at all, the list replaces the current hosts.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Remove every host restriction (the route then matches any host).
    #[arg(long, conflicts_with = "hosts")]
    pub clear_hosts: bool,
    /// Remove the matched prefix before forwarding.
    #[arg(long)]
    pub strip_prefix: bool,
    /// Forward the path unchanged.
    #[arg(long, conflicts_with = "strip_prefix")]
    pub no_strip_prefix: bool,
    /// Forward CONNECT requests to an endpoint and tunnel them (needs the prefix /).
    #[arg(long)]
    pub allow_connect: bool,
    /// Answer CONNECT with 405 again (the default).
    #[arg(long, conflicts_with = "allow_connect")]
    pub no_allow_connect: bool,
    /// Health-check and timeout settings.
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// HTTPS settings.
    #[command(flatten)]
    pub https: HttpsArgs,
    /// Stop redirecting plain HTTP to HTTPS.
    #[arg(long, conflicts_with = "https_redirect")]
    pub no_https_redirect: bool,
    /// Verify https:// endpoints against the system's trust store again (drops the CA file
    /// and the insecure setting).
    #[arg(long, conflicts_with_all = ["upstream_ca", "upstream_insecure"])]
    pub upstream_verify_system: bool,
    /// Authentication settings.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Health-check and timeout flags shared by `service add` and `service update`.
///
/// Each is optional: on `add` an unset flag means the control plane's default, on `update` it
/// means "keep the current value".
#[derive(Debug, Args, Default)]
pub struct TuningArgs {
    /// Check endpoints actively with an HTTP GET of this path (2xx is healthy). Without it the
    /// active check is a TCP connect: an endpoint that accepts connections is healthy.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["no_health_check", "tcp_health_check"])]
    pub health_path: Option<String>,
    /// No active checks; passive ejection still applies (an ejected endpoint is tried again
    /// after the health interval).
    #[arg(long, conflicts_with = "tcp_health_check")]
    pub no_health_check: bool,
    /// Active checks by TCP connect (the default); on `update`, drops a health path or
    /// re-enables disabled checks.
    #[arg(long)]
    pub tcp_health_check: bool,
    /// Time between health checks (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub health_interval: Option<Duration>,
    /// Time allowed for one health check (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub health_timeout: Option<Duration>,
    /// Consecutive successes that bring an endpoint back (default 2).
    #[arg(long, value_name = "N")]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that take an endpoint out (default 3).
    #[arg(long, value_name = "N")]
    pub unhealthy_threshold: Option<u32>,
    /// Time allowed to connect to an endpoint (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub connect_timeout: Option<Duration>,
    /// Time allowed for an endpoint's response headers (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub request_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a client's upload (default: each data plane's
    /// --request-body-timeout, 10s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub request_body_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a backend's response body (default: each data
    /// plane's --response-body-timeout, 60s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub response_body_timeout: Option<Duration>,
}

/// Flags of `gwctl dev`. Defaults are the addresses the README's quick start uses; all are
/// loopback so a demo never listens on the network by accident.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Database for the control plane (`sqlite://path` or a path; created if missing).
    /// Default: a new SQLite file in a temporary directory, removed on exit.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Address the gateway (data plane proxy) takes client traffic on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address of the data plane's admin endpoints (/healthz, /readyz, /config, /metrics).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Address the control plane serves gRPC on (admin API, config stream, reflection).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL_PLANE_LISTEN)]
    pub control_plane_listen: SocketAddr,
    /// Ports of the demo backends service-a, service-b and service-c on 127.0.0.1, in order.
    #[arg(
        long,
        value_name = "A,B,C",
        default_value = DEFAULT_BACKEND_PORTS,
        value_parser = parse_backend_ports
    )]
    pub backend_ports: BackendPorts,
    /// Count the demo policy in this Redis (`redis://host:port`), as a GLOBAL policy: the
    /// data plane takes it as its --redis-url. Default: none (the policy is per node).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// With --redis-url: the longest the data plane waits for Redis per decision before the
    /// policy falls back to this node's share, as the data plane's --redis-timeout (default
    /// 5ms). Raise it on a busy machine, where a few milliseconds may pass before a request
    /// even reaches Redis.
    #[arg(
        long,
        value_name = "DURATION",
        requires = "redis_url",
        value_parser = crate::duration::parse_positive
    )]
    pub redis_timeout: Option<Duration>,
}

/// The three demo backends' ports, as given with `--backend-ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPorts(pub [u16; 3]);

/// Parses `--backend-ports`: exactly three comma-separated ports; 0 (pick a free port) may
/// repeat, other ports may not.
pub fn parse_backend_ports(text: &str) -> Result<BackendPorts, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [a, b, c] = parts.as_slice() else {
        return Err("give three ports, one per demo backend, e.g. 8001,8002,8003".into());
    };
    let mut ports = [0u16; 3];
    for (port, part) in ports.iter_mut().zip([a, b, c]) {
        *port = part
            .parse()
            .map_err(|_| format!("'{part}' is not a port number (0 to 65535)"))?;
    }
    for (i, port) in ports.iter().enumerate() {
        if *port != 0 && ports[..i].contains(port) {
            return Err(format!(
                "port {port} is given twice; each backend needs its own"
            ));
        }
    }
    Ok(BackendPorts(ports))
}

/// `gwctl cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Add a certificate, or replace the one with this name. Checked first: the files must be
    /// PEM, the key must match the certificate, and it must not have expired. Name it
    /// `default` to serve it to clients whose SNI name no certificate has.
    Add {
        /// Certificate name (lowercase letters, digits and '-').
        name: String,
        /// The certificate chain, PEM, leaf first.
        #[arg(long, value_name = "PEM")]
        cert: std::path::PathBuf,
        /// Its private key, PEM. Sent only to a control plane over TLS (or on loopback).
        #[arg(long, value_name = "PEM")]
        key: std::path::PathBuf,
    },
    /// List certificates: names, SANs, expiry (`!`: expires within 14 days or has expired).
    #[command(visible_alias = "ls")]
    List,
    /// Remove a certificate.
    #[command(visible_alias = "delete")]
    Rm {
        /// Certificate name.
        name: String,
    },
}

/// `gwctl policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a rate-limit policy, or replace the one with this name.
    Set(PolicySetArgs),
    /// List every policy.
    #[command(visible_alias = "ls")]
    List,
    /// Remove a policy.
    #[command(visible_alias = "delete")]
    Rm {
        /// Policy name.
        name: String,
    },
}

/// Flags of `policy set`. Every flag not given takes its default: `set` replaces the policy.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// Policy name.
    pub name: String,
    /// Requests allowed per period.
    #[arg(long, value_name = "N")]
    pub limit: u64,
    /// The period, e.g. 1s, 1m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub per: Duration,
    /// How many requests may arrive at once (default: the limit).
    #[arg(long, value_name = "N")]
    pub burst: Option<u64>,
    /// What identifies a client: `ip`, `consumer` (the authenticated consumer), or
    /// `header:NAME` (e.g. header:x-api-key).
    #[arg(long, value_name = "KEY", default_value = "ip", value_parser = parse_key)]
    pub key: KeyArg,
    /// Apply to this service only (default: every service).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Apply to this consumer's requests only. Where a --consumer or --group policy applies,
    /// the unscoped `--key consumer` policies do not (they are the default tier).
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Apply to requests of consumers in this group only (see --consumer).
    #[arg(long, value_name = "GROUP", conflicts_with = "consumer")]
    pub group: Option<String>,
    /// Only count what would be rejected; reject nothing.
    #[arg(long)]
    pub shadow: bool,
    /// Who counts: `node` (each data plane alone) or `global` (one budget for the whole
    /// fleet, counted in the data planes' Redis).
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// The scope flags of `policy set`.
#[derive(Debug, Clone, Copy, Args, PartialEq, Eq)]
pub struct ScopeArgs {
    /// Who counts the requests: `node` (each data plane alone) or `global` (one budget for
    /// the fleet, counted in Redis).
    #[arg(long, value_enum, default_value_t = ScopeArg::Node)]
    pub scope: ScopeArg,
    /// What a global policy does on a data plane that cannot reach Redis: `local-share`
    /// (enforce limit / live data planes on each), `allow` (fail open) or `deny` (429).
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = OnStoreErrorArg::LocalShare)]
    pub on_store_error: OnStoreErrorArg,
}

/// `--scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// Each data plane counts alone.
    Node,
    /// One budget for the fleet, counted in Redis.
    Global,
}

/// `--on-store-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnStoreErrorArg {
    /// Each data plane enforces its share: limit / live data planes.
    LocalShare,
    /// Let everything through.
    Allow,
    /// Reject everything with 429.
    Deny,
}

/// A rate-limit key as given with `--key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyArg {
    /// The client's IP address.
    ClientIp,
    /// The value of this request header.
    Header(String),
    /// The authenticated consumer.
    Consumer,
}

/// Parses `--key`: `ip` (or `client_ip`) or `header:NAME`, the grammar of a configuration
/// file's `key:`.
pub fn parse_key(text: &str) -> Result<KeyArg, String> {
    use gw_proto::v1::rate_limit_key::Source;
    match gw_config_file::parse_key(text)? {
        Source::ClientIp(_) => Ok(KeyArg::ClientIp),
        Source::Header(name) => Ok(KeyArg::Header(name)),
        Source::Consumer(_) => Ok(KeyArg::Consumer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_output_hides_the_token() {
        let cli =
            Cli::try_parse_from(["gwctl", "--token", "admin-s3cret", "service", "list"]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            cli.token.as_ref().map(gw_tls::Secret::expose),
            Some("admin-s3cret")
        );
    }

    #[test]
    fn key_flag_grammar() {
        let cases = [
            ("ip", Ok(KeyArg::ClientIp)),
            ("client_ip", Ok(KeyArg::ClientIp)),
            ("header:x-api-key", Ok(KeyArg::Header("x-api-key".into()))),
            ("header:", Err("header name missing")),
            ("consumer", Ok(KeyArg::Consumer)),
            ("cookie:x", Err("use ip, consumer or header:NAME")),
            ("", Err("use ip, consumer or header:NAME")),
        ];
        for (input, want) in cases {
            match (parse_key(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn backend_ports_grammar() {
        let cases = [
            ("8001,8002,8003", Ok([8001, 8002, 8003])),
            (" 1, 2 ,3 ", Ok([1, 2, 3])),
            ("0,0,0", Ok([0, 0, 0])),
            ("8001,8002", Err("give three ports")),
            ("1,2,3,4", Err("give three ports")),
            ("1,x,3", Err("'x' is not a port number")),
            ("1,2,70000", Err("'70000' is not a port number")),
            ("8001,8002,8001", Err("port 8001 is given twice")),
        ];
        for (input, want) in cases {
            match (parse_backend_ports(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, BackendPorts(want), "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        let cli = Cli::try_parse_from(["gwctl", "dev"]).unwrap();
        let Command::Dev(dev) = cli.command else {
            panic!("not dev: {:?}", cli.command);
        };
        assert_eq!(dev.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(dev.admin_listen.to_string(), "127.0.0.1:9901");
        assert_eq!(dev.control_plane_listen.to_string(), "127.0.0.1:50051");
        assert_eq!(dev.backend_ports, BackendPorts([8001, 8002, 8003]));
        assert_eq!(dev.database, None);
        let err = Cli::try_parse_from(["gwctl", "dev", "--listen", "8080"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "gwctl",
            "service",
            "list",
            "-o",
            "json",
            "--control-plane",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.control_plane, "http://127.0.0.1:1");
        assert!(matches!(
            cli.command,
            Command::Service(ServiceCommand::List)
        ));
    }

    #[test]
    fn bad_duration_names_the_flag_and_value() {
        let err =
            Cli::try_parse_from(["gwctl", "policy", "set", "p", "--limit", "5", "--per", "5x"])
                .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--per"), "{text}");
        assert!(text.contains("'5x'"), "{text}");
        assert!(text.contains("unknown unit"), "{text}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn update_rejects_contradictory_flags() {
        for argv in [
            vec![
                "gwctl",
                "service",
                "update",
                "s",
                "--strip-prefix",
                "--no-strip-prefix",
            ],
            vec![
                "gwctl",
                "service",
                "update",
                "s",
                "--host",
                "a",
                "--clear-hosts",
            ],
            vec![
                "gwctl",
                "service",
                "update",
                "s",
                "--endpoint",
                "http://a:1",
                "--clear-endpoints",
            ],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }
}
