//! A light config-discovery client for simulating many data planes from one process.
//!
//! A simulated node must receive every byte of each `DiscoveryResponse` (that is what the
//! control plane sends and the network carries), but decoding a 10,000-service snapshot 100
//! times per change on the simulator's one core would measure the simulator, not the control
//! plane: real nodes decode their own copy in parallel on their own machines. So this codec
//! reads only the `version` field, the kind (snapshot, or delta with its `base_version`) and
//! the message's size, skipping the services and policies inside.
//!
//! [`SimNode`] is what a simulated node does with that: it announces the "delta" capability,
//! holds a version, and answers as a real node would: ACK a snapshot; ACK a delta whose base
//! is the version it holds; NACK a delta from any other base (the control plane then sends a
//! snapshot).
//!
//! The consumers (small: names and API key hashes) are decoded too, so a simulated node can
//! say which key hashes the version it acked holds ([`HeldKeys`]): that is how the revocation
//! measure checks a node acked a version *without* the revoked key.

use std::collections::BTreeMap;

use bytes::Buf as _;
use gw_proto::v1 as pb;
use prost::Message as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// gRPC path of `ConfigDiscoveryService.StreamConfig`.
const STREAM_CONFIG: &str = "/gateway.v1.ConfigDiscoveryService/StreamConfig";

/// The `NodeHello.capabilities` entry for nodes that apply deltas (as the data plane sends).
pub const DELTA_CAPABILITY: &str = gw_proto::v1::CAPABILITY_DELTA;

/// What a simulated node keeps of a `DiscoveryResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The config version the response brings the node to.
    pub version: u64,
    /// The response's encoded size in bytes.
    pub bytes: usize,
    /// Snapshot or delta.
    pub kind: Kind,
    /// The consumers it carries.
    pub consumers: ConsumerChange,
}

/// The consumers a response carries: a snapshot's replace every consumer the node holds; a
/// delta's are upserted and removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerChange {
    /// A snapshot: `upserted` is every consumer, the others are gone.
    pub replace_all: bool,
    /// Consumers added or changed, each complete with its API key hashes.
    pub upserted: Vec<pb::Consumer>,
    /// Names of consumers removed.
    pub removed: Vec<String>,
}

/// The API key hashes a simulated node holds, by consumer, updated as a real node updates its
/// consumers when it applies a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldKeys {
    by_consumer: BTreeMap<String, Vec<Vec<u8>>>,
}

impl HeldKeys {
    /// Applies the consumers of a response the node ACKed.
    pub fn apply(&mut self, change: &ConsumerChange) {
        if change.replace_all {
            self.by_consumer.clear();
        }
        for name in &change.removed {
            self.by_consumer.remove(name);
        }
        for c in &change.upserted {
            let hashes = c.api_keys.iter().map(|k| k.hash.clone()).collect();
            self.by_consumer.insert(c.name.clone(), hashes);
        }
    }

    /// Whether any consumer holds a key with this SHA-256.
    pub fn holds(&self, hash: &[u8]) -> bool {
        self.by_consumer.values().flatten().any(|h| h == hash)
    }
}

/// Which kind of response a [`Header`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The whole config.
    Snapshot,
    /// Changes since `base_version`.
    Delta {
        /// The version the changes apply to.
        base_version: u64,
    },
    /// No kind this simulator knows.
    Unknown,
}

/// `DiscoveryResponse` read only as far as the simulator needs: the version and the kind,
/// with the snapshot's and delta's contents left unknown (and so skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Skim {
    #[prost(uint64, tag = "1")]
    version: u64,
    #[prost(oneof = "SkimKind", tags = "2, 3")]
    kind: Option<SkimKind>,
}

/// `DiscoveryResponse.kind`, contents skipped.
#[derive(Clone, PartialEq, prost::Oneof)]
enum SkimKind {
    #[prost(message, tag = "2")]
    Snapshot(SnapshotConsumers),
    #[prost(message, tag = "3")]
    Delta(DeltaBase),
}

/// `ConfigSnapshot` with only its consumers read (services and policies skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotConsumers {
    #[prost(message, repeated, tag = "50")]
    consumers: Vec<pb::Consumer>,
}

/// `ConfigDelta` with only `base_version` and the consumers read.
#[derive(Clone, PartialEq, prost::Message)]
struct DeltaBase {
    #[prost(uint64, tag = "1")]
    base_version: u64,
    #[prost(message, repeated, tag = "50")]
    upserted_consumers: Vec<pb::Consumer>,
    #[prost(string, repeated, tag = "51")]
    removed_consumers: Vec<String>,
}

/// The kind and the consumers of a skimmed response.
fn split(kind: Option<SkimKind>) -> (Kind, ConsumerChange) {
    match kind {
        Some(SkimKind::Snapshot(s)) => (
            Kind::Snapshot,
            ConsumerChange {
                replace_all: true,
                upserted: s.consumers,
                removed: Vec::new(),
            },
        ),
        Some(SkimKind::Delta(d)) => (
            Kind::Delta {
                base_version: d.base_version,
            },
            ConsumerChange {
                replace_all: false,
                upserted: d.upserted_consumers,
                removed: d.removed_consumers,
            },
        ),
        None => (Kind::Unknown, ConsumerChange::default()),
    }
}

/// A simulated data plane's config state: the version it holds, and how it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNode {
    /// The version held (0: none yet).
    pub version: u64,
}

impl SimNode {
    /// The ACK or NACK a real node would send for `header`, updating the version held on
    /// ACK. A delta applies only to exactly the version held.
    pub fn answer(&mut self, header: &Header) -> pb::DiscoveryRequest {
        let kind = match header.kind {
            Kind::Delta { base_version } if base_version != self.version => {
                pb::discovery_request::Kind::Nack(pb::ConfigNack {
                    version: header.version,
                    error: format!(
                        "delta from version {base_version} does not apply: this node holds version {}",
                        self.version
                    ),
                })
            }
            Kind::Unknown => pb::discovery_request::Kind::Nack(pb::ConfigNack {
                version: header.version,
                error: "unsupported response kind".to_owned(),
            }),
            Kind::Snapshot | Kind::Delta { .. } => {
                self.version = header.version;
                pb::discovery_request::Kind::Ack(pb::ConfigAck {
                    version: header.version,
                })
            }
        };
        pb::DiscoveryRequest { kind: Some(kind) }
    }
}

/// Encodes `DiscoveryRequest`s, decodes responses as [`Header`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderCodec;

impl Codec for HeaderCodec {
    type Encode = pb::DiscoveryRequest;
    type Decode = Header;
    type Encoder = HeaderCodec;
    type Decoder = HeaderCodec;

    fn encoder(&mut self) -> Self::Encoder {
        HeaderCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        HeaderCodec
    }
}

impl Encoder for HeaderCodec {
    type Item = pb::DiscoveryRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

impl Decoder for HeaderCodec {
    type Item = Header;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Header>, Status> {
        let bytes = src.remaining();
        let msg = Skim::decode(src).map_err(|e| Status::internal(format!("decode: {e}")))?;
        let (kind, consumers) = split(msg.kind);
        Ok(Some(Header {
            version: msg.version,
            bytes,
            kind,
            consumers,
        }))
    }
}

/// Opens `StreamConfig` on `channel` with [`HeaderCodec`], accepting messages up to
/// `max_message` bytes.
pub async fn stream_config(
    channel: Channel,
    requests: impl tokio_stream::Stream<Item = pb::DiscoveryRequest> + Send + 'static,
    max_message: usize,
) -> Result<tonic::Streaming<Header>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_message);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(STREAM_CONFIG);
    let resp = grpc
        .streaming(tonic::Request::new(requests), path, HeaderCodec)
        .await?;
    Ok(resp.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the codec makes of `response`.
    fn skim(response: &pb::DiscoveryResponse) -> Header {
        let encoded = response.encode_to_vec();
        let msg = Skim::decode(encoded.as_slice()).unwrap();
        let (kind, consumers) = split(msg.kind);
        Header {
            version: msg.version,
            bytes: encoded.len(),
            kind,
            consumers,
        }
    }

    fn service(name: &str) -> pb::Service {
        pb::Service {
            name: name.into(),
            endpoints: vec!["http://127.0.0.1:9".into()],
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_is_read_as_its_version_and_kind_and_counted_whole() {
        let full = pb::DiscoveryResponse {
            epoch: 0,
            version: 42,
            kind: Some(pb::discovery_response::Kind::Snapshot(pb::ConfigSnapshot {
                certificates: vec![],
                consumers: vec![],
                services: vec![service("s"), service("t")],
                policies: Vec::new(),
            })),
        };
        assert_eq!(
            skim(&full),
            Header {
                version: 42,
                bytes: full.encoded_len(),
                kind: Kind::Snapshot,
                consumers: ConsumerChange {
                    replace_all: true,
                    ..Default::default()
                },
            }
        );
    }

    #[test]
    fn delta_is_read_with_its_base_version() {
        let delta = pb::DiscoveryResponse {
            epoch: 0,
            version: 9,
            kind: Some(pb::discovery_response::Kind::Delta(pb::ConfigDelta {
                base_version: 8,
                upserted_services: vec![service("s")],
                removed_services: vec!["t".into()],
                ..Default::default()
            })),
        };
        assert_eq!(
            skim(&delta),
            Header {
                version: 9,
                bytes: delta.encoded_len(),
                kind: Kind::Delta { base_version: 8 },
                consumers: ConsumerChange::default(),
            }
        );
        let none = pb::DiscoveryResponse {
            epoch: 0,
            version: 3,
            kind: None,
        };
        assert_eq!(skim(&none).kind, Kind::Unknown);
    }

    fn header(version: u64, kind: Kind) -> Header {
        Header {
            version,
            bytes: 1,
            kind,
            consumers: ConsumerChange::default(),
        }
    }

    fn consumer(name: &str, hashes: &[&[u8]]) -> pb::Consumer {
        pb::Consumer {
            name: name.into(),
            api_keys: hashes
                .iter()
                .map(|h| pb::ApiKey {
                    hash: h.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn held_keys_follow_the_consumers_of_snapshots_and_deltas() {
        let response = |version, kind| pb::DiscoveryResponse {
            epoch: 0,
            version,
            kind: Some(kind),
        };
        let mut held = HeldKeys::default();
        let snapshot = response(
            1,
            pb::discovery_response::Kind::Snapshot(pb::ConfigSnapshot {
                services: vec![service("s")],
                consumers: vec![consumer("a", &[b"ka1", b"ka2"]), consumer("b", &[b"kb"])],
                ..Default::default()
            }),
        );
        held.apply(&skim(&snapshot).consumers);
        assert!(held.holds(b"ka2") && held.holds(b"kb"));

        // A revocation: consumer a upserted without ka2.
        let revoke = response(
            2,
            pb::discovery_response::Kind::Delta(pb::ConfigDelta {
                base_version: 1,
                upserted_consumers: vec![consumer("a", &[b"ka1"])],
                ..Default::default()
            }),
        );
        held.apply(&skim(&revoke).consumers);
        assert!(!held.holds(b"ka2"));
        assert!(held.holds(b"ka1") && held.holds(b"kb"));

        let remove = response(
            3,
            pb::discovery_response::Kind::Delta(pb::ConfigDelta {
                base_version: 2,
                removed_consumers: vec!["b".into()],
                upserted_services: vec![service("t")],
                ..Default::default()
            }),
        );
        held.apply(&skim(&remove).consumers);
        assert!(!held.holds(b"kb") && held.holds(b"ka1"));

        // A snapshot replaces everything held.
        let empty = response(
            4,
            pb::discovery_response::Kind::Snapshot(pb::ConfigSnapshot::default()),
        );
        held.apply(&skim(&empty).consumers);
        assert_eq!(held, HeldKeys::default());
    }

    fn ack(version: u64) -> pb::DiscoveryRequest {
        pb::DiscoveryRequest {
            kind: Some(pb::discovery_request::Kind::Ack(pb::ConfigAck { version })),
        }
    }

    #[test]
    fn sim_node_acks_snapshots_and_deltas_on_its_version_and_nacks_others() {
        let mut node = SimNode::default();
        assert_eq!(node.answer(&header(5, Kind::Snapshot)), ack(5));
        assert_eq!(node.version, 5);
        assert_eq!(
            node.answer(&header(6, Kind::Delta { base_version: 5 })),
            ack(6)
        );
        assert_eq!(node.version, 6);

        let nack = node.answer(&header(8, Kind::Delta { base_version: 7 }));
        let Some(pb::discovery_request::Kind::Nack(nack)) = nack.kind else {
            panic!("a delta from another base must be NACKed: {nack:?}");
        };
        assert_eq!(nack.version, 8);
        assert_eq!(
            nack.error,
            "delta from version 7 does not apply: this node holds version 6"
        );
        assert_eq!(node.version, 6, "a NACK changes nothing");

        assert!(matches!(
            node.answer(&header(9, Kind::Unknown)).kind,
            Some(pb::discovery_request::Kind::Nack(_))
        ));
        // The snapshot the control plane answers a NACK with.
        assert_eq!(node.answer(&header(8, Kind::Snapshot)), ack(8));
        assert_eq!(node.version, 8);
    }
}
