//! grpc.health.v1 and server reflection (v1 and v1alpha), so grpcurl works without protos.

#![allow(clippy::unwrap_used)]

mod common;

use common::ControlPlane;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Well-known files that gateway.proto imports.
const IMPORTS: [&str; 2] = [
    "google/protobuf/duration.proto",
    "google/protobuf/timestamp.proto",
];

const EXPECTED: [&str; 3] = [
    "gateway.v1.AdminService",
    "gateway.v1.ConfigDiscoveryService",
    "grpc.health.v1.Health",
];

/// One test per reflection protocol version; the generated types differ only by module.
macro_rules! reflection_lists_and_describes {
    ($test:ident, $version:ident) => {
        #[tokio::test]
        async fn $test() {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{ServerReflectionRequest, ServerReflectionResponse};

            let cp = ControlPlane::start().await;
            let mut client = ServerReflectionClient::new(cp.channel().await);
            let ask = |m: MessageRequest| ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            };
            let mut requests = vec![ask(MessageRequest::ListServices(String::new()))];
            for symbol in EXPECTED {
                requests.push(ask(MessageRequest::FileContainingSymbol(symbol.into())));
            }
            // grpcurl fetches imported files by name to describe messages that use them.
            for file in IMPORTS {
                requests.push(ask(MessageRequest::FileByFilename(file.into())));
            }
            let mut answers = client
                .server_reflection_info(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let ServerReflectionResponse { message_response, .. } =
                answers.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = message_response else {
                panic!("unexpected answer: {message_response:?}");
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            for want in EXPECTED {
                assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
            }
            // describe: each service's defining file is served, so no .proto is needed.
            for symbol in EXPECTED.iter().chain(&IMPORTS) {
                let ServerReflectionResponse { message_response, .. } =
                    answers.message().await.unwrap().unwrap();
                assert!(
                    matches!(
                        message_response,
                        Some(MessageResponse::FileDescriptorResponse(ref f))
                            if !f.file_descriptor_proto.is_empty()
                    ),
                    "{symbol}: {message_response:?}"
                );
            }
        }
    };
}

reflection_lists_and_describes!(reflection_v1_lists_and_describes_every_service, v1);
reflection_lists_and_describes!(
    reflection_v1alpha_lists_and_describes_every_service,
    v1alpha
);

#[tokio::test]
async fn health_reports_serving_for_both_services_and_the_server() {
    let cp = ControlPlane::start().await;
    let mut health = HealthClient::new(cp.channel().await);
    for service in [
        "",
        "gateway.v1.AdminService",
        "gateway.v1.ConfigDiscoveryService",
    ] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_watchers_see_not_serving_and_do_not_hold_up_shutdown() {
    let cp = ControlPlane::start().await;
    let mut health = HealthClient::new(cp.channel().await);
    let mut watches = Vec::new();
    for service in ["", "gateway.v1.AdminService"] {
        let mut w = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = w.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);
        watches.push(w);
    }
    tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, cp.stop())
        .await
        .expect("shutdown hung on open health watches")
        .unwrap();
    for mut w in watches {
        // The server itself ends each watch after reporting NOT_SERVING (were it left open,
        // this would time out).
        let drained = tokio::time::timeout(gw_testkit::DEFAULT_DEADLINE, async {
            let mut last = None;
            while let Ok(Some(msg)) = w.message().await {
                last = Some(msg.status());
            }
            last
        });
        let last = drained
            .await
            .expect("health watch left open after shutdown");
        assert_eq!(last, Some(ServingStatus::NotServing));
    }
}
