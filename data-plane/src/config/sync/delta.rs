//! Merging a `ConfigDelta` into the snapshot it was computed from, giving the full snapshot
//! of the new version. Pure: no I/O, no validation beyond what merging itself needs (the
//! merged result goes through the sink like any snapshot, which validates it as a whole).
//!
//! The result keeps the snapshot's ordering contract (services and policies ordered by name)
//! whatever order the base or the delta came in, so a merged snapshot is indistinguishable
//! from one the control plane would have sent for that version.

use std::collections::{BTreeMap, HashSet};

use gw_proto::v1 as pb;

/// Something a delta upserts and removes by name.
trait Named: Clone {
    fn name(&self) -> &str;
}

impl Named for pb::Service {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for pb::Policy {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for pb::Consumer {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for pb::Certificate {
    fn name(&self) -> &str {
        &self.name
    }
}

/// `base` with `delta` applied: upserts replace by name (or add), removals drop by name (a
/// name `base` does not hold is fine), both lists ordered by name.
///
/// `Err` (the NACK reason) only for a delta that contradicts itself: a name both upserted
/// and removed. The control plane never computes one, so it means a bug there, and refusing
/// it gets the node a full snapshot instead of a guess.
pub fn merge(
    base: &pb::ConfigSnapshot,
    delta: pb::ConfigDelta,
) -> Result<pb::ConfigSnapshot, String> {
    // Destructured fully so a field added to the delta breaks the build instead of being
    // silently ignored here.
    let pb::ConfigDelta {
        base_version: _,
        upserted_services,
        removed_services,
        upserted_policies,
        removed_policies,
        upserted_certificates,
        removed_certificates,
        upserted_consumers,
        removed_consumers,
    } = delta;
    Ok(pb::ConfigSnapshot {
        services: merge_list(
            &base.services,
            upserted_services,
            &removed_services,
            "service",
        )?,
        policies: merge_list(
            &base.policies,
            upserted_policies,
            &removed_policies,
            "policy",
        )?,
        certificates: merge_list(
            &base.certificates,
            upserted_certificates,
            &removed_certificates,
            "certificate",
        )?,
        consumers: merge_list(
            &base.consumers,
            upserted_consumers,
            &removed_consumers,
            "consumer",
        )?,
    })
}

/// One list of [`merge`]; `what` names the kind of item in errors.
fn merge_list<T: Named>(
    base: &[T],
    upserts: Vec<T>,
    removed: &[String],
    what: &str,
) -> Result<Vec<T>, String> {
    // By name, so a name upserted twice counts once (the later one wins, as if applied in
    // order) and the result is ordered.
    let mut upserts: BTreeMap<String, T> = upserts
        .into_iter()
        .map(|item| (item.name().to_owned(), item))
        .collect();
    if let Some(name) = removed
        .iter()
        .find(|name| upserts.contains_key(name.as_str()))
    {
        return Err(format!("delta both upserts and removes {what} '{name}'"));
    }
    let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
    let mut merged = Vec::with_capacity(base.len() + upserts.len());
    for item in base {
        let name = item.name();
        if removed.contains(name) {
            continue;
        }
        match upserts.remove(name) {
            Some(replacement) => merged.push(replacement),
            None => merged.push(item.clone()),
        }
    }
    merged.extend(upserts.into_values());
    // Nearly sorted already (a sorted base plus a few additions at the end): the stable sort
    // finds the runs and this stays linear in practice.
    merged.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, endpoint: &str) -> pb::Service {
        pb::Service {
            name: name.to_owned(),
            endpoints: vec![endpoint.to_owned()],
            ..Default::default()
        }
    }

    fn policy(name: &str, limit: u64) -> pb::Policy {
        pb::Policy {
            name: name.to_owned(),
            limit,
            ..Default::default()
        }
    }

    /// (name, endpoint) of every service, in order.
    fn services(snapshot: &pb::ConfigSnapshot) -> Vec<(&str, &str)> {
        snapshot
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.endpoints[0].as_str()))
            .collect()
    }

    fn base() -> pb::ConfigSnapshot {
        pb::ConfigSnapshot {
            certificates: vec![],
            consumers: vec![],
            services: vec![service("b", "http://b1"), service("d", "http://d1")],
            policies: vec![policy("p", 1), policy("r", 2)],
        }
    }

    fn delta() -> pb::ConfigDelta {
        pb::ConfigDelta {
            base_version: 1,
            ..Default::default()
        }
    }

    /// (what, upserted services, removed services, expected (name, endpoint) in order).
    type Case = (
        &'static str,
        Vec<pb::Service>,
        Vec<&'static str>,
        Vec<(&'static str, &'static str)>,
    );

    #[test]
    fn services_are_upserted_and_removed_by_name_and_stay_ordered() {
        let cases: Vec<Case> = vec![
            (
                "empty delta",
                vec![],
                vec![],
                vec![("b", "http://b1"), ("d", "http://d1")],
            ),
            (
                "new service sorts in the middle",
                vec![service("c", "http://c1")],
                vec![],
                vec![("b", "http://b1"), ("c", "http://c1"), ("d", "http://d1")],
            ),
            (
                "new services first and last",
                vec![service("z", "http://z1"), service("a", "http://a1")],
                vec![],
                vec![
                    ("a", "http://a1"),
                    ("b", "http://b1"),
                    ("d", "http://d1"),
                    ("z", "http://z1"),
                ],
            ),
            (
                "replace keeps the position",
                vec![service("b", "http://b2")],
                vec![],
                vec![("b", "http://b2"), ("d", "http://d1")],
            ),
            (
                "the later of two upserts wins",
                vec![service("d", "http://d2"), service("d", "http://d3")],
                vec![],
                vec![("b", "http://b1"), ("d", "http://d3")],
            ),
            ("remove", vec![], vec!["b"], vec![("d", "http://d1")]),
            (
                "removing an absent name is not an error",
                vec![],
                vec!["x"],
                vec![("b", "http://b1"), ("d", "http://d1")],
            ),
            ("remove all", vec![], vec!["b", "d"], vec![]),
            (
                "upsert one, remove another",
                vec![service("e", "http://e1")],
                vec!["b"],
                vec![("d", "http://d1"), ("e", "http://e1")],
            ),
        ];
        for (what, upserted, removed, expected) in cases {
            let delta = pb::ConfigDelta {
                upserted_services: upserted,
                removed_services: removed.iter().map(|s| (*s).to_owned()).collect(),
                ..delta()
            };
            let merged = merge(&base(), delta).unwrap();
            assert_eq!(services(&merged), expected, "{what}");
            assert_eq!(
                merged.policies,
                base().policies,
                "{what}: policies untouched"
            );
        }
    }

    #[test]
    fn policies_are_upserted_and_removed_by_name() {
        let delta = pb::ConfigDelta {
            upserted_policies: vec![policy("r", 20), policy("a", 3)],
            removed_policies: vec!["p".to_owned(), "absent".to_owned()],
            ..delta()
        };
        let merged = merge(&base(), delta).unwrap();
        assert_eq!(merged.policies, vec![policy("a", 3), policy("r", 20)]);
        assert_eq!(merged.services, base().services, "services untouched");
    }

    #[test]
    fn an_unordered_base_comes_out_ordered() {
        let base = pb::ConfigSnapshot {
            certificates: vec![],
            consumers: vec![],
            services: vec![service("d", "http://d1"), service("b", "http://b1")],
            policies: Vec::new(),
        };
        let merged = merge(&base, delta()).unwrap();
        assert_eq!(services(&merged), [("b", "http://b1"), ("d", "http://d1")]);
    }

    #[test]
    fn a_name_both_upserted_and_removed_is_refused() {
        let services = pb::ConfigDelta {
            upserted_services: vec![service("b", "http://b2")],
            removed_services: vec!["b".to_owned()],
            ..delta()
        };
        assert_eq!(
            merge(&base(), services).unwrap_err(),
            "delta both upserts and removes service 'b'"
        );
        let policies = pb::ConfigDelta {
            upserted_policies: vec![policy("n", 1)],
            removed_policies: vec!["n".to_owned()],
            ..delta()
        };
        assert_eq!(
            merge(&base(), policies).unwrap_err(),
            "delta both upserts and removes policy 'n'"
        );
    }

    /// Not an assertion on time: prints what one merge into a 10,000-service config costs,
    /// the data plane's share of a delta before the sink compiles it.
    /// `cargo test -p gw-data-plane --release --lib merge_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn merge_cost_with_10k_services() {
        let base = pb::ConfigSnapshot {
            certificates: vec![],
            consumers: vec![],
            services: (0..10_000)
                .map(|i| pb::Service {
                    name: format!("svc-{i:05}"),
                    route: Some(pb::Route {
                        path_prefix: format!("/svc-{i:05}"),
                        ..Default::default()
                    }),
                    endpoints: vec!["http://127.0.0.1:9000".to_owned()],
                    ..Default::default()
                })
                .collect(),
            policies: Vec::new(),
        };
        let rounds = 50;
        let started = std::time::Instant::now();
        for k in 0..rounds {
            let delta = pb::ConfigDelta {
                upserted_services: vec![service(&format!("svc-{:05}", k * 197), "http://x")],
                ..delta()
            };
            let merged = merge(&base, delta).unwrap();
            assert_eq!(merged.services.len(), 10_000);
        }
        println!(
            "merge of one changed service into 10,000: {:?} per merge",
            started.elapsed() / rounds
        );
    }
}
