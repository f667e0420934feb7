//! Pulling an image from an OCI registry with `oci-client`: anonymous, basic or bearer auth per registry host,
//! plain HTTP only for configured insecure hosts and loopback, a multi-arch index resolved to linux/amd64,
//! every blob streamed to a temp file and verified against its digest (oci-client checks while it streams),
//! then unpacked by [`super::image::import_layers`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use soulbox_runtime::Store;

use super::egress::{EgressPolicy, EgressProxy};
use super::image::{
    self, BlobSource, Descriptor, FetchedBlob, ImageConfig, ImageError, ImportedImage, Progress, human_size, short,
};
use super::source::ImageRef;

/// An image config blob is small; a bigger one is refused before download.
const MAX_CONFIG_BYTES: i64 = 16 << 20;

/// Credentials for one registry host (the server config's `[templates.registry_auth."<host>"]`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum RegistryCredential {
    Basic { username: String, password: String },
    Bearer { token: String },
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryCredential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            RegistryCredential::Bearer { .. } => write!(f, "Bearer(***)"),
        }
    }
}

/// How the engine talks to registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Hosts (`host[:port]`) reached over plain HTTP. Loopback hosts always are.
    pub insecure: Vec<String>,
    /// Credentials by registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`); others are pulled anonymously.
    pub auth: BTreeMap<String, RegistryCredential>,
    /// More hosts a pull may reach at loopback, link-local or private addresses (e.g. the blob store a private
    /// registry redirects to; the config's rewrite targets are added here).
    pub private_hosts: Vec<String>,
}

impl RegistrySettings {
    /// Every host the administrator named: only these may be reached at non-public addresses.
    pub fn egress_policy(&self) -> EgressPolicy {
        EgressPolicy::new(self.insecure.iter().chain(self.auth.keys()).chain(self.private_hosts.iter()).cloned())
    }
}

/// Whether `host[:port]` is a loopback address or `localhost`.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { registry })
            .unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// oci-client's reqwest uses rustls without a built-in crypto provider: install ring (once per process).
fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

fn client_config(registry: &str, settings: &RegistrySettings) -> ClientConfig {
    ensure_crypto_provider();
    let mut http_hosts = settings.insecure.clone();
    if is_loopback(registry) {
        http_hosts.push(registry.to_string());
    }
    ClientConfig {
        protocol: ClientProtocol::HttpsExcept(http_hosts),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(300)),
        ..Default::default()
    }
}

/// A direct oci-client for `registry` under `settings`, without the egress policy: for tests that push.
pub fn client_for(registry: &str, settings: &RegistrySettings) -> Client {
    Client::new(client_config(registry, settings))
}

/// An oci-client whose every connection goes through `egress` (the policy-checking proxy).
fn pulling_client(registry: &str, settings: &RegistrySettings, egress: &EgressProxy) -> Result<Client, ImageError> {
    let mut config = client_config(registry, settings);
    config.http_proxy = Some(egress.url().to_string());
    config.https_proxy = Some(egress.url().to_string());
    config.no_proxy = None;
    Client::try_from(config).map_err(|e| ImageError::Registry(format!("creating the registry client: {e}")))
}

pub fn auth_for(registry: &str, settings: &RegistrySettings) -> RegistryAuth {
    match settings.auth.get(registry) {
        Some(RegistryCredential::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Some(RegistryCredential::Bearer { token }) => RegistryAuth::Bearer(token.clone()),
        None => RegistryAuth::Anonymous,
    }
}

pub fn reference(image: &ImageRef) -> Reference {
    match (&image.tag, &image.digest) {
        (Some(tag), Some(d)) => {
            Reference::with_tag_and_digest(image.registry.clone(), image.repository.clone(), tag.clone(), d.clone())
        }
        (_, Some(d)) => Reference::with_digest(image.registry.clone(), image.repository.clone(), d.clone()),
        (tag, None) => Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// A registry error; when the egress policy refused a connection, the reason (which names the setting) too.
fn registry_err<'a>(
    what: &'a str,
    egress: &'a EgressProxy,
) -> impl Fn(oci_client::errors::OciDistributionError) -> ImageError + 'a {
    move |e| match egress.last_refusal() {
        Some(why) => ImageError::Registry(format!("{what}: {e} (refused: {why})")),
        None => ImageError::Registry(format!("{what}: {e}")),
    }
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor { media_type: d.media_type.clone(), digest: d.digest.clone(), size: d.size, ..Default::default() }
}

struct RegistryBlobs {
    client: Client,
    reference: Reference,
    egress: EgressProxy,
}

#[async_trait::async_trait]
impl BlobSource for RegistryBlobs {
    async fn fetch(&self, layer: &Descriptor, scratch: &Path) -> Result<FetchedBlob, ImageError> {
        let (_, hex) = image::check_digest(&layer.digest)?;
        let path = scratch.join(hex);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|source| ImageError::Io { path: path.display().to_string(), source })?;
        // oci-client hashes the stream as it writes it and fails on a digest mismatch.
        self.client
            .pull_blob(&self.reference, &oci_descriptor(layer), file)
            .await
            .map_err(registry_err(&format!("downloading layer {}", short(&layer.digest)), &self.egress))?;
        Ok(FetchedBlob { path, temp: true, held: None })
    }
    fn verb(&self) -> &'static str {
        "downloaded"
    }
}

/// Pulls `image` into the layer store.
pub async fn pull(
    store: &Store,
    settings: &RegistrySettings,
    image: &ImageRef,
    progress: Progress<'_>,
) -> Result<ImportedImage, ImageError> {
    progress(format!("pull {image}"));
    let egress = EgressProxy::start(settings.egress_policy())
        .await
        .map_err(|e| ImageError::Registry(format!("starting the egress proxy: {e}")))?;
    let client = pulling_client(&image.registry, settings, &egress)?;
    let auth = auth_for(&image.registry, settings);
    let reference = reference(image);
    let (manifest, digest, list_digest) = client
        .pull_image_manifest_and_list_digest(&reference, &auth)
        .await
        .map_err(registry_err(&format!("manifest of {image}"), &egress))?;
    let total: i64 = manifest.layers.iter().map(|l| l.size.max(0)).sum();
    match list_digest {
        Some(list) => progress(format!(
            "index {} → linux/amd64 manifest {} ({} layers, {})",
            short(&list),
            short(&digest),
            manifest.layers.len(),
            human_size(total as u64)
        )),
        None => progress(format!(
            "manifest {} ({} layers, {})",
            short(&digest),
            manifest.layers.len(),
            human_size(total as u64)
        )),
    }
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(ImageError::Invalid(format!("the image config is {} bytes", manifest.config.size)));
    }
    image::check_digest(&manifest.config.digest)?;
    let mut config_json: Vec<u8> = Vec::new();
    client
        .pull_blob(&reference, &manifest.config, &mut config_json)
        .await
        .map_err(registry_err("image config", &egress))?;
    let config = ImageConfig::parse(&config_json)?;
    let layers: Vec<Descriptor> = manifest
        .layers
        .iter()
        .map(|l| Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
            platform: None,
        })
        .collect();
    let source = RegistryBlobs { client, reference, egress };
    let layers = image::import_layers(store, &layers, &config.diff_ids, &source, progress).await?;
    Ok(ImportedImage { layers, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "ghcr.io:443", "[fe80::1]:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn credentials_parse_from_toml_and_never_print_secrets() {
        let m: BTreeMap<String, RegistryCredential> =
            toml::from_str("[\"ghcr.io\"]\nusername = \"u\"\npassword = \"p\"\n[\"r.example\"]\ntoken = \"t\"\n")
                .unwrap();
        assert_eq!(m["ghcr.io"], RegistryCredential::Basic { username: "u".into(), password: "p".into() });
        assert_eq!(m["r.example"], RegistryCredential::Bearer { token: "t".into() });
        assert_eq!(format!("{:?}", m["ghcr.io"]), "Basic(u, ***)");
        assert_eq!(format!("{:?}", m["r.example"]), "Bearer(***)");
        let settings = RegistrySettings { auth: m, ..Default::default() };
        assert!(matches!(auth_for("ghcr.io", &settings), RegistryAuth::Basic(..)));
        assert!(matches!(auth_for("docker.io", &settings), RegistryAuth::Anonymous));
    }
}
