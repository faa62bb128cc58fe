//! Cluster mode without a cluster: objects made with the operator's own writers
//! ([`uprox_crds::cluster`]), assembled, and fed to the watch state as events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::watcher::Event;
use uprox_crds::bundle::BundleError;
use uprox_crds::cluster::{
    CONFIG_DIGEST_ANNOTATION, ReadError, config_maps, keys_fingerprint, keys_secret, master_key_secret,
};
use uprox_crds::compile::{Compiled, compile};
use uprox_crds::config::{CONFIG_VERSION, KeyMaterial};
use uprox_crds::sealed::{MasterKey, SealError, seal_keys};

use super::assemble::{AssembleError, Objects, assemble};
use super::watch::{Change, State};
use crate::app::{Gateway, Settings};
use crate::standalone::manifests::{Manifests, load_text};

const NS: &str = "uprox-system";
const TOKEN: &str = "uprox_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const KEY: &str = "sk-cluster-test-0123456789";

/// A team with an openai-compatible Provider (one key), a mock Provider, a Service and, when
/// `token`, a MachineToken holding [`TOKEN`].
fn compiled(key: &str, token: bool) -> Compiled {
    let mut yaml = format!(
        r#"
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: upstream, namespace: team}}
spec:
  type: openai-compatible
  baseUrl: "http://127.0.0.1:9/v1"
  models: ["gpt-*"]
  keys: [{{label: main, secretRef: {{name: upstream-key, key: apiKey}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-key, namespace: team}}
stringData: {{apiKey: "{key}"}}
---
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {{name: mock, namespace: team}}
spec: {{type: mock}}
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {{name: app, namespace: team}}
spec: {{}}
"#
    );
    if token {
        yaml.push_str(&format!(
            r#"
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: app, namespace: team}}
spec: {{service: app, secretName: app-token}}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-token
  namespace: team
  labels: {{uprox.dev/machine-token: app}}
  annotations: {{uprox.dev/rotation: "0"}}
stringData: {{token: "{TOKEN}"}}
"#
        ));
    }
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_text("test", &yaml, &mut manifests, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let compiled = compile(&manifests.resources.inputs());
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    compiled
}

fn master() -> MasterKey {
    MasterKey::from_bytes([7; 32])
}

fn sealed(master: &MasterKey, material: &KeyMaterial) -> Secret {
    let mut n = 0u8;
    let sealed = seal_keys(master, material, || {
        n += 1;
        [n; 12]
    })
    .unwrap();
    keys_secret(NS, &sealed, &keys_fingerprint(master, material))
}

fn with_version<T: kube::Resource>(mut object: T, version: &str) -> T {
    object.meta_mut().resource_version = Some(version.to_owned());
    object
}

/// The manifest and its parts, cut small so the config spans several parts.
fn config_objects(compiled: &Compiled) -> (ConfigMap, Vec<ConfigMap>) {
    let json = serde_json::to_vec(&compiled.config).unwrap();
    config_maps(NS, &json, 300)
}

/// Every object the operator writes for `compiled`.
fn objects(compiled: &Compiled) -> Objects {
    let mut objects = Objects::default();
    let (manifest, parts) = config_objects(compiled);
    assert!(parts.len() > 1, "the tests want a config in several parts");
    for part in parts {
        objects.put_config_map(part);
    }
    objects.put_config_map(manifest);
    objects.put_secret(with_version(sealed(&master(), &compiled.keys), "1"));
    objects.put_secret(with_version(master_key_secret(NS, &master()), "1"));
    objects
}

#[test]
fn a_complete_set_builds_the_snapshot() {
    let compiled = compiled(KEY, true);
    let assembled = assemble(&objects(&compiled)).unwrap();
    let snapshot = &assembled.snapshot;
    let token = snapshot.token(&uprox_crds::token::digest(TOKEN)).expect("the token is live");
    assert_eq!(token.id.to_string(), "team/app");
    assert_eq!(snapshot.token_count(), 1);
    assert_eq!(snapshot.providers.len(), 2);
    let upstream = snapshot.providers.iter().find(|p| p.config.id.name == "upstream").unwrap();
    assert_eq!(upstream.keys[0].auth.to_str().unwrap(), format!("Bearer {KEY}"));
    assert_eq!(assembled.counts.providers, 2);
    assert_eq!(assembled.counts.keys, 1);
    assert_eq!(assembled.counts.tokens, 1);
    let json = serde_json::to_vec(&compiled.config).unwrap();
    let (manifest, _) = config_maps(NS, &json, 300);
    assert_eq!(
        &assembled.revision.config,
        manifest.metadata.annotations.as_ref().unwrap().get(CONFIG_DIGEST_ANNOTATION).unwrap()
    );
    assert_eq!(assembled.revision.keys.as_deref(), Some("1"));
}

#[test]
fn without_a_manifest_there_is_nothing_yet() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    objects.remove_config_map("uprox-config");
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(err, AssembleError::NoManifest), "{err}");
    assert!(err.is_pending());
    assert!(objects.revision().is_none());
    assert!(assemble(&Objects::default()).is_err());
}

#[test]
fn a_missing_part_is_not_consistent_yet() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    objects.remove_config_map("uprox-config-1");
    let err = assemble(&objects).unwrap_err();
    assert!(
        matches!(&err, AssembleError::Config(ReadError::Bundle(BundleError::MissingPart(p))) if p == "uprox-config-1"),
        "{err}"
    );
    assert!(err.is_pending());
}

#[test]
fn a_part_of_another_generation_is_not_consistent_yet() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    // The operator has written the parts of a config without the token, not yet its manifest.
    let (_, older_parts) = config_objects(&compiled);
    let (_, newer_parts) = config_objects(&self::compiled(KEY, false));
    let changed = newer_parts.into_iter().zip(older_parts).find(|(new, old)| new.data != old.data).unwrap().0;
    objects.put_config_map(changed);
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(&err, AssembleError::Config(ReadError::Bundle(BundleError::Corrupt(_)))), "{err}");
    assert!(err.is_pending());
}

#[test]
fn missing_secrets_are_reported_by_name() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    objects.remove_secret("uprox-master-key");
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(err, AssembleError::NoMasterKey) && err.to_string().contains("uprox-master-key"), "{err}");

    let mut objects = self::objects(&compiled);
    objects.remove_secret("uprox-provider-keys");
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(err, AssembleError::NoKeys) && err.to_string().contains("uprox-provider-keys"), "{err}");
    assert!(err.is_pending());
}

#[test]
fn a_wrong_master_key_is_refused_without_quoting_secrets() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    objects.put_secret(with_version(master_key_secret(NS, &MasterKey::from_bytes([8; 32])), "2"));
    let err = assemble(&objects).unwrap_err();
    assert!(
        matches!(&err, AssembleError::Keys(ReadError::Seal(SealError::Key { source, .. })) if **source == SealError::Authentication),
        "{err}"
    );
    assert!(!err.is_pending());
    let text = format!("{err} {err:?} {objects:?}");
    assert!(!text.contains(KEY) && !text.contains(master().to_base64().expose()), "{text}");

    let mut garbage = master_key_secret(NS, &master());
    garbage.data = Some(BTreeMap::from([("key".to_owned(), k8s_openapi::ByteString(b"not a key".to_vec()))]));
    objects.put_secret(garbage);
    assert!(matches!(assemble(&objects), Err(AssembleError::MasterKey(_))));
}

#[test]
fn a_key_the_sealed_map_lacks_is_not_consistent_yet() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    objects.put_secret(with_version(sealed(&master(), &KeyMaterial::default()), "2"));
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(&err, AssembleError::KeyNotSealed { id } if id == "team/upstream/main"), "{err}");
    assert!(err.is_pending());
    // Extra sealed keys (for a manifest still on its way) are fine.
    let mut material = compiled.keys.clone();
    material.0.insert("team/other/new".to_owned(), uprox_crds::secret::SecretString::new("sk-new"));
    objects.put_secret(with_version(sealed(&master(), &material), "3"));
    assert!(assemble(&objects).is_ok());
}

#[test]
fn a_config_of_another_version_is_refused() {
    let mut compiled = compiled(KEY, true);
    compiled.config.version = CONFIG_VERSION + 1;
    let mut objects = objects(&compiled);
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(&err, AssembleError::Config(ReadError::Version(v)) if *v == CONFIG_VERSION + 1), "{err}");
    assert!(!err.is_pending());

    let (mut manifest, _) = config_objects(&self::compiled(KEY, true));
    manifest.data = Some(BTreeMap::from([("manifest.json".to_owned(), r#"{"version":9,"parts":[]}"#.to_owned())]));
    objects.put_config_map(manifest);
    let err = assemble(&objects).unwrap_err();
    assert!(matches!(&err, AssembleError::Config(ReadError::Bundle(BundleError::UnknownVersion(9)))), "{err}");
    assert!(!err.is_pending());
}

#[test]
fn revisions_follow_the_digest_and_the_secret_versions() {
    let compiled = compiled(KEY, true);
    let mut objects = objects(&compiled);
    let first = objects.revision().unwrap();
    assert!(first.same_as(&objects.revision().unwrap()));
    objects.put_secret(with_version(sealed(&master(), &compiled.keys), "5"));
    assert!(!first.same_as(&objects.revision().unwrap()));
    let (manifest, _) = config_objects(&self::compiled(KEY, false));
    objects.put_config_map(manifest);
    assert_ne!(first.config, objects.revision().unwrap().config);
    // Without resourceVersions nothing is assumed unchanged.
    let mut bare = Objects::default();
    let (manifest, _) = config_objects(&compiled);
    bare.put_config_map(manifest);
    bare.put_secret(master_key_secret(NS, &master()));
    assert!(!bare.revision().unwrap().same_as(&bare.revision().unwrap()));
}

/// Feeds the watch state one object per event, as the API would.
fn feed(state: &mut State, objects_of: &Compiled, keys_version: &str) {
    let (manifest, parts) = config_objects(objects_of);
    for part in parts {
        state.apply(Change::ConfigMap(Ok(Event::Apply(part))));
    }
    state.apply(Change::Secret(Ok(Event::Apply(with_version(sealed(&master(), &objects_of.keys), keys_version)))));
    state.apply(Change::ConfigMap(Ok(Event::Apply(manifest))));
}

#[test]
fn the_watch_state_waits_for_both_lists_then_installs_and_skips_repeats() {
    let gateway = Gateway::new(Settings::default());
    let mut state = State::new(NS.to_owned());
    let with_token = compiled(KEY, true);
    let (manifest, parts) = config_objects(&with_token);
    state.apply(Change::ConfigMap(Ok(Event::Init)));
    for cm in parts.into_iter().chain([manifest]) {
        state.apply(Change::ConfigMap(Ok(Event::InitApply(cm))));
    }
    state.apply(Change::ConfigMap(Ok(Event::InitDone)));
    state.reconcile(&gateway);
    assert!(!gateway.is_ready(), "the Secrets are not listed yet");

    state.apply(Change::Secret(Ok(Event::Init)));
    state.apply(Change::Secret(Ok(Event::InitApply(with_version(sealed(&master(), &with_token.keys), "1")))));
    state.apply(Change::Secret(Ok(Event::InitApply(with_version(master_key_secret(NS, &master()), "1")))));
    state.reconcile(&gateway);
    assert!(!gateway.is_ready(), "the Secret list is not complete yet");
    state.apply(Change::Secret(Ok(Event::InitDone)));
    state.reconcile(&gateway);
    let first = gateway.snapshot().expect("installed once both lists are complete");
    assert_eq!(first.token_count(), 1);

    // The same objects again (a re-list): nothing is rebuilt.
    feed(&mut state, &with_token, "1");
    state.reconcile(&gateway);
    assert!(Arc::ptr_eq(&first, &gateway.snapshot().unwrap()));

    // A config without the token replaces it.
    feed(&mut state, &compiled(KEY, false), "1");
    state.reconcile(&gateway);
    assert_eq!(gateway.snapshot().unwrap().token_count(), 0);
}

#[test]
fn the_watch_state_keeps_the_last_good_snapshot() {
    let gateway = Gateway::new(Settings::default());
    let mut state = State::new(NS.to_owned());
    for change in [
        Change::ConfigMap(Ok(Event::Init)),
        Change::ConfigMap(Ok(Event::InitDone)),
        Change::Secret(Ok(Event::Init)),
        Change::Secret(Ok(Event::InitApply(with_version(master_key_secret(NS, &master()), "1")))),
        Change::Secret(Ok(Event::InitDone)),
    ] {
        state.apply(change);
    }
    state.reconcile(&gateway);
    assert!(!gateway.is_ready(), "no manifest: not ready, still watching");

    let good = compiled(KEY, true);
    feed(&mut state, &good, "1");
    state.reconcile(&gateway);
    let served = gateway.snapshot().unwrap();

    // A manifest whose first part is gone.
    let (manifest, _) = config_objects(&compiled(KEY, false));
    state.apply(Change::ConfigMap(Ok(Event::Delete(config_objects(&good).1.remove(0)))));
    state.apply(Change::ConfigMap(Ok(Event::Apply(manifest))));
    state.reconcile(&gateway);
    assert!(Arc::ptr_eq(&served, &gateway.snapshot().unwrap()), "the last good snapshot keeps serving");
    // Half-written for a moment is normal; a warning is due only when it lasts.
    assert!(state.grace_deadline().is_some());
    state.grace_expired();
    assert!(state.grace_deadline().is_none(), "warned once");

    // A re-list that no longer holds the master key.
    state.apply(Change::Secret(Ok(Event::Init)));
    state.apply(Change::Secret(Ok(Event::InitDone)));
    state.reconcile(&gateway);
    assert!(Arc::ptr_eq(&served, &gateway.snapshot().unwrap()));

    // A new key value takes effect.
    state.apply(Change::Secret(Ok(Event::Apply(with_version(master_key_secret(NS, &master()), "2")))));
    feed(&mut state, &compiled("sk-rotated", true), "3");
    state.reconcile(&gateway);
    let now = gateway.snapshot().unwrap();
    assert!(!Arc::ptr_eq(&served, &now));
    let upstream = now.providers.iter().find(|p| p.config.id.name == "upstream").unwrap();
    assert_eq!(upstream.keys[0].auth.to_str().unwrap(), "Bearer sk-rotated");
    assert!(state.grace_deadline().is_none());
}
