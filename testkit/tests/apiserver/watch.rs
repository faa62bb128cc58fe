//! Watches: kube-runtime watchers and reflectors, selectors, metadata-only, 410 recovery.

use super::*;

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.put(&config_map("existing", &[], &[]));
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();

    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(cm) if cm.name_any() == "existing"));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));

    api.create(&PostParams::default(), &config_map("a", &[], &[("k", "1")])).await.unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), "a"),
        other => panic!("expected Apply, got {other:?}"),
    }
    api.patch("a", &PatchParams::default(), &Patch::Merge(&json!({"data": {"k": "2"}}))).await.unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "2"),
        other => panic!("expected Apply, got {other:?}"),
    }
    server.remove::<ConfigMap>(None, "a");
    match next(&mut events).await.unwrap() {
        watcher::Event::Delete(cm) => assert_eq!(cm.name_any(), "a"),
        other => panic!("expected Delete, got {other:?}"),
    }
    let watch = server.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(watch.query_param("allowWatchBookmarks"), Some("true"));

    // A dropped connection is resumed from the last resource version, without a re-list.
    server.clear_requests();
    server.close_watches();
    server.put(&config_map("after-close", &[], &[]));
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), "after-close"),
        other => panic!("expected Apply, got {other:?}"),
    }
    assert!(server.requests().iter().all(|r| r.is_watch()), "resuming must not re-list");
}

#[tokio::test]
async fn watchers_with_selectors_and_streaming_lists() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.put(&config_map("in", &[("app", "gw")], &[]));
    let config = watcher::Config::default().labels("app=gw").streaming_lists();
    let mut events = watcher(api.clone(), config).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(cm) if cm.name_any() == "in"));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));

    // Leaving the selection is a deletion for this watch; entering it an addition.
    server.put(&config_map("in", &[("app", "other")], &[]));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Delete(cm) if cm.name_any() == "in"));
    server.put(&config_map("out", &[], &[]));
    server.put(&config_map("in", &[("app", "gw")], &[]));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Apply(cm) if cm.name_any() == "in"));
}

#[tokio::test]
async fn reflector_follows_changes() {
    let server = FakeApiServer::start().await;
    let api: Api<Widget> = Api::all(server.client());
    let (reader, writer) = reflector::store();
    let task = tokio::spawn(reflector(writer, watcher(api, watcher::Config::default())).for_each(|_| async {}));
    tokio::time::timeout(WAIT, reader.wait_until_ready()).await.unwrap().unwrap();

    server.put(&widget("w", 1));
    let key = ObjectRef::new("w").within("default");
    eventually("the reflector to see w", || reader.get(&key)).await;
    server.put(&widget("w", 7));
    eventually("the reflector to see the new size", || reader.get(&key).filter(|w| w.spec.size == 7)).await;
    server.remove::<Widget>(None, "w");
    eventually("the reflector to forget w", || reader.get(&key).is_none().then_some(())).await;
    task.abort();
}

#[tokio::test]
async fn metadata_requests_and_metadata_watcher() {
    let server = FakeApiServer::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), "s");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("key".into()),
            labels: Some(BTreeMap::from([("uprox.dev/provider".into(), "openai".into())])),
            ..ObjectMeta::default()
        },
        string_data: None,
        data: Some(BTreeMap::from([("token".into(), k8s_openapi::ByteString(b"sk-secret".to_vec()))])),
        ..Secret::default()
    };
    api.create(&PostParams::default(), &secret).await.unwrap();

    let meta = api.get_metadata("key").await.unwrap();
    assert_eq!(meta.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    assert_eq!(meta.labels()["uprox.dev/provider"], "openai");
    let listed = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.types.kind, "PartialObjectMetadataList");
    let list_request = server.requests().into_iter().rfind(|r| r.method == Method::GET).unwrap();
    assert!(list_request.accept.unwrap().contains("as=PartialObjectMetadataList"));
    // On the wire, metadata-only answers carry no data.
    let raw = http::Request::get("/api/v1/namespaces/s/secrets")
        .header(http::header::ACCEPT, "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        .body(Vec::new())
        .unwrap();
    let text = server.client().request_text(raw).await.unwrap();
    assert!(text.contains("uprox.dev/provider") && !text.contains("\"data\""), "{text}");

    // kube 5 deprecates `metadata_watcher` for a watcher over `Api<PartialObjectMeta<K>>`.
    let metadata_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(server.client(), "s");
    let mut events = watcher(metadata_api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(m) if m.name_any() == "key"));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));
    api.patch("key", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": {"rotated": "yes"}}})))
        .await
        .unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(m) => assert_eq!(m.annotations()["rotated"], "yes"),
        other => panic!("expected Apply, got {other:?}"),
    }
    let watch = server.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert!(watch.accept.unwrap().contains("as=PartialObjectMetadata"));
    api.delete("key", &DeleteParams::default()).await.unwrap();
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Delete(m) if m.name_any() == "key"));
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.put(&config_map("one", &[], &[]));
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(_)));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));
    server.put(&config_map("two", &[], &[]));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Apply(cm) if cm.name_any() == "two"));

    server.clear_requests();
    server.expire_watches();
    match next(&mut events).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!((status.code, status.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(_)));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitApply(_)));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));
    assert!(server.requests().iter().any(|r| r.method == Method::GET && !r.is_watch()), "the watcher re-lists");

    // A raw watch from a compacted resource version gets the 410 as an ERROR event.
    let mut raw = api.watch(&WatchParams::default(), "1").await.unwrap().boxed();
    match next(&mut raw).await.unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn slow_watchers_catch_up_or_relist() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::all(server.client());
    let mut events = watcher(api, watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::InitDone));
    server.put(&config_map("sentinel", &[], &[]));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Apply(_)));

    // More changes than the broadcast buffer, fewer than the history: replayed, no re-list.
    server.clear_requests();
    for index in 0..6_000 {
        server.put(&config_map(&format!("a-{index}"), &[], &[]));
    }
    for index in 0..6_000 {
        match next(&mut events).await.unwrap() {
            watcher::Event::Apply(cm) => assert_eq!(cm.name_any(), format!("a-{index}")),
            other => panic!("expected Apply, got {other:?}"),
        }
    }
    assert!(server.requests().iter().all(|r| r.is_watch()));

    // More changes than the history: 410, then a re-list with everything.
    for index in 0..10_500 {
        server.put(&config_map(&format!("b-{index}"), &[], &[]));
    }
    assert!(matches!(next(&mut events).await, Err(watcher::Error::WatchError(status)) if status.code == 410));
    assert!(matches!(next(&mut events).await.unwrap(), watcher::Event::Init));
    let mut relisted = 0;
    while let watcher::Event::InitApply(_) = next(&mut events).await.unwrap() {
        relisted += 1;
    }
    assert_eq!(relisted, 1 + 6_000 + 10_500);
}

#[tokio::test]
async fn raw_watches_start_from_a_snapshot_and_honour_timeouts() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.put(&config_map("a", &[], &[]));
    let mut stream = api.watch(&WatchParams::default().timeout(1), "0").await.unwrap().boxed();
    assert!(matches!(next(&mut stream).await.unwrap(), WatchEvent::Added(cm) if cm.name_any() == "a"));
    server.put(&config_map("b", &[], &[]));
    assert!(matches!(next(&mut stream).await.unwrap(), WatchEvent::Added(cm) if cm.name_any() == "b"));
    let ended = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(ended.is_none(), "the watch ends after timeoutSeconds, got {ended:?}");
}

#[tokio::test]
async fn shutdown_ends_watches_and_refuses_requests() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut stream = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    server.shutdown().await;
    let ended = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert!(!matches!(ended, Some(Ok(_))), "no more events after shutdown, got {ended:?}");
    let refused = tokio::time::timeout(WAIT, api.list(&ListParams::default())).await.unwrap();
    assert!(refused.is_err());
}
