//! ConfigState: deltas reproduce the snapshot they lead to; the size is tracked exactly.

use std::collections::BTreeMap;

use super::*;

fn service(name: &str, prefix: &str, endpoints: &[&str]) -> Service {
    let msg = pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: prefix.into(),
            ..Default::default()
        }),
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        ..Default::default()
    };
    Service::try_from(msg).unwrap()
}

fn policy(name: &str, limit: u64) -> Policy {
    let msg = pb::Policy {
        name: name.into(),
        limit,
        period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        key: Some(pb::RateLimitKey {
            source: Some(pb::rate_limit_key::Source::ClientIp(pb::ClientIpKey {})),
        }),
        ..Default::default()
    };
    Policy::try_from(msg).unwrap()
}

fn snapshot_of(state: &ConfigState) -> pb::ConfigSnapshot {
    match &state.snapshot().kind {
        Some(pb::discovery_response::Kind::Snapshot(s)) => s.clone(),
        other => panic!("not a snapshot: {other:?}"),
    }
}

/// What a data plane does with a delta: the base snapshot with the changes applied.
fn apply(base: &pb::ConfigSnapshot, delta: &pb::ConfigDelta) -> pb::ConfigSnapshot {
    let mut services: BTreeMap<String, pb::Service> = base
        .services
        .iter()
        .map(|s| (s.name.clone(), s.clone()))
        .collect();
    let mut policies: BTreeMap<String, pb::Policy> = base
        .policies
        .iter()
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    for name in &delta.removed_services {
        services.remove(name);
    }
    for s in &delta.upserted_services {
        services.insert(s.name.clone(), s.clone());
    }
    for name in &delta.removed_policies {
        policies.remove(name);
    }
    for p in &delta.upserted_policies {
        policies.insert(p.name.clone(), p.clone());
    }
    pb::ConfigSnapshot {
        certificates: vec![],
        consumers: vec![],
        services: services.into_values().collect(),
        policies: policies.into_values().collect(),
    }
}

fn delta(state: &ConfigState, base: u64) -> pb::ConfigDelta {
    let response = state
        .delta_since(base)
        .unwrap_or_else(|| panic!("no delta from {base} to {}", state.version));
    assert_eq!(response.version, state.version);
    match response.kind {
        Some(pb::discovery_response::Kind::Delta(d)) => {
            assert_eq!(d.base_version, base);
            d
        }
        other => panic!("not a delta: {other:?}"),
    }
}

/// One write: the state after it, at the given version.
type Step = Box<dyn Fn(&ConfigState, u64) -> ConfigState>;

/// A history of every kind of change, starting at `start` (with no history of its own).
fn history(start: u64) -> Vec<ConfigState> {
    let mut states = vec![ConfigState::new(start, BTreeMap::new(), BTreeMap::new())];
    let steps: Vec<Step> = vec![
        Box::new(|s, v| s.with_service(service("a", "/a", &["http://127.0.0.1:1"]), v)),
        Box::new(|s, v| s.with_service(service("b", "/b", &[]), v)),
        Box::new(|s, v| s.with_policy(policy("p", 5), v)),
        // Replaced by a bigger one, then a smaller one.
        Box::new(|s, v| {
            let many: Vec<String> = (1..200).map(|p| format!("http://127.0.0.1:{p}")).collect();
            let many: Vec<&str> = many.iter().map(String::as_str).collect();
            s.with_service(service("a", "/a", &many), v)
        }),
        Box::new(|s, v| s.with_service(service("a", "/a", &["http://127.0.0.1:2"]), v)),
        Box::new(|s, v| s.with_policy(policy("p", 7), v)),
        Box::new(|s, v| s.without_policy("p", v)),
        Box::new(|s, v| s.without_service("b", v)),
        // Added and removed again between two versions a node may hold.
        Box::new(|s, v| s.with_service(service("c", "/c", &[]), v)),
        Box::new(|s, v| s.without_service("c", v)),
        Box::new(|s, v| s.with_policy(policy("q", 1), v)),
    ];
    for step in steps {
        let last = states.last().unwrap();
        let next = step(last, last.version + 1);
        states.push(next);
    }
    states
}

#[test]
fn snapshot_len_matches_the_encoded_snapshot_after_every_change() {
    // 125 takes the version varint from one byte to two during the history.
    for start in [0, 125] {
        for state in history(start) {
            assert_eq!(
                state.snapshot_len(),
                prost::Message::encoded_len(&**state.snapshot()),
                "version {}",
                state.version
            );
        }
    }
}

#[test]
fn every_delta_applied_to_its_base_gives_the_snapshot_of_its_version() {
    let states = history(10);
    for (i, base) in states.iter().enumerate() {
        for later in &states[i + 1..] {
            let d = delta(later, base.version);
            assert_eq!(
                apply(&snapshot_of(base), &d),
                snapshot_of(later),
                "delta {} -> {}",
                base.version,
                later.version
            );
        }
    }
}

#[test]
fn a_delta_from_one_version_back_carries_only_that_change() {
    let states = history(0);
    // Version 3 added policy p.
    let d = delta(&states[3], 2);
    assert!(d.upserted_services.is_empty() && d.removed_services.is_empty());
    assert_eq!(d.upserted_policies.len(), 1);
    assert_eq!(d.upserted_policies[0].name, "p");
    // Version 8 removed service b.
    let d = delta(&states[8], 7);
    assert_eq!(d.removed_services, ["b"]);
    assert!(d.upserted_services.is_empty() && d.upserted_policies.is_empty());
}

#[test]
fn changes_to_one_name_collapse_to_the_last() {
    let states = history(0);
    // From 0 to the end: a exists (last form), b and c removed, p removed, q added.
    let d = delta(states.last().unwrap(), 1);
    let names: Vec<&str> = d.upserted_services.iter().map(|s| &*s.name).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(d.upserted_services[0].endpoints, ["http://127.0.0.1:2"]);
    assert_eq!(d.removed_services, ["b", "c"]);
    assert_eq!(d.removed_policies, ["p"]);
    let names: Vec<&str> = d.upserted_policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["q"]);
}

#[test]
fn no_delta_for_new_nodes_current_nodes_or_unknown_history() {
    let states = history(10);
    let last = states.last().unwrap();
    assert!(last.delta_since(0).is_none(), "a new node gets a snapshot");
    assert!(last.delta_since(last.version).is_none(), "nothing to send");
    assert!(last.delta_since(last.version + 5).is_none(), "node ahead");
    assert!(
        last.delta_since(9).is_none(),
        "before the first known change"
    );
    assert!(last.delta_since(10).is_some());

    // A restarted control plane has no history: every older node gets a snapshot.
    let reloaded = ConfigState::new(last.version, last.services.clone(), last.policies.clone());
    assert!(reloaded.delta_since(last.version - 1).is_none());
}

#[test]
fn history_is_bounded_and_stays_contiguous() {
    let mut state = ConfigState::new(1, BTreeMap::new(), BTreeMap::new());
    for i in 0..(MAX_CHANGES + 10) {
        let name = format!("s{}", i % 3);
        state = state.with_service(service(&name, &format!("/{name}"), &[]), state.version + 1);
    }
    assert_eq!(state.changes.len(), MAX_CHANGES);
    let oldest_base = state.version - MAX_CHANGES as u64;
    assert!(state.delta_since(oldest_base).is_some());
    assert!(state.delta_since(oldest_base - 1).is_none());

    // A version that does not follow (the store never does this) starts the history afresh,
    // so no delta can silently skip a change.
    let jumped = state.with_service(service("z", "/z", &[]), state.version + 2);
    assert_eq!(jumped.changes.len(), 1);
    assert!(jumped.delta_since(state.version).is_none());
    assert!(jumped.delta_since(state.version + 1).is_some());
}

#[test]
fn versions_of_many_changes_give_exact_sizes_and_deltas() {
    // As ApplyConfig writes them: several objects, one version each time.
    let mut states = vec![ConfigState::new(4, BTreeMap::new(), BTreeMap::new())];
    let batches: Vec<Vec<Changed>> = vec![
        vec![
            Changed::service(service("a", "/a", &["http://127.0.0.1:1"])),
            Changed::service(service("b", "/b", &[])),
            Changed::policy(policy("p", 5)),
        ],
        vec![
            Changed::Service("a".into(), None),
            Changed::policy(policy("p", 9)),
            Changed::service(service("c", "/c", &["http://127.0.0.1:3"])),
        ],
        vec![Changed::service(service(
            "b",
            "/b",
            &["http://127.0.0.1:2"],
        ))],
        vec![
            Changed::Service("c".into(), None),
            Changed::Policy("p".into(), None),
        ],
    ];
    for batch in batches {
        let last = states.last().unwrap();
        let next = last.with_changes(last.version + 1, batch);
        states.push(next);
    }
    for (i, base) in states.iter().enumerate() {
        assert_eq!(
            base.snapshot_len(),
            prost::Message::encoded_len(&**base.snapshot()),
            "version {}",
            base.version
        );
        for later in &states[i + 1..] {
            let d = delta(later, base.version);
            assert_eq!(apply(&snapshot_of(base), &d), snapshot_of(later));
        }
    }
    // One version back carries the whole batch of that version.
    let d = delta(&states[2], states[1].version);
    assert_eq!(d.removed_services, ["a"]);
    assert_eq!(d.upserted_services.len(), 1);
    assert_eq!(d.upserted_policies[0].limit, 9);
}
