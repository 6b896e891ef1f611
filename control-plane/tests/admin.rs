//! AdminService over real gRPC: every RPC's happy path and each error code.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ControlPlane, policy, service};
use gw_proto::v1 as pb;
use tonic::Code;

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should contain {needle:?}",
        status.message()
    );
}

#[tokio::test]
async fn service_lifecycle() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    assert_eq!(admin.list().await.config_version, 0);

    let created = admin.create(service("api", "/api")).await.unwrap();
    assert_eq!(created.config_version, 1);
    let stored = created.service.unwrap();
    assert_eq!((stored.created_version, stored.updated_version), (1, 1));
    let hc = stored.health_check.as_ref().unwrap();
    assert_eq!(
        (hc.path.as_str(), hc.disabled),
        ("", false),
        "defaults are filled in: a TCP connect check"
    );
    assert_eq!(hc.interval.unwrap().seconds, 5);
    assert_eq!(admin.get("api").await.unwrap(), stored);

    let mut changed = service("api", "/api/v2");
    changed.endpoints = vec![
        "http://127.0.0.1:8001".into(),
        "http://localhost:8002/".into(),
    ];
    let updated = admin.update(changed).await.unwrap();
    assert_eq!(updated.config_version, 2);
    let updated = updated.service.unwrap();
    assert_eq!((updated.created_version, updated.updated_version), (1, 2));
    assert_eq!(
        updated.endpoints,
        ["http://127.0.0.1:8001", "http://localhost:8002"]
    );
    assert_eq!(updated.route.unwrap().path_prefix, "/api/v2");

    admin.create(service("web", "/")).await.unwrap();
    let listed = admin.list().await;
    assert_eq!(listed.config_version, 3);
    let names: Vec<_> = listed.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "web"], "ordered by name");

    assert_eq!(admin.delete("api").await.unwrap(), 4);
    assert_status(
        admin.get("api").await,
        Code::NotFound,
        "service 'api' does not exist",
    );
    assert_eq!(admin.list().await.services.len(), 1);
}

#[tokio::test]
async fn invalid_services_get_invalid_argument_naming_the_field() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    let mut bad = service("api", "/api");
    bad.endpoints = vec!["http://ok:1".into(), "htp://x".into()];
    assert_status(
        admin.create(bad).await,
        Code::InvalidArgument,
        "endpoints[1]: 'htp://x' is not an http:// or https:// URL",
    );
    assert_status(
        admin.create(service("Foo", "/foo")).await,
        Code::InvalidArgument,
        "name: 'Foo' must be a lowercase DNS label",
    );
    // Several problems at once are all reported.
    let status = admin.create(service("Foo", "foo")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("name: 'Foo'"),
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("; route.path_prefix: must start with '/'"),
        "{}",
        status.message()
    );
    let req = admin.req(pb::CreateServiceRequest { service: None });
    assert_status(
        admin.client.create_service(req).await,
        Code::InvalidArgument,
        "service: required",
    );
    assert_status(
        admin.update(service("x", "/api/")).await,
        Code::InvalidArgument,
        "route.path_prefix",
    );
    assert_status(admin.get("Bad Name").await, Code::InvalidArgument, "name:");
    assert_eq!(admin.list().await.config_version, 0, "nothing was written");
}

#[tokio::test]
async fn duplicates_get_already_exists() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(service("api", "/api")).await.unwrap();
    assert_status(
        admin.create(service("api", "/other")).await,
        Code::AlreadyExists,
        "service 'api' already exists",
    );
    // Same prefix for any host: the route is taken, and the message names who has it.
    assert_status(
        admin.create(service("api2", "/api")).await,
        Code::AlreadyExists,
        "service 'api'",
    );

    let with_hosts = |name: &str, hosts: &[&str]| {
        let mut s = service(name, "/h");
        s.route.as_mut().unwrap().hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        s
    };
    admin
        .create(with_hosts("h1", &["a.example", "b.example"]))
        .await
        .unwrap();
    admin
        .create(with_hosts("h2", &["c.example"]))
        .await
        .unwrap();
    assert_status(
        admin.create(with_hosts("h3", &["B.example"])).await,
        Code::AlreadyExists,
        "service 'h1' already routes path prefix '/h' for host(s) b.example",
    );
    // Updating a service to collide with another is refused too; keeping its own route is fine.
    assert_status(
        admin.update(with_hosts("h2", &["a.example"])).await,
        Code::AlreadyExists,
        "'h1'",
    );
    admin
        .update(with_hosts("h2", &["c.example", "d.example"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_names_get_not_found() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    assert_status(
        admin.get("nope").await,
        Code::NotFound,
        "service 'nope' does not exist",
    );
    assert_status(
        admin.update(service("nope", "/n")).await,
        Code::NotFound,
        "service 'nope' does not exist",
    );
    assert_status(
        admin.delete("nope").await,
        Code::NotFound,
        "service 'nope' does not exist",
    );
    assert_status(
        admin.delete_policy("nope").await,
        Code::NotFound,
        "policy 'nope' does not exist",
    );
    assert_status(
        admin.put_policy(policy("p", "ghost")).await,
        Code::NotFound,
        "policy.service: service 'ghost' does not exist",
    );
}

#[tokio::test]
async fn policy_lifecycle_and_references() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    admin.create(service("api", "/api")).await.unwrap();

    let put = admin.put_policy(policy("p1", "api")).await.unwrap();
    assert!(put.created);
    assert_eq!(put.config_version, 2);
    let stored = put.policy.unwrap();
    assert_eq!(stored.burst, 5, "burst defaults to limit");
    assert_eq!(stored.mode, i32::from(pb::PolicyMode::Enforce));
    assert_eq!(stored.updated_version, 2);

    let mut replaced = policy("p1", "api");
    replaced.limit = 10;
    replaced.mode = pb::PolicyMode::Shadow.into();
    replaced.key = Some(pb::RateLimitKey {
        source: Some(pb::rate_limit_key::Source::Header("X-Api-Key".into())),
    });
    let put = admin.put_policy(replaced).await.unwrap();
    assert!(!put.created, "same name replaces");
    admin.put_policy(policy("p2", "api")).await.unwrap();
    admin.put_policy(policy("global", "")).await.unwrap();

    let listed = admin.policies().await;
    assert_eq!(listed.config_version, 5);
    let names: Vec<_> = listed.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["global", "p1", "p2"]);
    let p1 = &listed.policies[1];
    assert_eq!((p1.limit, p1.burst), (10, 10));
    assert_eq!(
        p1.key.as_ref().unwrap().source,
        Some(pb::rate_limit_key::Source::Header("x-api-key".into()))
    );

    // The service cannot go while policies name it; the message says which and how.
    assert_status(
        admin.delete("api").await,
        Code::FailedPrecondition,
        "service 'api' is used by policies 'p1', 'p2'; remove them first (gwctl policy rm ...)",
    );
    admin.delete_policy("p1").await.unwrap();
    admin.delete_policy("p2").await.unwrap();
    admin.delete("api").await.unwrap();
    let names: Vec<_> = admin
        .policies()
        .await
        .policies
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["global"], "the all-services policy is unaffected");

    let mut bad = policy("p", "");
    bad.period = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    assert_status(
        admin.put_policy(bad).await,
        Code::InvalidArgument,
        "period: must be between 1s and 24h",
    );
}

#[tokio::test]
async fn admin_token_is_enforced() {
    let cp = ControlPlane::start_with_token(Some("s3cret")).await;
    let mut admin = cp.admin().await;
    admin.create(service("api", "/api")).await.unwrap();
    assert_eq!(
        admin.list().await.services.len(),
        1,
        "the right token is accepted"
    );

    let mut anonymous = admin.client.clone();
    let status = anonymous
        .list_services(pb::ListServicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut req = tonic::Request::new(pb::DeleteServiceRequest { name: "api".into() });
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        anonymous.delete_service(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        admin.list().await.services.len(),
        1,
        "the unauthenticated delete did nothing"
    );

    // The config stream stays open to data planes without a token.
    let mut node = cp.node("dp", 0).await;
    assert_eq!(node.next().await.version, 1);
}

/// Issue 9, items 4 and 7: prefixes that a normalising data plane could never match are
/// refused naming the field, and a huge value is echoed back cut short.
#[tokio::test]
async fn hostile_prefixes_and_huge_values_are_refused_briefly() {
    let cp = ControlPlane::start().await;
    let mut admin = cp.admin().await;
    for (prefix, needle) in [
        ("/a/../b", "dot segment"),
        ("/a/%2e%2E", "dot segment"),
        ("/a%00", "encoded NUL"),
        ("/a%2Fb", "encoded slash"),
    ] {
        assert_status(
            admin.create(service("svc", prefix)).await,
            Code::InvalidArgument,
            &format!("route.path_prefix: '{prefix}' must not contain an {needle}")
                .replace("an dot", "a dot"),
        );
    }
    let huge = "x".repeat(1 << 20);
    let mut bad_endpoint = service("svc", "/ok");
    bad_endpoint.endpoints = vec![format!("ftp://{huge}")];
    // A thousand bad endpoints: listed briefly, still a clean INVALID_ARGUMENT (in full they
    // overflowed the HTTP/2 header the status travels in).
    let mut many = service("svc", "/ok");
    many.endpoints = (0..1000).map(|i| format!("ftp://bad-{i}")).collect();
    let status = admin.create(many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("and 990 more problems"),
        "{}",
        status.message()
    );
    for result in [
        admin.create(service(&huge, "/ok")).await.map(|_| ()),
        admin.create(bad_endpoint).await.map(|_| ()),
    ] {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().len() < 512,
            "{} bytes echoed",
            status.message().len()
        );
        assert!(status.message().contains("xxx..."), "{}", status.message());
    }
}

/// Issue 9, item 7: a request whose protobuf does not decode is the caller's mistake:
/// INVALID_ARGUMENT, not INTERNAL.
#[tokio::test]
async fn undecodable_requests_are_invalid_argument() {
    /// Field 1 of `CreateServiceRequest` is a message; sent as a varint it cannot decode.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbage {
        #[prost(uint64, tag = "1")]
        service: u64,
    }
    let cp = ControlPlane::start().await;
    let channel = tonic::transport::Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(Garbage { service: 7 }),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/gateway.v1.AdminService/CreateService",
            ),
            tonic_prost::ProstCodec::<Garbage, pb::CreateServiceResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("failed to decode"), "{status:?}");
}
