//! The command line: definitions and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// How the server holds a SQLite main database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SqliteLocking {
    /// The server's alone: reads take no file lock; another process cannot
    /// open the file.
    Exclusive,
    /// Open to other processes (a backup by `sqlite3 .backup`, a reader),
    /// at the cost of file locks on every read.
    Shared,
}

impl From<SqliteLocking> for vern_store::Locking {
    fn from(l: SqliteLocking) -> Self {
        match l {
            SqliteLocking::Exclusive => Self::Exclusive,
            SqliteLocking::Shared => Self::Shared,
        }
    }
}
use crate::{client, serve};

/// Vern: the trust layer of a multi-tenant platform.
#[derive(Debug, Parser)]
#[command(name = "vern", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the Vern server.
    Serve(Box<ServeArgs>),
    /// Show the seal status of a server.
    Status(ClientArgs),
    /// Operator commands: init, unseal, seal, rotation.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Manage OAuth2 clients (services and operators) of the token authority.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Vault-compatible auth methods: how workloads log in as a client.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Apply a platform file kept in Git: declare clients and JWT roles;
    /// creates and updates what differs, deletes undeclared ones only with
    /// --prune. All or nothing.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// The YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Delete clients (and, when the file has an `auth.jwt` section,
        /// JWT roles) the file does not declare.
        #[arg(long)]
        prune: bool,
        /// Show the changes without making them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check Cedar policy files: validate, run test cases, explain a decision.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and write KV v2 secrets.
    #[command(subcommand)]
    Kv(KvCommand),
    /// The CA of the trust domain: rotate it, import an external one, list
    /// the certificates it issued, show its trust anchors.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The audit log: verify it, query it, follow it, hash a known value.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Artifact trust: signing keys, signing statements about artifacts by
    /// digest, verifying envelopes.
    #[command(subcommand)]
    Attest(AttestCommand),
    /// The evidence store: export the envelopes about a subject, import
    /// them at another site.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// NATS: render nats-server's configuration (tenants as accounts, the
    /// auth callout), and report every messaging path.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Run a keeper: a stateless process holding one unseal share in
    /// memory, handed only to the configured Vern server over mutual TLS.
    Keeper(KeeperArgs),
    /// Registration entries: which workloads on which node get which
    /// service's SVIDs.
    #[command(subcommand)]
    Workload(WorkloadCommand),
    /// The node agent: authenticates to Vern as a node and serves the
    /// SPIFFE Workload API on a Unix socket to the workloads its entries
    /// name.
    Agent(AgentArgs),
    /// SVIDs from the SPIFFE Workload API of a local agent.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the whole log: the hash chain link by link, every checkpoint's
    /// signature against the trusted key, and the tail against the last
    /// checkpoint. Names the first broken record; exits 2 when the log
    /// does not verify.
    Verify(AuditVerifyArgs),
    /// Records matching filters, oldest first (one page; --after to go on).
    Query {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The newest records; with -f, keep printing new ones as they come.
    Tail {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Keep following the log.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the newest records to start with.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
    },
    /// The HMAC a record carries for VALUE (a token, a client secret), to
    /// search the log for it. Reads standard input when VALUE is `-` or
    /// missing.
    Hash {
        #[command(flatten)]
        client: ClientArgs,
        /// The value.
        value: Option<String>,
    },
    /// The key checkpoints are signed with (to pin for `audit verify`).
    PublicKey(ClientArgs),
}

/// Filters of `vern audit query` and `tail`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AuditFilterArgs {
    /// Appended at or after this RFC 3339 time.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Appended before this RFC 3339 time.
    #[arg(long)]
    pub(crate) until: Option<String>,
    /// The principal's client id.
    #[arg(long)]
    pub(crate) principal: Option<String>,
    /// The principal's or the resource's tenant.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// The action, such as secret.read.
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// The decision.
    #[arg(long, value_parser = ["allow", "deny"])]
    pub(crate) decision: Option<String>,
}

/// Options of `vern audit verify`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AuditVerifyArgs {
    /// Verify the log in this storage (`sqlite:PATH` or `postgres://…`).
    #[arg(
        long,
        env = "VERN_AUDIT_STORAGE",
        hide_env_values = true,
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    pub(crate) storage: Option<String>,
    /// Verify a JSON-lines file written by `--audit-file`.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// The trusted checkpoint key (`ed25519:…`) [default: asked from the
    /// server at VERN_ADDR, which must be unsealed].
    #[arg(long, env = "VERN_AUDIT_PUBLIC_KEY")]
    pub(crate) public_key: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OperatorCommand {
    /// Initialise a new server: create the root key, its shares and the root token.
    Init {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        share_set: ShareSetArgs,
    },
    /// Give the server one unseal key share (read from stdin when not given).
    Unseal {
        #[command(flatten)]
        client: ClientArgs,
        /// The unseal key, hex or base64.
        key: Option<String>,
        /// Discard the shares given so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seal the server: its keys are dropped from memory. Needs an operator token.
    Seal(ClientArgs),
    /// Add a keyring term: new data is encrypted under a fresh key, old
    /// terms still decrypt. Needs an operator token.
    Rotate(ClientArgs),
    /// Show the active keyring term. Needs an operator token.
    KeyStatus(ClientArgs),
    /// Rotate the root key: issue a new share set from a threshold of the
    /// current shares.
    #[command(subcommand)]
    RotateRoot(RotateRootCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotateRootCommand {
    /// Start a rotation (needs an operator token); prints the nonce.
    Init {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        share_set: ShareSetArgs,
    },
    /// Give one current share to the rotation (read from stdin when not given).
    Update {
        #[command(flatten)]
        client: ClientArgs,
        /// The rotation's nonce, as printed by `init`.
        #[arg(long)]
        nonce: String,
        /// A current unseal key, hex or base64.
        key: Option<String>,
    },
    /// Show the rotation's progress.
    Status(ClientArgs),
    /// Abandon the rotation (needs an operator token).
    Cancel(ClientArgs),
}

/// The shape of a new share set.
#[derive(Debug, Clone, Args)]
pub(crate) struct ShareSetArgs {
    /// Number of unseal key shares to create.
    #[arg(long, default_value_t = vern_seal::DEFAULT_SHARES)]
    pub(crate) key_shares: u8,
    /// Number of shares needed to unseal.
    #[arg(long, default_value_t = vern_seal::DEFAULT_THRESHOLD)]
    pub(crate) key_threshold: u8,
    /// Encrypt share N to the N-th age recipient (`age1…`); give one per
    /// share. Operators decrypt theirs with `age -d -i KEY_FILE`.
    #[arg(long = "share-recipient", value_name = "AGE_RECIPIENT")]
    pub(crate) share_recipients: Vec<String>,
}

/// `vern policy …`: offline, on a directory of `*.cedar` files.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Parse and validate every `*.cedar` file of DIR in strict mode.
    Validate {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Run expected allow/deny cases; exits non-zero on any mismatch.
    Test {
        /// The cases file (YAML); its `policies` key names the directory.
        cases: PathBuf,
        /// The policy directory, overriding the file's.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Decide one request and show the policies that determined it.
    Explain {
        /// The policy directory (built-in policies only when not given).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// `root`, `operator:ID[@TENANT][#roles]` or `service:ID@TENANT/PROJECT/ENV[#scopes]`.
        #[arg(long)]
        principal: String,
        /// An action such as `secret.read`.
        #[arg(long)]
        action: String,
        /// `platform`, `tenant:T`, `project:T/P`, `environment:T/P/E`,
        /// `service:ID@T/P/E`, `operator:ID[@T]`, `secret:[MOUNT:]PATH`.
        #[arg(long)]
        resource: String,
        /// A DNS name an `svid.issue` request asks for (repeat).
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// `vern client …`.
#[derive(Debug, Subcommand)]
// Parsed once from the command line; boxing the large variant would buy
// nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ClientCommand {
    /// Create a client; prints its id and, for a secret client, the
    /// secret (shown once).
    Create(Box<ClientCreateArgs>),
    /// List client ids.
    List(ClientArgs),
    /// Show a client.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The client id.
        client_id: String,
    },
    /// Delete a client.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The client id.
        client_id: String,
    },
    /// Start a signing key rotation.
    RotateKeys(ClientArgs),
}

/// Options of `vern client create`.
#[derive(Debug, Args)]
pub(crate) struct ClientCreateArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Tenant of a service client, or (with --role and no project) of a
    /// tenant operator such as a tenant administrator.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Project of a service client.
    #[arg(long)]
    pub(crate) project: Option<String>,
    /// Environment of a service client.
    #[arg(long = "env")]
    pub(crate) environment: Option<String>,
    /// Name within the scope (or of the operator).
    #[arg(long, required_unless_present = "node")]
    pub(crate) name: Option<String>,
    /// Create a node for `vern agent` with this name (`node.<NAME>`):
    /// it may only fetch SVIDs for the workloads its registration
    /// entries name.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["name", "tenant", "project", "environment", "roles", "scopes", "nats_publish", "nats_subscribe"])]
    pub(crate) node: Option<String>,
    /// A scope the client may request (repeat).
    #[arg(long = "scope")]
    pub(crate) scopes: Vec<String>,
    /// An operator role (repeat); makes an operator client.
    #[arg(long = "role")]
    pub(crate) roles: Vec<String>,
    /// Require DPoP-bound tokens.
    #[arg(long)]
    pub(crate) dpop_bound: bool,
    /// A public JWK (JSON file) for private_key_jwt; repeat for several.
    /// A client with keys gets no secret.
    #[arg(long = "jwk", value_name = "FILE")]
    pub(crate) jwks: Vec<PathBuf>,
    /// Token lifetime in seconds.
    #[arg(long)]
    pub(crate) token_ttl: Option<u64>,
    /// Authenticate with a client certificate carrying this DNS or URI
    /// SAN (RFC 8705 tls_client_auth); tokens are then bound to it.
    #[arg(long)]
    pub(crate) tls_client_auth_san: Option<String>,
    /// A NATS subject of its tenant's account the service publishes on
    /// (repeat; wildcards `*` and `>` allowed).
    #[arg(long = "nats-publish", value_name = "SUBJECT")]
    pub(crate) nats_publish: Vec<String>,
    /// A NATS subject of its tenant's account the service subscribes
    /// to (repeat).
    #[arg(long = "nats-subscribe", value_name = "SUBJECT")]
    pub(crate) nats_subscribe: Vec<String>,
}

/// `vern auth …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// The JWT auth method: roles trusting an external issuer (such as a
    /// Kubernetes cluster's service-account tokens) to log in as a service.
    #[command(subcommand)]
    Jwt(JwtCommand),
}

/// `vern auth jwt …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JwtCommand {
    /// Manage JWT roles.
    #[command(subcommand)]
    Role(JwtRoleCommand),
}

/// `vern auth jwt role …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JwtRoleCommand {
    /// Create or replace a role.
    Write(Box<JwtRoleWriteArgs>),
    /// Show a role.
    Read {
        #[command(flatten)]
        client: ClientArgs,
        /// The role's name.
        name: String,
    },
    /// List the roles you may see.
    List(ClientArgs),
    /// Delete a role.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The role's name.
        name: String,
    },
}

/// Options of `vern auth jwt role write`.
#[derive(Debug, Args)]
pub(crate) struct JwtRoleWriteArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The role's name (what `jwt_login` names as `role`).
    pub(crate) name: String,
    /// The service client whose tokens a login gets.
    #[arg(long)]
    pub(crate) client_id: String,
    /// The issuer (`iss`) the JWT must carry.
    #[arg(long)]
    pub(crate) bound_issuer: String,
    /// The issuer's JWKS URL (https; http only on loopback).
    #[arg(long, conflicts_with = "pubkey_file")]
    pub(crate) jwks_url: Option<String>,
    /// PEM file of the CAs the JWKS server's certificate must chain to.
    #[arg(long, requires = "jwks_url")]
    pub(crate) jwks_ca_file: Option<PathBuf>,
    /// PEM file of one of the issuer's public keys, instead of a JWKS URL
    /// (repeat).
    #[arg(long = "pubkey-file", value_name = "FILE")]
    pub(crate) pubkey_file: Vec<PathBuf>,
    /// An audience of which the JWT's `aud` must name one (repeat; at
    /// least one).
    #[arg(long = "bound-audience", required = true)]
    pub(crate) bound_audiences: Vec<String>,
    /// The subject (`sub`) the JWT must carry, such as
    /// `system:serviceaccount:NAMESPACE:NAME`.
    #[arg(long)]
    pub(crate) bound_subject: Option<String>,
    /// A claim the JWT must carry: CLAIM=VALUE (repeat; repeating a claim
    /// allows several values). A CLAIM starting with `/` is a JSON pointer.
    #[arg(long = "bound-claim", value_name = "CLAIM=VALUE")]
    pub(crate) bound_claims: Vec<String>,
    /// Match bound claims as globs, `*` standing for any characters.
    #[arg(long)]
    pub(crate) glob: bool,
    /// The claim naming the workload [default: sub].
    #[arg(long)]
    pub(crate) user_claim: Option<String>,
    /// An accepted signature algorithm (repeat) [default: all of RS256,
    /// RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA].
    #[arg(long = "alg")]
    pub(crate) algs: Vec<String>,
    /// Lifetime of issued tokens, in seconds or as a duration (`10m`).
    #[arg(long)]
    pub(crate) token_ttl: Option<String>,
    /// Leeway for clock differences (seconds; -1 for none) [default: 60].
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) clock_skew_leeway: Option<i64>,
    /// Leeway past `exp` (seconds; -1 for none) [default: 150].
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) expiration_leeway: Option<i64>,
    /// Leeway before `nbf` (seconds; -1 for none) [default: 150].
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) not_before_leeway: Option<i64>,
}

/// `vern pki …`.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkloadCommand {
    /// Register an entry: a workload on NODE matching every selector gets
    /// the SVIDs of SERVICE. Needs workload.register on the service (a
    /// tenant administrator for its own tenant's services).
    Register {
        #[command(flatten)]
        client: ClientArgs,
        /// The node (`NAME` or `node.NAME`).
        #[arg(long)]
        node: String,
        /// `unix:uid:N`, `unix:gid:N`, `unix:path:/PATH` or
        /// `unix:sha256:HEX` (repeat; a workload must match all).
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// The service client id (`svc.TENANT.PROJECT.ENV.NAME`).
        #[arg(long)]
        service: String,
        /// Lifetime of its X.509-SVIDs (`1h`) [default: the CA's].
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the entries the caller may read.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this node's.
        #[arg(long)]
        node: Option<String>,
    },
    /// Delete an entry.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The entry's id.
        id: String,
    },
}

/// Options of `vern agent`.
#[derive(Debug, Clone, Args)]
pub(crate) struct AgentArgs {
    /// Address of the Vern server.
    #[arg(long, env = "VERN_ADDR", default_value = "https://127.0.0.1:8200")]
    pub(crate) address: String,
    /// PEM file of a CA certificate to trust for the server's TLS certificate.
    #[arg(long, env = "VERN_CACERT")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// The Unix socket to serve the Workload API on (a path, or
    /// `unix:///path`).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub(crate) socket: PathBuf,
    /// The node's client id (`node.NAME`).
    #[arg(long, env = "VERN_CLIENT_ID")]
    pub(crate) client_id: String,
    /// File holding the node's client secret: the first login's, and the
    /// fallback once the node's own SVID (its login over HTTPS) expired.
    #[arg(long)]
    pub(crate) client_secret_file: PathBuf,
    /// How often the node's entries and the bundle are read again (`30s`).
    #[arg(long, default_value = "30s")]
    pub(crate) refresh: String,
    /// Lifetime asked for X.509-SVIDs (`1h`) [default: the entry's, else
    /// the CA's].
    #[arg(long)]
    pub(crate) svid_ttl: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SvidCommand {
    /// Fetch this process's X.509-SVID from the agent and write `svid.pem`
    /// (certificate and chain), `svid.key` (PKCS#8, mode 0600) and
    /// `bundle.pem`, each by atomic rename; with --watch, rewrite them on
    /// every renewal until stopped.
    Fetch {
        /// The agent's socket (`unix:///path` or a path).
        #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
        socket: String,
        /// The directory to write to.
        #[arg(long)]
        write: PathBuf,
        /// Keep running and rewrite the files on renewal.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCommand {
    /// Start a rotation: a new CA and JWT-SVID key, published in the bundle
    /// now, signing after the delay; the old CA stays published until the
    /// last SVID it signed has expired. Needs pki.rotate.
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        /// How long the new CA is published before it signs (`10m`)
        /// [default: the server's setting].
        #[arg(long)]
        signs_after: Option<String>,
    },
    /// Import an external CA: a root (Vern makes the intermediate that
    /// signs) or an intermediate with its chain up to the root (it signs
    /// itself). Published now, signing after the delay. Needs pki.import.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// PEM file: the CA certificate, then its issuers up to and
        /// including the root.
        #[arg(long)]
        cert: PathBuf,
        /// PEM file of the CA certificate's PKCS#8 private key.
        #[arg(long)]
        key: PathBuf,
        /// How long the imported CA is published before it signs (`10m`)
        /// [default: the server's setting].
        #[arg(long)]
        signs_after: Option<String>,
    },
    /// List issued certificates (SPIFFE ID, serial, expiry), soonest
    /// expiry first. Needs pki.read.
    Certs {
        #[command(flatten)]
        client: ClientArgs,
        /// Only those expiring within this time (`24h`).
        #[arg(long)]
        expiring_within: Option<String>,
        /// Also those expired in the last day (older records are pruned).
        #[arg(long)]
        include_expired: bool,
        /// Most certificates to list.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print the trust anchors (PEM) or, with -o json, the SPIFFE bundle.
    Bundle(ClientArgs),
}

/// `vern nats …`.
#[derive(Debug, Subcommand)]
pub(crate) enum NatsCommand {
    /// Render the nats-server configuration from Vern's state: one account
    /// per tenant, `SYS`, `AUTH`, the auth callout (its users' passwords as
    /// bcrypt hashes), and the sites and subject mappings of `vern apply`'s
    /// `nats:` section. Needs nats.config.
    Config {
        #[command(flatten)]
        client: ClientArgs,
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// nats-server's own certificate chain (PEM), for a `tls` block that
        /// requires every client to present a certificate chaining to
        /// Vern's CA (its X.509-SVID); the CA bundle is written next to
        /// --out as `vern-ca.pem`. Needs --tls-key and --out.
        #[arg(long, value_name = "FILE", requires_all = ["tls_key", "out"])]
        tls_cert: Option<PathBuf>,
        /// nats-server's private key (PEM). Needs --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Who can publish and subscribe on which subjects, every path between
    /// them (through subject mappings too), every cross-account and
    /// cross-site path and every principal reaching a privileged subject.
    /// Needs nats.paths.
    Paths(NatsPathsArgs),
}

/// Options of `vern nats paths`: those of every client command, with a
/// third output format.
#[derive(Debug, Clone, Args)]
pub(crate) struct NatsPathsArgs {
    /// Address of the Vern server.
    #[arg(long, env = "VERN_ADDR", default_value = "https://127.0.0.1:8200")]
    pub(crate) address: String,
    /// Token to authenticate with.
    #[arg(long, env = "VERN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM file of a CA certificate to trust for the server's TLS certificate.
    #[arg(long, env = "VERN_CACERT")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Output format: a table, the server's JSON, or a Graphviz digraph.
    #[arg(long, short = 'o', value_enum, default_value_t = PathsOutput::Table)]
    pub(crate) output: PathsOutput,
    /// Only this tenant's account [default: the caller's tenant, or every
    /// tenant for a platform operator].
    #[arg(long)]
    pub(crate) tenant: Option<String>,
}

/// Output formats of `vern nats paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PathsOutput {
    /// Aligned text.
    Table,
    /// The server's JSON.
    Json,
    /// Graphviz DOT.
    Dot,
}

/// `vern kv …`. Paths are `<tenant>/<project>/<environment>/<name…>`.
#[derive(Debug, Subcommand)]
#[command(disable_version_flag = true)]
pub(crate) enum KvCommand {
    /// Write a new version: `key=value`, `key=@file`, or a JSON object on
    /// stdin (give `-` or no pairs).
    Put {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Write only if the current version is this (0: only if new).
        #[arg(long)]
        cas: Option<u64>,
        /// The data.
        pairs: Vec<String>,
    },
    /// Read the latest version, or `--version N`.
    Get {
        #[command(flatten)]
        target: KvTargetArgs,
        /// The version to read.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Merge keys into the latest version, writing a new version.
    Patch {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Apply only if the current version is this.
        #[arg(long)]
        cas: Option<u64>,
        /// The keys to set (`key=value`, `key=@file`) or JSON on stdin.
        pairs: Vec<String>,
    },
    /// List the secrets and folders under a path.
    List {
        #[command(flatten)]
        target: KvTargetArgs,
    },
    /// Soft-delete the latest version, or `--versions`.
    Delete {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Versions to delete, comma-separated.
        #[arg(long, value_delimiter = ',')]
        versions: Vec<u64>,
    },
    /// Restore soft-deleted versions.
    Undelete {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Versions to restore, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
    /// Destroy versions for good.
    Destroy {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Versions to destroy, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u64>,
    },
    /// A secret's metadata and settings.
    #[command(subcommand)]
    Metadata(KvMetadataCommand),
}

/// `vern kv metadata …`.
#[derive(Debug, Subcommand)]
pub(crate) enum KvMetadataCommand {
    /// Show the metadata of every version.
    Get {
        #[command(flatten)]
        target: KvTargetArgs,
    },
    /// Change settings (creating the secret's metadata if needed).
    Put {
        #[command(flatten)]
        target: KvTargetArgs,
        /// Versions to keep (0: the mount's setting).
        #[arg(long)]
        max_versions: Option<u32>,
        /// Require `--cas` on every write.
        #[arg(long)]
        cas_required: Option<bool>,
        /// Delete versions this long after writing (e.g. `3h`; `0s`: never).
        #[arg(long)]
        delete_version_after: Option<String>,
        /// Custom metadata `key=value` (replaces the existing set).
        #[arg(long = "custom-metadata")]
        custom_metadata: Vec<String>,
    },
    /// Delete the secret: every version and the metadata.
    Delete {
        #[command(flatten)]
        target: KvTargetArgs,
    },
}

/// Server, mount and path of a `vern kv` command.
#[derive(Debug, Clone, Args)]
pub(crate) struct KvTargetArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The KV v2 mount.
    #[arg(long, default_value = "secret")]
    pub(crate) mount: String,
    /// The secret path (`<tenant>/<project>/<environment>/<name…>`).
    pub(crate) path: String,
}

/// Options of `vern keeper`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeeperArgs {
    /// Address to listen on.
    #[arg(long, env = "VERN_KEEPER_LISTEN")]
    pub(crate) listen: SocketAddr,
    /// PEM certificate chain the keeper presents.
    #[arg(long, env = "VERN_KEEPER_TLS_CERT")]
    pub(crate) tls_cert: PathBuf,
    /// PEM private key of that certificate.
    #[arg(long, env = "VERN_KEEPER_TLS_KEY")]
    pub(crate) tls_key: PathBuf,
    /// PEM bundle of the CA that signs the Vern server's client certificate.
    #[arg(long, env = "VERN_KEEPER_CLIENT_CA")]
    pub(crate) client_ca: PathBuf,
    /// The Vern server's identity: a DNS or URI SAN its client certificate
    /// must carry (repeat to allow several). Anyone else is refused.
    #[arg(
        long = "server-identity",
        env = "VERN_KEEPER_SERVER_IDENTITY",
        required = true,
        value_delimiter = ','
    )]
    pub(crate) server_identities: Vec<String>,
    /// Directory where the keeper keeps the serving certificate and the
    /// trusted CA roots its server gives it from Vern's CA (`vern serve
    /// --keeper-certs-from-ca`), so that a restarted keeper presents them;
    /// without it a restarted keeper presents --tls-cert until renewed.
    #[arg(long, env = "VERN_KEEPER_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, env = "VERN_LOG_FORMAT", default_value_t = LogFormat::Auto)]
    pub(crate) log_format: LogFormat,
}

/// The server a command talks to, for commands whose `--output` is their
/// own.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// Address of the Vern server.
    #[arg(long, env = "VERN_ADDR", default_value = "https://127.0.0.1:8200")]
    pub(crate) address: String,
    /// Token to authenticate with.
    #[arg(long, env = "VERN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM file of a CA certificate to trust for the server's TLS certificate.
    #[arg(long, env = "VERN_CACERT")]
    pub(crate) ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    pub(crate) fn client_args(&self) -> ClientArgs {
        ClientArgs {
            address: self.address.clone(),
            token: self.token.clone(),
            ca_cert: self.ca_cert.clone(),
            output: Output::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AttestCommand {
    /// Print a tenant's (or the platform's) signing keys, current and
    /// retired: a JWKS, or PEM blocks.
    Keys {
        #[command(flatten)]
        server: ServerArgs,
        /// The tenant whose keys to print [default: the platform's].
        #[arg(long)]
        tenant: Option<String>,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = KeyOutput::Json)]
        output: KeyOutput,
    },
    /// Sign an in-toto statement about an artifact with the tenant key of
    /// the caller of VERN_TOKEN. With --artifact or --oci-layout the
    /// digest is checked first and a mismatch refuses to sign.
    Sign(AttestSignArgs),
    /// Verify envelopes: a file, or every stored envelope about a subject.
    /// Offline with --key.
    Verify(AttestVerifyArgs),
    /// Ask whether an artifact may be promoted into an environment: its
    /// gate is weighed against the stored evidence. Exits 2 when denied,
    /// naming what is missing; on allow, Vern records a signed promotion
    /// statement.
    Promote {
        #[command(flatten)]
        client: ClientArgs,
        /// The artifact: NAME@sha256:DIGEST.
        #[arg(long)]
        subject: String,
        /// The environment: tenant/project/environment.
        #[arg(long)]
        to: String,
    },
    /// Rotate a tenant's (or the platform's) signing key: the new key signs
    /// from now on, the old one stays published with its window.
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        /// The tenant whose key rotates [default: the caller's own tenant,
        /// or the platform's key for an operator of no tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Output of `vern attest keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyOutput {
    /// SubjectPublicKeyInfo PEM blocks.
    Pem,
    /// A JWKS with each key's owner and validity window.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct AttestSignArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The artifact: NAME@sha256:DIGEST.
    #[arg(long)]
    pub(crate) subject: String,
    /// The predicate's type URI, such as https://slsa.dev/provenance/v1.
    #[arg(long)]
    pub(crate) predicate_type: String,
    /// JSON file holding the predicate (an object).
    #[arg(long)]
    pub(crate) predicate: PathBuf,
    /// The artifact file; its SHA-256 must be the subject's digest.
    #[arg(long, conflicts_with = "oci_layout")]
    pub(crate) artifact: Option<PathBuf>,
    /// An OCI image layout directory; the manifest it names for the subject
    /// (by digest or `org.opencontainers.image.ref.name`) must hash to the
    /// subject's digest.
    #[arg(long)]
    pub(crate) oci_layout: Option<PathBuf>,
    /// Write the envelope here instead of printing it.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AttestVerifyArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// An envelope file (DSSE JSON).
    #[arg(required_unless_present = "subject")]
    pub(crate) envelope: Option<PathBuf>,
    /// The subject's digest (sha256:HEX): with an envelope, its statement
    /// must name it; alone, every stored envelope about it is verified.
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// Trusted public keys: a JWKS (`vern attest keys`) or PEM blocks
    /// (`--output pem`). With it, an envelope file verifies offline.
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Write a bundle of the stored envelopes about a subject, with what
    /// the store recorded of each and the public keys that verify them.
    Export {
        #[command(flatten)]
        server: ServerArgs,
        /// The subject's digest (sha256:HEX).
        #[arg(long)]
        subject: String,
        /// Write the bundle here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a bundle: the server verifies every envelope against this
    /// site's trusted keys before storing any; one refused envelope
    /// refuses the whole bundle.
    Import {
        #[command(flatten)]
        server: ServerArgs,
        /// The bundle file.
        file: PathBuf,
    },
}

/// Output format of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned key/value text.
    Table,
    /// The server's JSON.
    Json,
}

/// Options every client command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Address of the Vern server.
    #[arg(long, env = "VERN_ADDR", default_value = "https://127.0.0.1:8200")]
    pub(crate) address: String,
    /// Token to authenticate with.
    #[arg(long, env = "VERN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM file of a CA certificate to trust for the server's TLS certificate.
    #[arg(long, env = "VERN_CACERT")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, env = "VERN_OUTPUT")]
    pub(crate) output: Output,
}

/// Options of `vern serve`; each has a `VERN_*` environment variable, and
/// all but `--dev` and `--config` may also come from the config file.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Development mode: plain HTTP on loopback, SQLite in the data
    /// directory, initialised and unsealed automatically. Never in production.
    #[arg(long, env = "VERN_DEV")]
    pub(crate) dev: bool,
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "VERN_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8200].
    #[arg(long, env = "VERN_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Data directory for the embedded SQLite store [default: ./vern-data].
    #[arg(long, env = "VERN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Storage: `sqlite:PATH` or `postgres://USER:PASSWORD@HOST/DB`
    /// [default: sqlite in the data directory].
    #[arg(long, env = "VERN_STORAGE", hide_env_values = true)]
    pub(crate) storage: Option<String>,
    /// Root token to use in dev mode instead of a random one.
    #[arg(
        long,
        env = "VERN_DEV_ROOT_TOKEN",
        hide_env_values = true,
        requires = "dev"
    )]
    pub(crate) dev_root_token: Option<String>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "VERN_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "VERN_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM bundle of the CA whose client certificates Vern accepts on its
    /// TLS listener, for OAuth mutual-TLS client authentication and
    /// certificate-bound tokens (RFC 8705). Certificates stay optional.
    #[arg(long, env = "VERN_TLS_CLIENT_CA")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Serve TLS with a certificate from Vern's own CA for this DNS name
    /// (repeat for several), renewed before it expires; the listener then
    /// also accepts client certificates (SVIDs) from that CA. While sealed,
    /// the listener presents --tls-cert/--tls-key if given, else no
    /// certificate at all.
    #[arg(long = "tls-from-ca", env = "VERN_TLS_FROM_CA", value_delimiter = ',')]
    pub(crate) tls_from_ca: Vec<String>,
    /// The SPIFFE trust domain of every SVID the CA issues
    /// [default: vern.internal].
    #[arg(long, env = "VERN_TRUST_DOMAIN")]
    pub(crate) trust_domain: Option<String>,
    /// Key type of CAs Vern generates: p256 or ed25519 [default: p256].
    #[arg(long, env = "VERN_CA_KEY_TYPE", value_parser = ["p256", "ed25519"])]
    pub(crate) ca_key_type: Option<String>,
    /// Lifetime of X.509-SVIDs whose request names none (`1h`)
    /// [default: 1h].
    #[arg(long, env = "VERN_SVID_TTL")]
    pub(crate) svid_ttl: Option<String>,
    /// Hard maximum lifetime of any SVID (`24h`) [default: 24h].
    #[arg(long, env = "VERN_SVID_MAX_TTL")]
    pub(crate) svid_max_ttl: Option<String>,
    /// Serve plain HTTP outside dev mode. Traffic, tokens included, is then
    /// readable on the network.
    #[arg(long, env = "VERN_INSECURE_LISTEN")]
    pub(crate) insecure_listen: bool,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long, env = "VERN_MAX_REQUEST_BYTES")]
    pub(crate) max_request_bytes: Option<usize>,
    /// Request timeout in seconds [default: 30].
    #[arg(long, env = "VERN_REQUEST_TIMEOUT")]
    pub(crate) request_timeout: Option<u64>,
    /// Storage connection pool size [default: 8].
    #[arg(long, env = "VERN_STORAGE_POOL")]
    pub(crate) storage_pool: Option<usize>,
    /// Whether other processes may open a SQLite main database while the
    /// server runs [default: exclusive].
    #[arg(long, value_enum, env = "VERN_SQLITE_LOCKING")]
    pub(crate) sqlite_locking: Option<SqliteLocking>,
    /// The URL clients reach this server at: the token issuer and the base
    /// of DPoP `htu` checks [default: the listener's address].
    #[arg(long, env = "VERN_PUBLIC_URL")]
    pub(crate) public_url: Option<String>,
    /// Serve the auth callout of this nats-server (`nats://HOST:PORT`),
    /// connecting as the callout user `vern nats config` rendered, retrying
    /// until the server is up.
    #[arg(long, env = "VERN_NATS_URL")]
    pub(crate) nats_url: Option<String>,
    /// PEM file of the CA that signed nats-server's own certificate, when
    /// Vern's CA did not. With it (or a tls:// URL) the callout connects
    /// over TLS, presenting an X.509-SVID of its own from Vern's CA.
    #[arg(long, env = "VERN_NATS_CACERT", value_name = "FILE")]
    pub(crate) nats_ca_cert: Option<PathBuf>,
    /// Accept DPoP proofs at the token endpoint without a server nonce
    /// (weakens replay protection across replicas).
    #[arg(long, env = "VERN_INSECURE_DPOP_WITHOUT_NONCE")]
    pub(crate) insecure_dpop_without_nonce: bool,
    /// Token endpoint rate limit per client: RATE[:BURST] requests per
    /// second, 0 to disable [default: 20:40].
    #[arg(long, env = "VERN_LIMIT_TOKEN_CLIENT")]
    pub(crate) limit_token_client: Option<String>,
    /// Token endpoint rate limit on failed client authentications per
    /// source address; valid credentials are never refused by it
    /// [default: 50:100].
    #[arg(long, env = "VERN_LIMIT_TOKEN_ADDRESS")]
    pub(crate) limit_token_address: Option<String>,
    /// API rate limit per authenticated principal [default: 2000:4000].
    #[arg(long, env = "VERN_LIMIT_API_PRINCIPAL")]
    pub(crate) limit_api_principal: Option<String>,
    /// API rate limit per tenant [default: 10000:20000].
    #[arg(long, env = "VERN_LIMIT_API_TENANT")]
    pub(crate) limit_api_tenant: Option<String>,
    /// API rate limit on requests without valid credentials (no token or a
    /// refused one) per source address; valid tokens are never refused by
    /// it [default: 50:200].
    #[arg(long, env = "VERN_LIMIT_API_ADDRESS")]
    pub(crate) limit_api_address: Option<String>,
    /// Authentication failures in a row of one credential from one source
    /// address before that pair is locked out with backoff (0: never)
    /// [default: 5].
    #[arg(long, env = "VERN_LOCKOUT_AFTER")]
    pub(crate) lockout_after: Option<u32>,
    /// Network (CIDR, or a single address) of a proxy whose
    /// X-Forwarded-For header names the client; repeat for several
    /// [default: none, the TCP peer is the client].
    #[arg(
        long = "trusted-proxy",
        env = "VERN_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub(crate) trusted_proxies: Vec<String>,
    /// Seconds a connection has for its TLS handshake and request headers
    /// (slow clients are disconnected); also how long an idle HTTP/1.1
    /// connection waits for its next request [default: 10].
    #[arg(long, env = "VERN_HEADER_TIMEOUT")]
    pub(crate) header_timeout: Option<u64>,
    /// Seconds a connection may stay open with no request in flight
    /// [default: 60].
    #[arg(long, env = "VERN_IDLE_TIMEOUT")]
    pub(crate) idle_timeout: Option<u64>,
    /// Connections open at once; further ones wait to be accepted
    /// [default: 4096].
    #[arg(long, env = "VERN_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<u32>,
    /// Algorithm of new access-token signing keys: eddsa or es256
    /// [default: eddsa]. Existing keys keep theirs until rotated away.
    #[arg(long, env = "VERN_TOKEN_SIGNING_ALG", value_parser = ["eddsa", "es256"])]
    pub(crate) token_signing_alg: Option<String>,
    /// Directory of `*.cedar` policy files, validated at start; reloaded on
    /// SIGHUP and `POST /v1/sys/policies/reload` [default: built-in
    /// policies only].
    #[arg(long, env = "VERN_POLICY_DIR")]
    pub(crate) policy_dir: Option<PathBuf>,
    /// JWKS file of other sites' artifact signing keys (their `vern attest
    /// keys --tenant T`), trusted for `vern evidence import` [default:
    /// only this site's own keys].
    #[arg(long, env = "VERN_ATTEST_TRUSTED_KEYS")]
    pub(crate) attest_trusted_keys: Option<PathBuf>,
    /// Key type of new artifact signing keys: ed25519 or ecdsa-p256
    /// [default: ed25519]. Existing keys keep theirs until rotated.
    #[arg(long, env = "VERN_ATTEST_KEY_TYPE", value_parser = ["ed25519", "ecdsa-p256"])]
    pub(crate) attest_key_type: Option<String>,
    /// Also write every audit record and checkpoint as JSON lines to this
    /// file (synced per batch), or `-` for standard output [default:
    /// storage only].
    #[arg(long, env = "VERN_AUDIT_FILE")]
    pub(crate) audit_file: Option<String>,
    /// Seconds between signed audit checkpoints [default: 60].
    #[arg(long, env = "VERN_AUDIT_CHECKPOINT_INTERVAL")]
    pub(crate) audit_checkpoint_interval: Option<u64>,
    /// KV v2 mount to serve (repeat for several) [default: secret].
    #[arg(long = "kv-mount", env = "VERN_KV_MOUNTS", value_delimiter = ',')]
    pub(crate) kv_mounts: Vec<String>,
    /// Cluster name shown by health and status [default: generated].
    #[arg(long, env = "VERN_CLUSTER_NAME")]
    pub(crate) cluster_name: Option<String>,
    /// Log format.
    #[arg(long, value_enum, env = "VERN_LOG_FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// Keeper base URL (`https://host:port`); repeat, in share order. With
    /// keepers, init leaves Vern unsealed and a restarted server unseals
    /// itself from them.
    #[arg(long = "keeper", env = "VERN_KEEPERS", value_delimiter = ',')]
    pub(crate) keepers: Vec<String>,
    /// PEM bundle of the CA that signs the keepers' certificates.
    #[arg(long, env = "VERN_KEEPER_CA")]
    pub(crate) keeper_ca: Option<PathBuf>,
    /// PEM client certificate this server presents to keepers.
    #[arg(long, env = "VERN_KEEPER_CLIENT_CERT")]
    pub(crate) keeper_client_cert: Option<PathBuf>,
    /// PEM private key of that client certificate.
    #[arg(long, env = "VERN_KEEPER_CLIENT_KEY")]
    pub(crate) keeper_client_key: Option<PathBuf>,
    /// Take the keeper links' certificates from Vern's own CA once it is
    /// unsealed: the server's client identity (`spiffe://<td>/vern/server`,
    /// kept in DATA_DIR/keeper-tls so a restarted, sealed server presents
    /// it) and each keeper's serving certificate
    /// (`spiffe://<td>/vern/keeper/<i>`, from a CSR the keeper makes). The
    /// --keeper-* files stay the bootstrap and the fallback.
    #[arg(long, env = "VERN_KEEPER_CERTS_FROM_CA")]
    pub(crate) keeper_certs_from_ca: bool,
    /// Lifetime of the certificates of keeper links from Vern's CA (`24h`),
    /// renewed at half of it; a server down longer falls back to
    /// --keeper-client-cert [default: svid_max_ttl, 24h unless raised].
    #[arg(long, env = "VERN_KEEPER_CERT_TTL")]
    pub(crate) keeper_cert_ttl: Option<String>,
    /// Seconds between checks that every keeper holds its share [default: 30].
    #[arg(long, env = "VERN_KEEPER_SYNC_INTERVAL")]
    pub(crate) keeper_sync_interval: Option<u64>,
}

/// Runs the parsed command and returns the process exit code.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Status(args) => client::status(&args).await,
        Command::Operator(OperatorCommand::Init { client, share_set }) => {
            client::init(&client, &share_set).await
        }
        Command::Operator(OperatorCommand::Unseal { client, key, reset }) => {
            client::unseal(&client, key, reset).await
        }
        Command::Operator(OperatorCommand::Seal(args)) => client::seal(&args).await,
        Command::Operator(OperatorCommand::Rotate(args)) => client::rotate_keyring(&args).await,
        Command::Operator(OperatorCommand::KeyStatus(args)) => client::key_status(&args).await,
        Command::Operator(OperatorCommand::RotateRoot(cmd)) => client::rotate_root(cmd).await,
        Command::Kv(cmd) => crate::kv::run(cmd).await,
        Command::Pki(cmd) => crate::pki::run(cmd).await,
        Command::Client(cmd) => crate::clients::run(cmd).await,
        Command::Auth(AuthCommand::Jwt(JwtCommand::Role(cmd))) => crate::jwt_auth::run(cmd).await,
        Command::Policy(cmd) => crate::policy::run(cmd),
        Command::Apply {
            client,
            file,
            prune,
            dry_run,
        } => crate::clients::apply(&client, &file, prune, dry_run).await,
        Command::Audit(cmd) => crate::audit::run(cmd).await,
        Command::Attest(cmd) => crate::attest::run(cmd).await,
        Command::Evidence(cmd) => crate::attest::evidence(cmd).await,
        Command::Nats(cmd) => crate::nats::run(cmd).await,
        Command::Keeper(args) => crate::keeper::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Workload(cmd) => crate::workloads::run(cmd).await,
        Command::Agent(args) => crate::agent::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Svid(SvidCommand::Fetch {
            socket,
            write,
            watch,
        }) => crate::agent::fetch(&socket, &write, watch)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vern", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
