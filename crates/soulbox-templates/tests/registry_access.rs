//! Registry pulls from Debian's `docker-registry` on a free loopback port: basic auth from the config, and a
//! loopback registry the config does not name is refused before any request reaches it. Need root (the image
//! has whiteouts: mknod), `/usr/bin/docker-registry` and `/bin/busybox`; skip with a message otherwise.
mod image_fixture;

use std::path::Path;

use soulbox_runtime::Store;
use soulbox_templates::{image, registry};

use image_fixture::*;

/// Basic auth against a registry that requires it (htpasswd): the configured credentials pull, no credentials
/// and wrong ones fail with nothing cached. Needs no runtime (the image is imported into a temp store).
#[tokio::test]
async fn registry_basic_auth_from_the_config() {
    if !Path::new(REGISTRY_BIN).exists() || !Path::new("/bin/busybox").exists() {
        eprintln!(
            "SKIP registry_basic_auth_from_the_config: needs {REGISTRY_BIN} (docker-registry) and /bin/busybox (busybox-static)"
        );
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP registry_basic_auth_from_the_config: needs root (the image has whiteouts: mknod)");
        return;
    }
    let img = build_image();
    let reg = Registry::start_with(Some(("puller", "s3cret"))).await;
    push_as(&reg, &img, oci_client::secrets::RegistryAuth::Basic("puller".into(), "s3cret".into())).await;
    let store_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = Store::new(store_dir.path()).unwrap();
    let image_ref = soulbox_templates::source::ImageRef::parse(&format!("{}/test/img:1", reg.addr)).unwrap();
    let quiet = |_: String| {};
    let named = registry::RegistrySettings { insecure: vec![reg.addr.clone()], ..Default::default() };
    let anonymous = registry::pull(&store, &named, &image_ref, &quiet).await.unwrap_err();
    assert!(anonymous.to_string().contains("manifest"), "{anonymous}");
    let cfg = |password: &str| soulbox_templates::config::TemplatesConfig {
        registry_auth: toml::from_str(&format!(
            "[\"{}\"]\nusername = \"puller\"\npassword = \"{password}\"\n",
            reg.addr
        ))
        .unwrap(),
        ..Default::default()
    };
    let wrong = registry::pull(
        &store,
        &cfg("nope").engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries,
        &image_ref,
        &quiet,
    )
    .await
    .unwrap_err();
    assert!(!wrong.to_string().contains("nope"), "no secret in errors: {wrong}");
    assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_none());
    let pulled = registry::pull(
        &store,
        &cfg("s3cret").engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries,
        &image_ref,
        &quiet,
    )
    .await
    .expect("pull with basic auth");
    assert_eq!(pulled.layers.len(), 2);
    assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_some());
    drop(reg);
}

/// Registry pulls never reach loopback (nor link-local or private) addresses unless the config names the
/// registry: an unnamed loopback registry is refused before any connection reaches it, with a message naming the
/// settings; named in `insecure_registries` (or `registry_private_hosts`, or as a rewrite target) it pulls.
/// Only loopback is used here: no traffic is ever sent to a private or metadata address.
#[tokio::test]
async fn a_loopback_registry_not_named_in_the_config_is_refused() {
    if !Path::new(REGISTRY_BIN).exists() || !Path::new("/bin/busybox").exists() || !rustix::process::geteuid().is_root()
    {
        eprintln!(
            "SKIP a_loopback_registry_not_named_in_the_config_is_refused: needs root, {REGISTRY_BIN} and /bin/busybox"
        );
        return;
    }
    let img = build_image();
    let reg = Registry::start().await;
    push(&reg, &img).await;
    let store_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = Store::new(store_dir.path()).unwrap();
    let quiet = |_: String| {};
    let image_ref = soulbox_templates::source::ImageRef::parse(&format!("{}/test/img:1", reg.addr)).unwrap();
    let log_before = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();

    for unnamed in [
        registry::RegistrySettings::default(),
        registry::RegistrySettings {
            insecure: vec!["127.0.0.1:1".into()],
            private_hosts: vec!["localhost".into()],
            ..Default::default()
        },
    ] {
        let err = registry::pull(&store, &unnamed, &image_ref, &quiet).await.unwrap_err().to_string();
        assert!(err.contains("not a public address") && err.contains("insecure_registries"), "{err}");
        assert!(image::cached_layer(&store, &img.amd64_layers[0].digest()).is_none());
    }
    let log_after = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
    let requests = |log: &str| log.matches("response completed").count();
    assert_eq!(requests(&log_before), requests(&log_after), "the registry saw no request:\n{log_after}");

    // The same registry named by a config key of each kind pulls.
    let by_private_hosts = registry::RegistrySettings { private_hosts: vec![reg.addr.clone()], ..Default::default() };
    let pulled = registry::pull(&store, &by_private_hosts, &image_ref, &quiet)
        .await
        .expect("pull from a named loopback registry");
    assert_eq!(pulled.layers.len(), 2);
    let log = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
    assert!(
        requests(&log) > requests(&log_after),
        "the log counts requests, so the check above means something:\n{log}"
    );
    let rewrite: soulbox_templates::config::TemplatesConfig =
        toml::from_str(&format!("[image_rewrites]\n\"docker.io\" = \"{}\"\n", reg.addr)).unwrap();
    let via_rewrite = rewrite.engine_config(soulbox_templates::bootstrap::DEFAULT_MIRROR).registries;
    let again = registry::pull(&store, &via_rewrite, &image_ref, &quiet).await.expect("pull from a rewrite target");
    assert_eq!(again.layers, pulled.layers);
    drop(reg);
}
