//! kube-runtime and friends end to end: controller, Recorder, kube-lease-manager, scale.

use super::*;

#[tokio::test]
async fn kube_lease_manager_elects_one_leader() {
    let server = FakeApiServer::start().await;
    let manager = |identity: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(server.client(), "operator-leader")
            .with_namespace("default")
            .with_identity(identity)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let a = manager("a").await.unwrap();
    let b = manager("b").await.unwrap();

    assert!(tokio::time::timeout(WAIT, a.changed()).await.unwrap().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.changed()).await.is_err(),
        "b must not lead while a holds the lease"
    );
    let lease = server.get::<Lease>(None, "operator-leader").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("a"));

    a.release().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), b.changed()).await.unwrap().unwrap());
    let lease = server.get::<Lease>(None, "operator-leader").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn recorder_publishes_events() {
    let server = FakeApiServer::start().await;
    let owner = server.put(&widget("w", 1));
    let recorder = Recorder::new(server.client(), "uprox-operator".into());
    let event = RecorderEvent {
        type_: EventType::Normal,
        reason: "Compiled".into(),
        note: Some("config compiled".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = owner.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events = server.list::<K8sEvent>(Some("default"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason.as_deref(), Some("Compiled"));
    assert_eq!(events[0].series.as_ref().map(|s| s.count), Some(2));
}

struct Context {
    client: Client,
    reconciles: AtomicUsize,
}

async fn reconcile(widget: Arc<Widget>, context: Arc<Context>) -> Result<Action, kube::Error> {
    context.reconciles.fetch_add(1, Ordering::SeqCst);
    let namespace = widget.namespace().unwrap_or_default();
    let mut config =
        config_map(&format!("{}-config", widget.name_any()), &[("app.kubernetes.io/managed-by", "test")], &[]);
    config.data = Some(BTreeMap::from([("size".into(), widget.spec.size.to_string())]));
    config.metadata.owner_references = widget.controller_owner_ref(&()).map(|owner| vec![owner]);
    let apply = PatchParams::apply("widget-controller").force();
    Api::<ConfigMap>::namespaced(context.client.clone(), &namespace)
        .patch(&config.name_any(), &apply, &Patch::Apply(&config))
        .await?;
    let status = json!({
        "apiVersion": Widget::api_version(&()), "kind": Widget::kind(&()),
        "status": {"ready": true, "observedGeneration": widget.metadata.generation},
    });
    Api::<Widget>::namespaced(context.client.clone(), &namespace)
        .patch_status(&widget.name_any(), &apply, &Patch::Apply(&status))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &kube::Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_reconciles_end_to_end() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let widgets: Api<Widget> = Api::all(client.clone());
    let configs: Api<ConfigMap> = Api::all(client.clone());
    let context = Arc::new(Context { client: client.clone(), reconciles: AtomicUsize::new(0) });
    let controller = Controller::new(widgets, watcher::Config::default())
        .owns(configs, watcher::Config::default())
        .run(reconcile, error_policy, context.clone())
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    let api: Api<Widget> = Api::namespaced(client, "team");
    let mut created = widget("w", 3);
    created.metadata.namespace = Some("team".into());
    api.create(&PostParams::default(), &created).await.unwrap();
    let size = |server: &FakeApiServer| {
        server.get::<ConfigMap>(Some("team"), "w-config").and_then(|c| c.data).map(|d| d["size"].clone())
    };
    let observed = |server: &FakeApiServer| {
        server.get::<Widget>(Some("team"), "w").and_then(|w| w.status).and_then(|s| s.observed_generation)
    };
    eventually("the config map", || (size(&server).as_deref() == Some("3")).then_some(())).await;
    eventually("status for generation 1", || (observed(&server) == Some(1)).then_some(())).await;

    api.patch("w", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"size": 5}}))).await.unwrap();
    eventually("the resized config map", || (size(&server).as_deref() == Some("5")).then_some(())).await;
    eventually("status for generation 2", || (observed(&server) == Some(2)).then_some(())).await;
    // Status writes that change nothing fire no event, so the controller settles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = context.reconciles.load(Ordering::SeqCst);
    assert!(settled < 20, "reconciled {settled} times: a hot loop");

    api.delete("w", &DeleteParams::default()).await.unwrap();
    assert!(server.get::<ConfigMap>(Some("team"), "w-config").is_none(), "garbage-collected with its owner");
    task.abort();
}

#[tokio::test]
async fn ten_thousand_objects_list_quickly() {
    let server = FakeApiServer::start().await;
    for index in 0..10_000 {
        let parity = if index % 2 == 0 { "even" } else { "odd" };
        let widget = Widget {
            metadata: ObjectMeta {
                name: Some(format!("w-{index:05}")),
                namespace: Some(format!("ns-{}", index % 10)),
                labels: Some(BTreeMap::from([("parity".into(), parity.into())])),
                ..ObjectMeta::default()
            },
            spec: WidgetSpec { size: index, color: None },
            status: None,
        };
        server.put(&widget);
    }
    let api: Api<Widget> = Api::all(server.client());
    let started = std::time::Instant::now();
    let all = tokio::time::timeout(Duration::from_secs(30), api.list(&ListParams::default())).await.unwrap().unwrap();
    assert_eq!(all.items.len(), 10_000);
    let even = api.list(&ListParams::default().labels("parity=even")).await.unwrap();
    assert_eq!(even.items.len(), 5_000);
    eprintln!("listed 10,000 + 5,000 widgets in {:?}", started.elapsed());

    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut initial = 0;
    loop {
        match next(&mut events).await.unwrap() {
            watcher::Event::InitApply(_) => initial += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, 10_000);
}
