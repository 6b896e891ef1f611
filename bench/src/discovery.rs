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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The config version the response brings the node to.
    pub version: u64,
    /// The response's encoded size in bytes.
    pub bytes: usize,
    /// Snapshot or delta.
    pub kind: Kind,
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
    Snapshot(Skipped),
    #[prost(message, tag = "3")]
    Delta(DeltaBase),
}

/// A message whose every field is skipped (a snapshot's services and policies).
#[derive(Clone, PartialEq, prost::Message)]
struct Skipped {}

/// `ConfigDelta` with only `base_version` read.
#[derive(Clone, PartialEq, prost::Message)]
struct DeltaBase {
    #[prost(uint64, tag = "1")]
    base_version: u64,
}

impl From<Option<SkimKind>> for Kind {
    fn from(kind: Option<SkimKind>) -> Self {
        match kind {
            Some(SkimKind::Snapshot(_)) => Kind::Snapshot,
            Some(SkimKind::Delta(d)) => Kind::Delta {
                base_version: d.base_version,
            },
            None => Kind::Unknown,
        }
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
        Ok(Some(Header {
            version: msg.version,
            bytes,
            kind: msg.kind.into(),
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
        Header {
            version: msg.version,
            bytes: encoded.len(),
            kind: msg.kind.into(),
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
        }
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
