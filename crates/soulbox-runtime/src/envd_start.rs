//! envd's start configuration for one sandbox boot: the [`InitRequest`] the runtime passes in
//! `SOULBOX_ENVD_INIT` (`soulbox_protocol::envd_init`).

use std::net::Ipv4Addr;

use soulbox_protocol::envd_init::{InitRequest, NetworkIdentity};

use crate::envd_secret::EnvdSecret;
use crate::spec::SandboxSpec;
use crate::template::TemplateMeta;

/// The template's environment overlaid by the create's, the template's default user and workdir, the create's
/// access token, the node's secret and the sandbox's network identity (its id as hostname).
pub fn start_configuration(
    id: &str,
    meta: &TemplateMeta,
    spec: &SandboxSpec,
    secret: Option<&EnvdSecret>,
    address: Ipv4Addr,
    nameservers: &[Ipv4Addr],
) -> InitRequest {
    let mut env_vars = meta.env.clone();
    env_vars.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    InitRequest {
        access_token: spec.access_token.clone(),
        default_user: Some(meta.default_user.clone()),
        default_workdir: Some(meta.default_workdir.clone()),
        egress_ca: None,
        env_vars: Some(env_vars),
        envd_secret: secret.map(|s| s.expose().to_owned()),
        network: Some(NetworkIdentity {
            address: Some(address.into()),
            hostname: id.to_owned(),
            nameservers: nameservers.iter().map(|&d| d.into()).collect(),
        }),
        pooled: None,
        sandbox_id: Some(id.to_owned()),
    }
}

/// `init` with the installation's egress CA for envd to install, and the variables that point tools at the trust
/// store holding it (where the template or the create did not set them).
pub fn with_egress_ca(mut init: InitRequest, cert_pem: Option<&str>) -> InitRequest {
    let Some(pem) = cert_pem else { return init };
    init.egress_ca = Some(pem.to_owned());
    let env = init.env_vars.get_or_insert_with(Default::default);
    for (name, path) in soulbox_protocol::envd_init::egress_ca_env() {
        env.entry(name.to_owned()).or_insert_with(|| path.to_owned());
    }
    init
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// How the runtime built this JSON before the protocol had a type for it (lifecycle.rs, verbatim but for
    /// the names of its inputs): the oracle for "the bytes envd receives did not change".
    fn old_builder(
        id: &str,
        meta: &TemplateMeta,
        spec: &SandboxSpec,
        secret: Option<&EnvdSecret>,
        ip: Ipv4Addr,
        dns: &[Ipv4Addr],
    ) -> String {
        let mut env_vars: serde_json::Map<String, serde_json::Value> =
            meta.env.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        for (k, v) in &spec.env {
            env_vars.insert(k.clone(), v.clone().into());
        }
        let mut init = serde_json::json!({
            "envVars": env_vars,
            "defaultUser": meta.default_user,
            "defaultWorkdir": meta.default_workdir,
            "sandboxId": id,
            "network": {
                "hostname": id,
                "address": ip.to_string(),
                "nameservers": dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
        });
        if let Some(t) = &spec.access_token {
            init["accessToken"] = t.clone().into();
        }
        if let Some(secret) = secret {
            init["envdSecret"] = secret.expose().into();
        }
        init.to_string()
    }

    fn meta() -> TemplateMeta {
        TemplateMeta {
            name: "base".into(),
            layers: vec![],
            default_user: "user".into(),
            default_workdir: "/home/user".into(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin".into()), ("LANG".into(), "C.UTF-8".into())]),
            start_cmd: None,
            ready_cmd: None,
            cpu_count: 2,
            memory_mb: 512,
            disk_mb: None,
            recipe_hash: "h".into(),
            parent: None,
            runtime: None,
        }
    }

    #[test]
    fn bytes_are_those_the_runtime_wrote_before() {
        let secret = EnvdSecret::generate();
        let dns = [Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)];
        let ip = Ipv4Addr::new(10, 11, 0, 7);
        let mut spec = SandboxSpec::new("base");
        spec.env = BTreeMap::from([("LANG".into(), "en_US.UTF-8".into()), ("A \"quoted\" key".into(), "ü\n".into())]);
        let mut no_token = spec.clone();
        spec.access_token = Some("tok".into());
        for (spec, secret, dns) in [(&spec, Some(&secret), &dns[..]), (&no_token, None, &[][..])] {
            let new = serde_json::to_string(&start_configuration("sbx-1", &meta(), spec, secret, ip, dns)).unwrap();
            assert_eq!(new, old_builder("sbx-1", &meta(), spec, secret, ip, dns));
        }
        no_token.env.clear();
        let new = serde_json::to_string(&start_configuration("sbx-2", &meta(), &no_token, None, ip, &dns)).unwrap();
        assert_eq!(new, old_builder("sbx-2", &meta(), &no_token, None, ip, &dns));
        assert!(new.contains(r#""envVars":{"LANG":"C.UTF-8","PATH":"/usr/bin"}"#), "{new}");
    }

    #[test]
    fn the_egress_ca_comes_with_its_variables_unless_set() {
        let init = InitRequest {
            env_vars: Some([("SSL_CERT_FILE".to_string(), "/mine.pem".to_string())].into()),
            ..Default::default()
        };
        let init = with_egress_ca(init, Some("PEM"));
        assert_eq!(init.egress_ca.as_deref(), Some("PEM"));
        let env = init.env_vars.unwrap();
        assert_eq!(env["SSL_CERT_FILE"], "/mine.pem", "the user's own value wins");
        assert_eq!(env["REQUESTS_CA_BUNDLE"], soulbox_protocol::envd_init::EGRESS_CA_BUNDLE_FILE);
        assert_eq!(env["NODE_EXTRA_CA_CERTS"], soulbox_protocol::envd_init::EGRESS_CA_FILE);
        assert_eq!(with_egress_ca(InitRequest::default(), None), InitRequest::default());
    }
}
