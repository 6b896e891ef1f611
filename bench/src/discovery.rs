//! A light config-discovery client for simulating many data planes from one process.
//!
//! A simulated node must receive every byte of each `DiscoveryResponse` (that is what the
//! control plane sends and the network carries), but decoding a 10,000-service snapshot 100
//! times per change on the simulator's one core would measure the simulator, not the control
//! plane: real nodes decode their own copy in parallel on their own machines. So this codec
//! reads only the `version` field and the message's size, skipping the snapshot bytes.

use bytes::Buf as _;
use gw_proto::v1 as pb;
use prost::Message as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// gRPC path of `ConfigDiscoveryService.StreamConfig`.
const STREAM_CONFIG: &str = "/gateway.v1.ConfigDiscoveryService/StreamConfig";

/// What a simulated node keeps of a `DiscoveryResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The config version the response brings the node to.
    pub version: u64,
    /// The response's encoded size in bytes.
    pub bytes: usize,
}

/// `DiscoveryResponse` with every field but `version` left unknown (and so skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct VersionOnly {
    #[prost(uint64, tag = "1")]
    version: u64,
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
        let msg = VersionOnly::decode(src).map_err(|e| Status::internal(format!("decode: {e}")))?;
        Ok(Some(Header {
            version: msg.version,
            bytes,
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

    #[test]
    fn header_skips_the_snapshot_but_counts_its_bytes() {
        let full = pb::DiscoveryResponse {
            version: 42,
            kind: Some(pb::discovery_response::Kind::Snapshot(pb::ConfigSnapshot {
                services: vec![pb::Service {
                    name: "s".into(),
                    ..Default::default()
                }],
                policies: Vec::new(),
            })),
        };
        let encoded = full.encode_to_vec();
        let msg = VersionOnly::decode(encoded.as_slice()).unwrap();
        assert_eq!(msg.version, 42);
        assert!(encoded.len() > 2);
    }
}
