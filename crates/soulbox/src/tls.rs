//! TLS for the SDK's HTTP client: rustls with the ring provider and Mozilla's root certificates bundled, so that
//! HTTPS works on a machine without a CA store (a slim container) exactly as it did with reqwest 0.12's
//! `rustls-tls`.

use std::sync::OnceLock;

/// A client builder that trusts Mozilla's roots. reqwest (built without a crypto provider of its own) takes the
/// process default: ring is installed unless the application installed a provider first.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one in between, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder().tls_certs_only(mozilla_roots().iter().cloned())
}

fn mozilla_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_a_client_with_every_bundled_root() {
        assert_eq!(super::mozilla_roots().len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        super::client_builder().build().unwrap();
    }
}
