//! Planning a document against a state: the diff, the order of writes, whole-config checks.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn service(name: &str, prefix: &str) -> pb::Service {
    pb::Service {
        name: name.into(),
        route: Some(pb::Route {
            path_prefix: prefix.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn policy(name: &str, service: &str) -> pb::Policy {
    pb::Policy {
        name: name.into(),
        service: service.into(),
        limit: 10,
        period: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn request(services: Vec<pb::Service>, policies: Vec<pb::Policy>, prune: bool) -> Document {
    let request = pb::ApplyConfigRequest {
        services,
        policies,
        prune,
        ..Default::default()
    };
    Document::try_from_request(request).unwrap().0
}

/// A state of version 1 holding `services` and `policies`.
fn state(services: Vec<pb::Service>, policies: Vec<pb::Policy>) -> ConfigState {
    let services: BTreeMap<_, _> = services
        .into_iter()
        .map(|s| {
            let s = Service::try_from(s).unwrap();
            (s.name.clone(), Arc::new(s))
        })
        .collect();
    let policies: BTreeMap<_, _> = policies
        .into_iter()
        .map(|p| {
            let p = Policy::try_from(p).unwrap();
            (p.name.clone(), Arc::new(p))
        })
        .collect();
    ConfigState::new(1, services, policies)
}

fn order(plan: &Plan) -> Vec<String> {
    plan.writes
        .iter()
        .map(|w| match w {
            Write::Service { service, created } => format!("service {} {created}", service.name),
            Write::RemoveService(n) => format!("rm service {n}"),
            Write::Policy(p) => format!("policy {}", p.name),
            Write::RemovePolicy(n) => format!("rm policy {n}"),
            Write::Certificate(c) => format!("certificate {}", c.name),
            Write::RemoveCertificate(n) => format!("rm certificate {n}"),
        })
        .collect()
}

#[test]
fn writes_never_break_a_reference_on_the_way() {
    let now = state(vec![service("old", "/old")], vec![policy("p", "old")]);
    // `p` moves from `old` (pruned) to `new` (added).
    let doc = request(vec![service("new", "/new")], vec![policy("p", "new")], true);
    let moved = plan(&now, doc).unwrap();
    assert_eq!(
        order(&moved),
        ["service new true", "policy p", "rm service old"]
    );
    assert_eq!(
        moved.diff.policies.changed,
        [("p".to_owned(), vec!["service"])]
    );

    // Pruning a policy and its service: the policy goes first.
    let doc = request(vec![], vec![], true);
    let pruned = plan(&now, doc).unwrap();
    assert_eq!(order(&pruned), ["rm policy p", "rm service old"]);
}

#[test]
fn the_same_document_plans_nothing() {
    let now = state(vec![service("a", "/a")], vec![policy("p", "a")]);
    let doc = request(vec![service("a", "/a")], vec![policy("p", "a")], true);
    let same = plan(&now, doc).unwrap();
    assert!(same.diff.is_empty(), "{:?}", same.diff);
    assert!(same.writes.is_empty());
}

#[test]
fn whole_document_problems_name_the_object_and_field() {
    let now = state(vec![service("kept", "/k")], vec![]);
    let cases: Vec<(Document, &str)> = vec![
        (
            request(vec![service("a", "/x"), service("b", "/x")], vec![], false),
            "services[1].route: path prefix '/x' for any host is already routed by services[0] ('a')",
        ),
        (
            request(vec![service("a", "/k")], vec![], false),
            "services[0].route: path prefix '/k' for any host is already routed by service 'kept'",
        ),
        (
            request(vec![], vec![policy("p", "kept")], true),
            "policies[0].service: service 'kept' is removed by prune",
        ),
        (
            request(vec![], vec![policy("p", "nope")], false),
            "policies[0].service: service 'nope' does not exist",
        ),
    ];
    for (doc, expected) in cases {
        let e = plan(&now, doc).unwrap_err().to_string();
        assert!(e.starts_with(expected), "{e}");
    }
    // Per-object validation and duplicate names, before any state is looked at.
    let bad = pb::ApplyConfigRequest {
        services: vec![service("a", "/a"), service("a", "nope")],
        ..Default::default()
    };
    let e = Document::try_from_request(bad).unwrap_err();
    let fields: Vec<&str> = e.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["services[1].route.path_prefix"]);
    let dup = pb::ApplyConfigRequest {
        services: vec![service("a", "/a"), service("a", "/b")],
        ..Default::default()
    };
    let e = Document::try_from_request(dup).unwrap_err().to_string();
    assert_eq!(e, "services[1].name: 'a' is already used by services[0]");
}
