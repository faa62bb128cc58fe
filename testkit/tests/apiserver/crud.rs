//! Reads, writes, patches, conflicts, garbage collection and the request log.

use super::*;

#[tokio::test]
async fn config_map_crud_and_errors() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());

    let created = api.create(&PostParams::default(), &config_map("a", &[], &[("k", "v")])).await.unwrap();
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        api_error(api.create(&PostParams::default(), &config_map("a", &[], &[])).await),
        (409, "AlreadyExists".into())
    );

    let fetched = api.get("a").await.unwrap();
    assert_eq!(fetched.data, created.data);
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);

    let mut changed = fetched.clone();
    changed.data = Some(BTreeMap::from([("k".into(), "w".into())]));
    let replaced = api.replace("a", &PostParams::default(), &changed).await.unwrap();
    assert_ne!(replaced.resource_version(), fetched.resource_version());
    assert_eq!(replaced.uid(), fetched.uid());

    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    assert_eq!(api_error(api.get("a").await), (404, "NotFound".into()));
    assert!(api.get_opt("a").await.unwrap().is_none());
    assert_eq!(api_error(api.delete("a", &DeleteParams::default()).await), (404, "NotFound".into()));
    assert_eq!(api_error(api.replace("a", &PostParams::default(), &changed).await), (404, "NotFound".into()));

    let generated = ConfigMap {
        metadata: ObjectMeta { generate_name: Some("gen-".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    let generated = api.create(&PostParams::default(), &generated).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() > 4);

    for name in ["x1", "x2"] {
        api.create(&PostParams::default(), &config_map(name, &[("batch", "x")], &[])).await.unwrap();
    }
    let deleted =
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("batch=x")).await.unwrap();
    assert_eq!(deleted.left().map(|list| list.items.len()), Some(2));
    assert_eq!(server.list::<ConfigMap>(None).len(), 1);

    let version = server.client().apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn custom_resource_generation_and_status_subresource() {
    let server = FakeApiServer::start().await;
    let api: Api<Widget> = Api::default_namespaced(server.client());

    let mut with_status = widget("w", 1);
    with_status.status = Some(WidgetStatus { ready: true, observed_generation: None });
    let created = api.create(&PostParams::default(), &with_status).await.unwrap();
    assert_eq!(created.status, None, "creates drop .status");
    assert_eq!(created.metadata.generation, Some(1));

    // Status through /status: spec and generation stay.
    let status = json!({"status": {"ready": true, "observedGeneration": 1}});
    let patched = api.patch_status("w", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(patched.status, Some(WidgetStatus { ready: true, observed_generation: Some(1) }));
    assert_eq!(patched.spec, created.spec);
    assert_eq!(patched.metadata.generation, Some(1));

    let applied_status = json!({
        "apiVersion": "test.uprox.dev/v1", "kind": "Widget",
        "status": {"ready": false, "observedGeneration": 1},
    });
    let applied =
        api.patch_status("w", &PatchParams::apply("op").force(), &Patch::Apply(&applied_status)).await.unwrap();
    assert_eq!(applied.status.as_ref().map(|s| s.ready), Some(false));
    assert_eq!(applied.metadata.generation, Some(1));
    let managers: Vec<_> =
        applied.metadata.managed_fields.iter().flatten().map(|m| (m.manager.clone(), m.subresource.clone())).collect();
    assert!(managers.contains(&(Some("op".into()), Some("status".into()))), "{managers:?}");

    // Main-resource writes keep .status; a spec change bumps generation, a label change does not.
    let spec_patch = json!({"spec": {"size": 2}, "status": {"ready": true}});
    let bumped = api.patch("w", &PatchParams::default(), &Patch::Merge(&spec_patch)).await.unwrap();
    assert_eq!(bumped.metadata.generation, Some(2));
    assert_eq!(bumped.status, applied.status);
    let labelled = api
        .patch("w", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    let mut replaced = labelled.clone();
    replaced.spec.color = Some("red".into());
    replaced.status = None;
    let replaced = api.replace("w", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(3));
    assert_eq!(replaced.status, applied.status);

    let mut status_only = replaced.clone();
    status_only.spec.size = 99;
    status_only.status = Some(WidgetStatus { ready: true, observed_generation: Some(3) });
    let status_replaced = api.replace_status("w", &PostParams::default(), &status_only).await.unwrap();
    assert_eq!(status_replaced.spec.size, 2);
    assert_eq!(status_replaced.status, status_only.status);
    assert_eq!(status_replaced.metadata.generation, Some(3));

    // A no-op write keeps the resource version.
    let again = api
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&json!({"status": {"ready": true}})))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), status_replaced.resource_version());

    assert_eq!(
        api_error(api.patch_status("missing", &PatchParams::default(), &Patch::Merge(&status)).await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    for (namespace, name, tier) in [("a", "one", "web"), ("a", "two", "db"), ("b", "three", "web")] {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let mut labels = vec![("app", "shop")];
        if name != "two" {
            labels.push(("tier", tier));
        }
        api.create(&PostParams::default(), &config_map(name, &labels, &[])).await.unwrap();
    }
    let names =
        |list: kube::core::ObjectList<ConfigMap>| list.items.iter().map(ResourceExt::name_any).collect::<Vec<_>>();
    let all: Api<ConfigMap> = Api::all(client.clone());
    let in_a: Api<ConfigMap> = Api::namespaced(client, "a");

    assert_eq!(names(all.list(&ListParams::default()).await.unwrap()), ["one", "two", "three"]);
    assert_eq!(names(in_a.list(&ListParams::default()).await.unwrap()), ["one", "two"]);
    assert_eq!(names(all.list(&ListParams::default().labels("tier=web")).await.unwrap()), ["one", "three"]);
    assert_eq!(names(all.list(&ListParams::default().labels("tier!=web")).await.unwrap()), ["two"]);
    assert_eq!(names(all.list(&ListParams::default().labels("app=shop,!tier")).await.unwrap()), ["two"]);
    assert_eq!(names(all.list(&ListParams::default().labels("tier")).await.unwrap()), ["one", "three"]);
    assert_eq!(names(all.list(&ListParams::default().labels("tier in (db,web),app")).await.unwrap()), ["one", "three"]);
    assert_eq!(names(all.list(&ListParams::default().fields("metadata.name=two")).await.unwrap()), ["two"]);
    assert_eq!(names(all.list(&ListParams::default().fields("metadata.namespace=b")).await.unwrap()), ["three"]);
    assert_eq!(api_error(all.list(&ListParams::default().labels("tier in (web")).await).0, 400);

    let list = all.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "ConfigMapList");
    assert_eq!(list.metadata.resource_version, Some(server.resource_version().to_string()));
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_conflicts() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "x");
    let applied = config_map("cm", &[("owner", "op")], &[("a", "1"), ("b", "2")]);

    let created =
        api.patch("cm", &PatchParams::apply("uprox-operator").force(), &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(created.data.as_ref().map(BTreeMap::len), Some(2));
    let request = server.requests().into_iter().find(|r| r.method == Method::PATCH).unwrap();
    assert_eq!(request.path, "/api/v1/namespaces/x/configmaps/cm");
    assert_eq!(request.field_manager(), Some("uprox-operator"));
    assert_eq!(request.query_param("force"), Some("true"));
    assert_eq!(request.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(request.json().unwrap()["data"]["a"], "1");
    assert_eq!(request.status, 201);

    // Another manager adds a key; the first one's fields stay.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"c": "3"}});
    let merged = api.patch("cm", &PatchParams::apply("other"), &Patch::Apply(&other)).await.unwrap();
    assert_eq!(merged.data.unwrap().keys().collect::<Vec<_>>(), ["a", "b", "c"]);

    // Changing a field another manager owns conflicts unless forced.
    let steal = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "stolen"}});
    let (code, reason) = api_error(api.patch("cm", &PatchParams::apply("other"), &Patch::Apply(&steal)).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let forced = api
        .patch(
            "cm",
            &PatchParams::apply("other").force(),
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "stolen", "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["a"], "stolen");

    // The operator stops applying `b` and its label: they go; `a` now belongs to `other`.
    let smaller = config_map("cm", &[], &[]);
    let pruned = api.patch("cm", &PatchParams::apply("uprox-operator").force(), &Patch::Apply(&smaller)).await.unwrap();
    assert_eq!(pruned.data.unwrap().keys().collect::<Vec<_>>(), ["a", "c"]);
    assert!(pruned.metadata.labels.unwrap_or_default().is_empty());

    // Apply needs a field manager, and refuses bodies carrying managedFields.
    let mut with_fields = pruned_fields(&api).await;
    with_fields.metadata.name = Some("cm".into());
    assert_eq!(api_error(api.patch("cm", &PatchParams::apply("m"), &Patch::Apply(&with_fields)).await).0, 400);
    assert_eq!(api_error(api.patch("nope", &PatchParams::default(), &Patch::Merge(&json!({"data": {}}))).await).0, 404);
}

async fn pruned_fields(api: &Api<ConfigMap>) -> ConfigMap {
    let fetched = api.get("cm").await.unwrap();
    assert!(fetched.metadata.managed_fields.as_ref().is_some_and(|m| !m.is_empty()));
    fetched
}

#[tokio::test]
async fn stale_resource_versions_conflict() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let original = api.create(&PostParams::default(), &config_map("cm", &[], &[("n", "0")])).await.unwrap();

    let mut first = original.clone();
    first.data = Some(BTreeMap::from([("n".into(), "1".into())]));
    api.replace("cm", &PostParams::default(), &first).await.unwrap();

    let mut stale = original.clone();
    stale.data = Some(BTreeMap::from([("n".into(), "2".into())]));
    assert_eq!(api_error(api.replace("cm", &PostParams::default(), &stale).await), (409, "Conflict".into()));

    let stale_patch = json!({"metadata": {"resourceVersion": original.resource_version()}, "data": {"n": "3"}});
    assert_eq!(api_error(api.patch("cm", &PatchParams::default(), &Patch::Merge(&stale_patch)).await).0, 409);
    let delete_stale = DeleteParams::default()
        .preconditions(kube::api::Preconditions { resource_version: original.resource_version(), uid: None });
    assert_eq!(api_error(api.delete("cm", &delete_stale).await).0, 409);
    assert_eq!(server.get::<ConfigMap>(None, "cm").unwrap().data.unwrap()["n"], "1");
}

#[tokio::test]
async fn lease_create_and_replace_conflict() {
    let server = FakeApiServer::start().await;
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    let lease = Lease {
        metadata: ObjectMeta { name: Some("leader".into()), ..ObjectMeta::default() },
        spec: Some(LeaseSpec { holder_identity: Some("a".into()), ..LeaseSpec::default() }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(api_error(leases.create(&PostParams::default(), &lease).await).1, "AlreadyExists");

    let mut take = created.clone();
    take.spec = Some(LeaseSpec { holder_identity: Some("b".into()), ..LeaseSpec::default() });
    leases.replace("leader", &PostParams::default(), &take).await.unwrap();
    let mut late = created.clone();
    late.spec = Some(LeaseSpec { holder_identity: Some("c".into()), ..LeaseSpec::default() });
    assert_eq!(api_error(leases.replace("leader", &PostParams::default(), &late).await), (409, "Conflict".into()));
}

#[tokio::test]
async fn owner_references_cascade_on_delete() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let owner = widgets.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    let owner_ref = owner.controller_owner_ref(&()).unwrap();

    let mut child = config_map("child", &[], &[]);
    child.metadata.owner_references = Some(vec![owner_ref.clone()]);
    let child =
        Api::<ConfigMap>::default_namespaced(client.clone()).create(&PostParams::default(), &child).await.unwrap();
    let mut grandchild = Secret {
        metadata: ObjectMeta { name: Some("grandchild".into()), ..ObjectMeta::default() },
        ..Secret::default()
    };
    grandchild.metadata.owner_references = Some(vec![child.controller_owner_ref(&()).unwrap()]);
    Api::<Secret>::default_namespaced(client.clone()).create(&PostParams::default(), &grandchild).await.unwrap();
    let unrelated = server.put(&config_map("unrelated", &[], &[]));

    widgets.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(server.get::<ConfigMap>(None, "child").is_none());
    assert!(server.get::<Secret>(None, "grandchild").is_none());
    assert_eq!(server.get::<ConfigMap>(None, "unrelated").map(|c| c.uid()), Some(unrelated.uid()));

    // Orphan propagation leaves dependents.
    let owner = widgets.create(&PostParams::default(), &widget("owner", 1)).await.unwrap();
    let mut child = config_map("child", &[], &[]);
    child.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    server.put(&child);
    widgets.delete("owner", &DeleteParams::orphan()).await.unwrap();
    assert!(server.get::<ConfigMap>(None, "child").is_some());
}

#[tokio::test]
async fn finalizers_defer_deletion_with_kubes_finalizer_helper() {
    let server = FakeApiServer::start().await;
    let api: Api<Widget> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &widget("f", 1)).await.unwrap();
    const NAME: &str = "test.uprox.dev/cleanup";
    let run = |object: Widget| {
        let api = api.clone();
        async move {
            finalizer(&api, NAME, Arc::new(object), |event| async move {
                match event {
                    finalizer::Event::Apply(_) => Ok::<_, kube::Error>(Action::await_change()),
                    finalizer::Event::Cleanup(_) => Ok(Action::await_change()),
                }
            })
            .await
        }
    };

    // First reconcile adds the finalizer (JSON patch: test null + add), the next one applies.
    run(api.get("f").await.unwrap()).await.unwrap();
    assert_eq!(api.get("f").await.unwrap().finalizers(), [NAME]);
    run(api.get("f").await.unwrap()).await.unwrap();

    let marked = api.delete("f", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let deleting = api.get("f").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());

    // Cleanup removes the finalizer (JSON patch: test + remove), which completes the deletion.
    run(deleting).await.unwrap();
    assert_eq!(api_error(api.get("f").await).0, 404);
}

#[tokio::test]
async fn request_log_and_fault_injection() {
    let server = FakeApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    server.put(&config_map("cm", &[], &[]));

    server.fail_next(Method::GET, "/api/v1/namespaces/default/configmaps/cm", 500);
    assert_eq!(api_error(api.get("cm").await), (500, "InternalError".into()));
    assert!(api.get("cm").await.is_ok());
    server.fail_next(Method::PATCH, "/api/v1/", 409);
    assert_eq!(api_error(api.patch("cm", &PatchParams::default(), &Patch::Merge(&json!({}))).await).0, 409);

    let statuses: Vec<_> = server.requests().iter().map(|r| (r.method.clone(), r.status)).collect();
    assert_eq!(statuses, [(Method::GET, 500), (Method::GET, 200), (Method::PATCH, 409)]);
    server.clear_requests();
    assert!(server.requests().is_empty());

    // Unsupported requests get a Status, not a hang or a panic.
    let client: Client = server.client();
    let request = http::Request::post("/api/v1/namespaces/default/configmaps/cm").body(b"{}".to_vec()).unwrap();
    assert_eq!(api_error(client.request::<ConfigMap>(request).await).0, 405);
    let request = http::Request::get("/api/v1/namespaces/default/pods/p/exec").body(Vec::new()).unwrap();
    assert_eq!(api_error(client.request::<ConfigMap>(request).await).0, 404);
    let request = http::Request::post("/api/v1/namespaces/default/configmaps").body(b"not json".to_vec()).unwrap();
    assert_eq!(api_error(client.request::<ConfigMap>(request).await).0, 400);
}
