#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn policy(name: &str, rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<u32>) -> PolicyConfig {
    PolicyConfig {
        id: ObjectId::new("team", name),
        providers: vec![],
        models: vec![],
        scopes: vec![],
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        max_concurrent_requests: concurrent,
        ..Default::default()
    }
}

fn set(policies: &[PolicyConfig], registry: &Registry, subject: &Subject) -> Arc<LimitSet> {
    let mut resolver = registry.resolver();
    let limiters = policies.iter().filter_map(|p| resolver.get(p, subject)).collect();
    resolver.finish();
    LimitSet::new(limiters).unwrap()
}

fn token() -> Subject {
    Subject::Token([7; 32])
}

#[test]
fn shares_round_up_and_never_reach_zero() {
    assert_eq!(share(10, 1), 10);
    assert_eq!(share(10, 3), 4);
    assert_eq!(share(10, 10), 1);
    assert_eq!(share(1, 5), 1);
    assert_eq!(share(7, 0), 7, "0 replicas reads as 1");
}

#[test]
fn requests_per_minute_burst_then_refuse_with_a_wait() {
    let registry = Registry::default();
    let set = set(&[policy("rpm", Some(3), None, None)], &registry, &token());
    let first = admit(&set).unwrap();
    assert_eq!(first.headers.requests.map(|(l, r, _)| (l, r)), Some((3, 2)));
    admit(&set).unwrap();
    let third = admit(&set).unwrap();
    assert_eq!(third.headers.requests.map(|(_, r, _)| r), Some(0));
    let refused = admit(&set).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Requests);
    assert_eq!(refused.policy, ObjectId::new("team", "rpm"));
    assert!(refused.retry_after > Duration::from_secs(15) && refused.retry_after <= Duration::from_secs(20));
    assert_eq!(refused.headers.requests.map(|(l, r, _)| (l, r)), Some((3, 0)));
    let message = refused.to_string();
    assert!(message.contains("requests per minute") && message.contains("team/rpm"), "{message}");
}

#[test]
fn governor_refills_evenly_with_a_fake_clock() {
    // The algorithm itself, as configured here: a per-minute quota refills one cell per
    // 60/n seconds.
    let clock = governor::clock::FakeRelativeClock::default();
    let gcra = RateLimiter::direct_with_clock(Quota::per_minute(NonZeroU32::new(2).unwrap()), clock.clone());
    assert!(gcra.check().is_ok() && gcra.check().is_ok());
    assert!(gcra.check().is_err());
    clock.advance(Duration::from_secs(29));
    assert!(gcra.check().is_err());
    clock.advance(Duration::from_secs(1));
    assert!(gcra.check().is_ok(), "one cell back after 30 s");
    assert!(gcra.check().is_err());
}

#[test]
fn token_bucket_goes_into_debt_and_refuses_until_it_is_paid() {
    let registry = Registry::default();
    let set = set(&[policy("tpm", None, Some(600), None)], &registry, &token());
    let admission = admit(&set).unwrap();
    assert_eq!(admission.headers.tokens.map(|(l, r, _)| (l, r)), Some((600, 600)));
    drop(admission);
    set.limiters()[0].charge(500);
    let admission = admit(&set).unwrap();
    let (_, left, _) = admission.headers.tokens.unwrap();
    assert!((99..=101).contains(&left), "{left}");
    drop(admission);
    // 1,000 more than the bucket holds: 900 in debt, paid back at 10 tokens a second.
    set.limiters()[0].charge(1000);
    let refused = admit(&set).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Tokens);
    assert!(refused.retry_after > Duration::from_secs(80) && refused.retry_after <= Duration::from_secs(90));
    assert_eq!(refused.headers.tokens.map(|(_, r, _)| r), Some(0));
}

#[test]
fn concurrency_slots_are_released_on_drop() {
    let registry = Registry::default();
    let set = set(&[policy("conc", None, None, Some(2))], &registry, &token());
    let a = admit(&set).unwrap();
    let b = admit(&set).unwrap();
    let refused = admit(&set).unwrap_err();
    assert_eq!(refused.kind, LimitKind::Concurrency);
    assert!(refused.to_string().contains("concurrent requests"));
    drop(a);
    let c = admit(&set).unwrap();
    assert_eq!(set.limiters()[0].in_flight(), 2);
    drop((b, c));
    assert_eq!(set.limiters()[0].in_flight(), 0);
}

#[tokio::test]
async fn the_held_body_releases_its_slot_when_it_ends_or_is_dropped_and_admissions_charge_tokens() {
    use http_body_util::BodyExt as _;
    let registry = Registry::default();
    let set = set(&[policy("both", None, Some(1000), Some(1))], &registry, &token());
    let held = hold(crate::body::full("answer"), admit(&set).unwrap());
    assert!(admit(&set).is_err(), "the slot is held by the body");
    held.collect().await.unwrap();
    let admission = admit(&set).unwrap();
    admission.charge(7);
    drop(admission);
    let admission = admit(&set).unwrap();
    let (_, left, _) = admission.headers.tokens.unwrap();
    assert!((992..=994).contains(&left), "7 charged: {left}");
    drop(admission);

    let held = hold(crate::body::full("answer"), admit(&set).unwrap());
    drop(held);
    assert_eq!(set.limiters()[0].in_flight(), 0, "dropped before the end: released");
}

#[test]
fn the_strictest_policy_refuses_and_earlier_slots_are_given_back() {
    let registry = Registry::default();
    let set =
        set(&[policy("loose", Some(100), None, Some(10)), policy("strict", None, None, Some(1))], &registry, &token());
    let held = admit(&set).unwrap();
    let refused = admit(&set).unwrap_err();
    assert_eq!(refused.policy.name, "strict");
    assert_eq!(set.limiters()[0].in_flight(), 1, "the loose Policy's slot taken by the refused request is back");
    drop(held);
}

#[test]
fn reload_keeps_unchanged_limits_and_resets_changed_ones() {
    let registry = Registry::default();
    let subject = Subject::Service(ObjectId::new("team", "app"));
    let before = set(&[policy("a", Some(2), None, None), policy("b", Some(2), None, None)], &registry, &subject);
    admit(&before).unwrap();
    admit(&before).unwrap();
    assert!(admit(&before).is_err());
    // `a` unchanged, `b` changed, `c` new.
    let after = set(
        &[policy("a", Some(2), None, None), policy("b", Some(3), None, None), policy("c", Some(5), None, None)],
        &registry,
        &subject,
    );
    assert!(Arc::ptr_eq(&before.limiters()[0], &after.limiters()[0]), "unchanged limits keep their limiter");
    assert!(!Arc::ptr_eq(&before.limiters()[1], &after.limiters()[1]));
    let refused = admit(&after).unwrap_err();
    assert_eq!(refused.policy.name, "a", "a's counter survived the reload");
    assert_eq!(registry.len(), 3);
    // Removed Policies are forgotten.
    let _ = set(&[policy("c", Some(5), None, None)], &registry, &subject);
    assert_eq!(registry.len(), 1);
}

#[test]
fn replicas_rescale_shares_and_keep_token_debt_and_slots() {
    let registry = Registry::default();
    let set = set(&[policy("p", Some(10), Some(600), Some(4))], &registry, &token());
    let held = admit(&set).unwrap();
    set.limiters()[0].charge(100);
    registry.set_replicas(2);
    assert_eq!(set.limiters()[0].in_flight(), 1, "slots survive a rescale");
    // Share of 4 concurrent over 2 replicas: 2, one already held.
    let second = admit(&set).unwrap();
    let (limit, left, _) = second.headers.tokens.unwrap();
    assert_eq!(limit, 600, "headers report the Policy's limit");
    assert!(left < 600, "the charge survived: {left}");
    assert_eq!(second.headers.requests.map(|(l, _, _)| l), Some(10));
    assert!(admit(&set).is_err(), "2 of the share of 2 in flight");
    drop((held, second));
    // Requests per minute: 5 per replica now, one used since the rescale.
    for _ in 0..4 {
        admit(&set).unwrap();
    }
    assert_eq!(admit(&set).unwrap_err().kind, LimitKind::Requests);
    assert_eq!(registry.replicas(), 2);
    registry.set_replicas(0);
    assert_eq!(registry.replicas(), 1);
}

#[test]
fn policies_without_limits_get_no_limiter() {
    let registry = Registry::default();
    let mut resolver = registry.resolver();
    assert!(resolver.get(&policy("none", None, None, None), &token()).is_none());
    assert!(resolver.get(&policy("zero", Some(0), None, None), &token()).is_none());
    resolver.finish();
    assert!(registry.is_empty());
    assert!(LimitSet::new(vec![]).is_none());
}

#[test]
fn resets_are_written_like_openai() {
    assert_eq!(format_reset(Duration::from_millis(20)), "20ms");
    assert_eq!(format_reset(Duration::from_millis(1500)), "2s");
    assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
    assert_eq!(retry_secs(Duration::from_millis(10)), 1);
    let mut headers = http::HeaderMap::new();
    RateHeaders { requests: Some((60, 59, Duration::from_secs(1))), tokens: None }.write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit-requests"], "60");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "59");
    assert_eq!(headers["x-ratelimit-reset-requests"], "1s");
    assert!(!headers.contains_key("x-ratelimit-limit-tokens"));
}
