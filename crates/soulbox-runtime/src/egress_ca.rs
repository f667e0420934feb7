//! The installation's egress CA (issue 14): the certificate authority the node's egress gateway signs its
//! certificates with when it terminates a sandbox's TLS to a host with header rules. Sandboxes trust it (envd puts
//! the certificate, never the key, into their trust stores); nothing else should.
//!
//! One CA per installation: the control plane keeps it in its store (the key sealed like a secret) and every node
//! of the installation gets the same, so a sandbox that moves between nodes keeps trusting the gateway it talks to.
//!
//! Issuing needs no parsing of the CA certificate: the issuer is rebuilt from the key (its name carries a hash of
//! the public key, and rcgen derives the key identifiers from the key), so it is exactly the CA's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use sha2::Digest;
use time::{Duration, OffsetDateTime};

/// A leaf certificate lives this long; the gateway issues a new one after half of it.
const LEAF_LIFETIME: Duration = Duration::days(2);
/// Most leaf certificates kept (one per intercepted name).
const MAX_CACHED: usize = 4096;
/// The CA certificate's lifetime.
const CA_LIFETIME: Duration = Duration::days(3650);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("egress CA: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("egress CA: {0}")]
    Tls(#[from] rustls::Error),
}

/// The CA as PEM text: how it is stored, configured and passed to nodes.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

impl CaPem {
    /// A new CA (ECDSA P-256).
    pub fn generate() -> Result<CaPem, CaError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(&key);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key)?;
        Ok(CaPem { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// The CA's subject and extensions, a function of its key alone.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id = hex(&sha2::Sha256::digest(key.public_key_pem())[..6]);
    params.distinguished_name.push(DnType::OrganizationName, "SoulBox");
    params.distinguished_name.push(DnType::CommonName, format!("SoulBox egress CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Issues the gateway's certificates (one per name, cached until half its life is gone).
pub(crate) struct Signer {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) ca_der: rustls::pki_types::CertificateDer<'static>,
    /// One key for every leaf: a sandbox learns nothing from it, and signing a certificate is all a new name costs.
    leaf_key: KeyPair,
    leaf_key_der: Vec<u8>,
    cache: Mutex<HashMap<String, (OffsetDateTime, Arc<rustls::sign::CertifiedKey>)>>,
}

impl Signer {
    pub(crate) fn new(ca: &CaPem) -> Result<Signer, CaError> {
        let key = KeyPair::from_pem(&ca.key_pem)?;
        let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
            .map_err(|e| CaError::Tls(rustls::Error::General(format!("the CA certificate: {e}"))))?;
        let issuer = Issuer::new(ca_params(&key), key);
        let leaf_key = KeyPair::generate()?;
        let leaf_key_der = leaf_key.serialize_der();
        let signer = Signer { issuer, ca_der, leaf_key, leaf_key_der, cache: Mutex::new(HashMap::new()) };
        Ok(signer)
    }

    /// The certificate chain and key the gateway shows a sandbox that asked for `name` (a host name or an IPv4
    /// address).
    pub(crate) fn certified_key(&self, name: &str) -> Result<Arc<rustls::sign::CertifiedKey>, CaError> {
        let now = OffsetDateTime::now_utc();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((renew_at, key)) = cache.get(name)
            && now < *renew_at
        {
            return Ok(key.clone());
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_owned().try_into()?),
        }];
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + LEAF_LIFETIME;
        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        let provider = rustls::crypto::ring::default_provider();
        let private = rustls::pki_types::PrivateKeyDer::try_from(self.leaf_key_der.clone())
            .map_err(|e| CaError::Tls(rustls::Error::General(e.into())))?;
        let signing = provider.key_provider.load_private_key(private)?;
        let key = Arc::new(rustls::sign::CertifiedKey::new(vec![cert.der().clone(), self.ca_der.clone()], signing));
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(name.to_owned(), (now + LEAF_LIFETIME / 2, key.clone()));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn leaves_verify_against_the_ca() {
        let ca = CaPem::generate().unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"), "the key never reaches a log");

        let signer = Signer::new(&ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(signer.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        for name in ["api.example.com", "203.0.113.5"] {
            let key = signer.certified_key(name).unwrap();
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&key.cert[0], &key.cert[1..], &server, &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(Arc::ptr_eq(&key, &signer.certified_key(name).unwrap()), "cached");
        }
        let other = rustls::pki_types::ServerName::try_from("other.example.com").unwrap();
        let key = signer.certified_key("api.example.com").unwrap();
        assert!(
            verifier.verify_server_cert(&key.cert[0], &[], &other, &[], rustls::pki_types::UnixTime::now()).is_err()
        );
        // Another installation's CA does not vouch for these.
        let stranger = Signer::new(&CaPem::generate().unwrap()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(stranger.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let server = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
        assert!(
            verifier.verify_server_cert(&key.cert[0], &[], &server, &[], rustls::pki_types::UnixTime::now()).is_err()
        );
    }
}
