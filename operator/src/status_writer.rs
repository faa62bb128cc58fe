//! Writing statuses: server-side apply of the `status` the operator owns, only when it differs
//! from what the object has, and a Kubernetes Event when `Ready` changes.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uprox_crds::cluster::FIELD_MANAGER;
use uprox_crds::conditions::{READY, reason};
use uprox_crds::{
    Budget, BudgetStatus, MachineToken, MachineTokenStatus, Policy, PolicyStatus, Provider, ProviderStatus, Service,
    ServiceStatus,
};

/// A uprox resource with a status the operator writes.
pub trait WithStatus:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The status type.
    type Status: PartialEq + Serialize + Debug + Send + Sync;
    /// The status the object has.
    fn current(&self) -> Option<&Self::Status>;
    /// The conditions of a status.
    fn conditions(status: &Self::Status) -> &[Condition];
}

macro_rules! with_status {
    ($kind:ty, $status:ty) => {
        impl WithStatus for $kind {
            type Status = $status;
            fn current(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn conditions(status: &Self::Status) -> &[Condition] {
                &status.conditions
            }
        }
    };
}

with_status!(Provider, ProviderStatus);
with_status!(Service, ServiceStatus);
with_status!(MachineToken, MachineTokenStatus);
with_status!(Policy, PolicyStatus);
with_status!(Budget, BudgetStatus);

/// Whether writing `desired` would change anything.
pub fn needs_write<K: WithStatus>(object: &K, desired: &K::Status) -> bool {
    object.current() != Some(desired)
}

/// The Event to record when `Ready` moves from `before` to `after`: a warning whenever the
/// resource stops being (or starts out not) ready, a normal event when it recovers. A resource
/// that starts out ready makes no noise, and neither does a new token waiting for its first
/// issue (its `Issued` Event tells that story), so creating many tokens at once does not flood
/// the namespace with Events.
pub fn ready_event(before: Option<&[Condition]>, after: &[Condition]) -> Option<Event> {
    let ready = |conds: &[Condition]| conds.iter().find(|c| c.type_ == READY).cloned();
    let new = ready(after)?;
    let old = before.and_then(ready);
    let was = old.as_ref().map(|c| c.status.as_str());
    let awaiting_issue = |c: &Condition| c.status == "False" && c.reason == reason::NOT_ISSUED;
    if (old.is_none() && awaiting_issue(&new)) || (old.as_ref().is_some_and(awaiting_issue) && new.status == "True") {
        return None;
    }
    match (was, new.status.as_str()) {
        (Some("True"), "True") | (None, "True") => None,
        (Some("False"), "False") if old.as_ref().is_some_and(|o| o.reason == new.reason) => None,
        (_, "True") => Some(Event {
            type_: EventType::Normal,
            reason: "Ready".to_owned(),
            note: Some(truncate(&new.message)),
            action: "Reconcile".to_owned(),
            secondary: None,
        }),
        _ => Some(Event {
            type_: EventType::Warning,
            reason: new.reason.clone(),
            note: Some(truncate(&new.message)),
            action: "Reconcile".to_owned(),
            secondary: None,
        }),
    }
}

/// Applies `desired` as the object's status and records the Ready transition, if any.
pub async fn write<K: WithStatus>(
    client: &Client,
    recorder: Option<&Recorder>,
    object: &K,
    desired: &K::Status,
) -> Result<(), kube::Error> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    let event = ready_event(object.current().map(K::conditions), K::conditions(desired));
    if let (Some(recorder), Some(event)) = (recorder, event)
        && let Err(e) = recorder.publish(&event, &object.object_ref(&())).await
    {
        tracing::debug!(error = %e, "cannot record an Event");
    }
    Ok(())
}

/// Event notes are capped at 1 KiB by the API server.
fn truncate(text: &str) -> String {
    if text.len() <= 1000 {
        return text.to_owned();
    }
    let mut cut = 1000;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use uprox_crds::conditions;

    fn ready(ok: bool, why: &str) -> Vec<Condition> {
        vec![conditions::new(READY, ok, why, "m", Some(1), Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))]
    }

    #[test]
    fn events_mark_transitions_only() {
        assert!(ready_event(None, &ready(true, reason::COMPILED)).is_none());
        assert!(ready_event(Some(&ready(true, reason::COMPILED)), &ready(true, reason::COMPILED)).is_none());
        let down = ready_event(Some(&ready(true, reason::COMPILED)), &ready(false, reason::SECRET_NOT_FOUND)).unwrap();
        assert_eq!(down.type_, EventType::Warning);
        assert_eq!(down.reason, reason::SECRET_NOT_FOUND);
        let first_bad = ready_event(None, &ready(false, reason::SERVICE_NOT_FOUND)).unwrap();
        assert_eq!(first_bad.type_, EventType::Warning);
        let up = ready_event(Some(&ready(false, reason::SECRET_NOT_FOUND)), &ready(true, reason::COMPILED)).unwrap();
        assert_eq!(up.type_, EventType::Normal);
        let same = ready_event(Some(&ready(false, reason::SECRET_NOT_FOUND)), &ready(false, reason::SECRET_NOT_FOUND));
        assert!(same.is_none());
        let other = ready_event(Some(&ready(false, reason::SECRET_NOT_FOUND)), &ready(false, reason::KEY_NOT_FOUND));
        assert!(other.is_some());
        // A new token waiting for its first issue, then issued: no Ready Events.
        assert!(ready_event(None, &ready(false, reason::NOT_ISSUED)).is_none());
        assert!(ready_event(Some(&ready(false, reason::NOT_ISSUED)), &ready(true, reason::COMPILED)).is_none());
        // But a token that was working and lost its Secret warns.
        assert!(ready_event(Some(&ready(true, reason::COMPILED)), &ready(false, reason::NOT_ISSUED)).is_some());
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let text = "é".repeat(800);
        let cut = truncate(&text);
        assert!(cut.len() <= 1004);
        assert!(cut.ends_with('…'));
    }
}
