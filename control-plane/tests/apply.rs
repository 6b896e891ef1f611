//! `AdminService.ApplyConfig` over gRPC, as a data plane that takes deltas sees it: one delta
//! for a whole document, and nothing for a document that changes nothing. (Refusals, field
//! violations and the admin token are covered through gwctl in `cli/tests/cli/apply.rs`, the
//! planning in `src/apply/tests.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use common::{ControlPlane, policy, service};
use gw_proto::v1 as pb;

fn request(services: Vec<pb::Service>, policies: Vec<pb::Policy>) -> pb::ApplyConfigRequest {
    pb::ApplyConfigRequest {
        services,
        policies,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_takes_deltas_gets_one_delta_for_a_whole_document() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.add("old", "/old").await;
    let v1 = admin.add("kept", "/kept").await;
    let mut node = cp.node_with("dp-delta", 0, 0, &["delta"]).await;
    assert_eq!(node.next().await.version, v1);
    node.ack(v1).await;

    // Adds two services and a policy, rewrites `kept`, prunes `old`: one version.
    let mut kept = service("kept", "/kept");
    kept.endpoints = vec!["http://127.0.0.1:7".to_owned()];
    let mut apply = request(
        vec![service("a", "/a"), service("b", "/b"), kept],
        vec![policy("p", "a")],
    );
    apply.prune = true;
    let req = admin.req(apply);
    let answer = admin.client.apply_config(req).await.unwrap().into_inner();
    assert!(answer.applied);
    assert_eq!(answer.config_version, v1 + 1);
    let diff = answer.diff.unwrap();
    let services = diff.services.unwrap();
    assert_eq!(services.added, ["a", "b"]);
    assert_eq!(services.changed[0].name, "kept");
    assert_eq!(services.changed[0].fields, ["endpoints"]);
    assert_eq!(services.removed, ["old"]);

    let pushed = node.next().await;
    assert_eq!(pushed.version, v1 + 1);
    let d = common::delta(&pushed);
    assert_eq!(d.base_version, v1);
    let upserted: Vec<&str> = d.upserted_services.iter().map(|s| &*s.name).collect();
    assert_eq!(upserted, ["a", "b", "kept"]);
    assert_eq!(d.removed_services, ["old"]);
    assert_eq!(d.upserted_policies.len(), 1);
    node.ack(v1 + 1).await;

    // The same document again: nothing applied, no version, nothing pushed (the next push is
    // the next real change).
    let mut again = request(
        vec![service("a", "/a"), service("b", "/b"), {
            let mut k = service("kept", "/kept");
            k.endpoints = vec!["http://127.0.0.1:7".to_owned()];
            k
        }],
        vec![policy("p", "a")],
    );
    again.prune = true;
    let req = admin.req(again);
    let answer = admin.client.apply_config(req).await.unwrap().into_inner();
    assert!(!answer.applied);
    assert_eq!(answer.config_version, v1 + 1);
    let v3 = admin.delete("b").await.unwrap();
    assert_eq!(v3, v1 + 2);
    assert_eq!(node.next().await.version, v3);
}
