//! The contract between a node and the envd it starts in each sandbox: how envd is started and the JSON that
//! configures it.
//!
//! The node starts envd as [`command_line`] with the start configuration (an [`InitRequest`] as JSON) in the
//! environment variable [`INIT_ENV`]; envd writes one byte to the `--ready-fd` descriptor once it listens on
//! [`ENVD_PORT`]. The same [`InitRequest`] is the body of E2B's `POST /init` (spec: `envVars`, `accessToken`,
//! `defaultUser`, `defaultWorkdir`; E2B's other fields are ignored), which SoulBox extends with `sandboxId`,
//! `network` and `envdSecret` (the last two honoured only at start).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

/// Port envd listens on inside every sandbox.
pub const ENVD_PORT: u16 = 49983;

/// Environment variable carrying the start configuration (so the node needs no extra `/init` round trip).
pub const INIT_ENV: &str = "SOULBOX_ENVD_INIT";

/// envd's log filter (tracing `EnvFilter` syntax), in its environment: the node passes on its own `SOULBOX_LOG`
/// so one setting drives the server, the node agents and every envd. The sandbox's processes never see it
/// (envd builds their environment per call).
pub const LOG_ENV: &str = "SOULBOX_LOG";

/// envd's log format, `text` or `json`, in its environment (like the server's `--log-format`).
pub const LOG_FORMAT_ENV: &str = "SOULBOX_LOG_FORMAT";

/// The older envd-only filter: when set on the node it wins over [`LOG_ENV`] for envd, and envd still reads it.
pub const LEGACY_LOG_ENV: &str = "SOULBOX_ENVD_LOG";

/// The header carrying a request's id from the control plane (through the proxy) to envd and to node agents.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// SoulBox's own route of envd (node secret required, like every route): hands a pre-booted sandbox of the node's
/// booted pool to its user. The body is a full [`InitRequest`] for the sandbox's real identity; envd replaces its
/// configuration with it as a whole (nothing of the pool's stays), rewrites the network files, and from then on
/// answers only the new `envdSecret` (which the body must carry). Answered only by an envd started with
/// [`InitRequest::pooled`], and only once: afterwards (and in any other envd) the route does not exist (404).
pub const CLAIM_PATH: &str = "/soulbox/claim";

/// SoulBox's own route of envd (node secret required): the node is about to checkpoint the sandbox (gVisor). envd
/// closes every other connection and answers `204` with `Connection: close`, or `409` (nothing closed) when a
/// process of the sandbox holds sockets the checkpoint cannot save. Exists only in an agent started with a node
/// secret. Like every path under `/soulbox/`, never forwarded from clients by the proxy.
pub const QUIESCE_PATH: &str = "/soulbox/quiesce";

/// envd's flag for the port to listen on (long name, without the dashes).
pub const PORT_FLAG: &str = "port";

/// envd's flag naming a file descriptor to write one byte to (then close) once it listens (long name, without
/// the dashes).
pub const READY_FD_FLAG: &str = "ready-fd";

/// envd's arguments as the node starts it: `binary --port ENVD_PORT --ready-fd <ready_fd>`.
pub fn command_line(binary: &str, ready_fd: i32) -> Vec<String> {
    vec![
        binary.to_owned(),
        format!("--{PORT_FLAG}"),
        ENVD_PORT.to_string(),
        format!("--{READY_FD_FLAG}"),
        ready_fd.to_string(),
    ]
}

/// envd's start configuration and the body of `POST /init`: every field is optional, an absent field leaves the
/// current value as it is, and absent fields are not written. Unknown fields (E2B's `timestamp`,
/// `volumeMounts`, ...) are ignored.
///
/// The fields are declared in alphabetical order on purpose: the node used to build this JSON with
/// `serde_json::json!`, whose object keys come out sorted, and the bytes stay the same.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_workdir: Option<String>,
    /// SoulBox extension: the installation's egress CA certificate (PEM). envd adds it to the sandbox's trust
    /// stores at every start ([`EGRESS_CA_FILE`], the system bundles, [`EGRESS_CA_BUNDLE_FILE`]), so HTTPS the
    /// node's egress gateway intercepts for header rules verifies. The certificate only: its key never leaves
    /// the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_ca: Option<String>,
    /// Sandbox-level environment variables (replace the previous set as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// SoulBox extension: the node's secret ([`crate::envd_secret`], field
    /// [`crate::envd_secret::INIT_FIELD`]). envd takes it from the start configuration only; `POST /init` cannot
    /// set or change it.
    #[serde(rename = "envdSecret", default, skip_serializing_if = "Option::is_none")]
    pub envd_secret: Option<String>,
    /// SoulBox extension: the sandbox's network identity, written by envd to `/etc` at start. A malformed value
    /// reads as absent (it never makes the rest of the configuration unreadable).
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkIdentity>,
    /// SoulBox extension, start configuration only: this envd runs in a sandbox of the node's booted pool and
    /// waits for its identity through [`CLAIM_PATH`] (once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooled: Option<bool>,
    /// SoulBox extension: the sandbox's id, reported by envd's `/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
}

/// Secrets stay out of logs: the access token and the node secret show only whether they are set.
impl std::fmt::Debug for InitRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("InitRequest")
            .field("access_token", &redacted(&self.access_token))
            .field("default_user", &self.default_user)
            .field("default_workdir", &self.default_workdir)
            .field("egress_ca", &self.egress_ca.as_ref().map(|_| "<certificate>"))
            .field("env_vars", &self.env_vars)
            .field("envd_secret", &redacted(&self.envd_secret))
            .field("network", &self.network)
            .field("pooled", &self.pooled)
            .field("sandbox_id", &self.sandbox_id)
            .finish()
    }
}

/// Where envd puts the egress CA certificate: the directory `update-ca-certificates` reads, so a system bundle
/// rebuilt later (a package install) keeps it.
pub const EGRESS_CA_FILE: &str = "/usr/local/share/ca-certificates/soulbox-egress.crt";
/// A bundle envd writes at every start: the system bundle with the egress CA, for the variables below.
pub const EGRESS_CA_BUNDLE_FILE: &str = "/usr/local/share/soulbox/ca-bundle.pem";

/// The variables runtimes and tools read their trust from (Python's `ssl` and `httpx`, `requests`, curl, git,
/// Node), as the node sets them by default when the sandbox has an egress CA (a template's or a create's own
/// value wins).
pub fn egress_ca_env() -> [(&'static str, &'static str); 5] {
    [
        ("SSL_CERT_FILE", EGRESS_CA_BUNDLE_FILE),
        ("REQUESTS_CA_BUNDLE", EGRESS_CA_BUNDLE_FILE),
        ("CURL_CA_BUNDLE", EGRESS_CA_BUNDLE_FILE),
        ("GIT_SSL_CAINFO", EGRESS_CA_BUNDLE_FILE),
        ("NODE_EXTRA_CA_CERTS", EGRESS_CA_FILE),
    ]
}

/// The sandbox's network identity (`network` in the start configuration): envd writes `/etc/hostname`,
/// `/etc/hosts` and `/etc/resolv.conf` from it. Fields in alphabetical order (see [`InitRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkIdentity {
    #[serde(default)]
    pub address: Option<IpAddr>,
    pub hostname: String,
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
}

fn lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<NetworkIdentity>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn full() -> InitRequest {
        InitRequest {
            access_token: Some("tok".into()),
            default_user: Some("user".into()),
            default_workdir: Some("/home/user".into()),
            egress_ca: None,
            env_vars: Some(BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())])),
            envd_secret: Some("s3cret".into()),
            network: Some(NetworkIdentity {
                address: Some(IpAddr::V4(Ipv4Addr::new(10, 11, 0, 2))),
                hostname: "sbx1".into(),
                nameservers: vec![IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)), IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))],
            }),
            pooled: None,
            sandbox_id: Some("sbx1".into()),
        }
    }

    /// The bytes the runtime wrote before this type existed (its `serde_json::json!` object, keys sorted).
    #[test]
    fn start_configuration_bytes_are_unchanged() {
        let expected = r#"{"accessToken":"tok","defaultUser":"user","defaultWorkdir":"/home/user","envVars":{"A":"1","B":"2"},"envdSecret":"s3cret","network":{"address":"10.11.0.2","hostname":"sbx1","nameservers":["1.1.1.1","8.8.8.8"]},"sandboxId":"sbx1"}"#;
        assert_eq!(serde_json::to_string(&full()).unwrap(), expected);
        // The same object as the old builder made it, for a sandbox with no token and no secret.
        let old = serde_json::json!({
            "envVars": {"A": "1", "B": "2"},
            "defaultUser": "user",
            "defaultWorkdir": "/home/user",
            "sandboxId": "sbx1",
            "network": {"hostname": "sbx1", "address": "10.11.0.2", "nameservers": ["1.1.1.1", "8.8.8.8"]},
        });
        let new = InitRequest { access_token: None, envd_secret: None, ..full() };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
    }

    #[test]
    fn round_trips_and_the_secret_sits_in_its_field() {
        let json = serde_json::to_value(full()).unwrap();
        assert_eq!(json[crate::envd_secret::INIT_FIELD], "s3cret");
        assert_eq!(serde_json::from_value::<InitRequest>(json).unwrap(), full());
    }

    #[test]
    fn e2b_bodies_parse_and_unknown_fields_are_ignored() {
        let body = r#"{"envVars":{"X":"y"},"accessToken":"t","timestamp":"2024-01-01T00:00:00Z","volumeMounts":[],"hyperloopIP":"10.0.0.1"}"#;
        let init: InitRequest = serde_json::from_str(body).unwrap();
        assert_eq!(init.access_token.as_deref(), Some("t"));
        assert_eq!(init.env_vars.unwrap()["X"], "y");
        assert_eq!(serde_json::from_str::<InitRequest>("{}").unwrap(), InitRequest::default());
        assert_eq!(serde_json::to_string(&InitRequest::default()).unwrap(), "{}");
    }

    #[test]
    fn network_is_optional_and_a_malformed_one_reads_as_absent() {
        let raw = r#"{"envVars":{},"network":{"hostname":"abc","address":"10.1.2.3","nameservers":["1.1.1.1"]}}"#;
        let n = serde_json::from_str::<InitRequest>(raw).unwrap().network.unwrap();
        assert_eq!(
            (n.hostname.as_str(), n.address.unwrap().to_string(), n.nameservers.len()),
            ("abc", "10.1.2.3".into(), 1)
        );
        assert!(serde_json::from_str::<InitRequest>(r#"{"envVars":{}}"#).unwrap().network.is_none());
        for bad in [r#""x""#, "5", r#"{"address":"nope","hostname":"a"}"#, r#"{"address":"10.0.0.1"}"#] {
            let init: InitRequest = serde_json::from_str(&format!(r#"{{"sandboxId":"s","network":{bad}}}"#)).unwrap();
            assert_eq!((init.network, init.sandbox_id.as_deref()), (None, Some("s")), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", full());
        assert!(!shown.contains("tok\"") && !shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sbx1"));
    }

    #[test]
    fn command_line_names_port_and_ready_fd() {
        assert_eq!(command_line("/envd", 3), ["/envd", "--port", "49983", "--ready-fd", "3"]);
    }
}
