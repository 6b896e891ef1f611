//! Generated code for the `gateway.v1` protobuf package (messages, tonic clients and servers)
//! and the encoded file descriptor set for gRPC server reflection, plus the protocol's string
//! constants that the .proto defines only in comments, and the `Debug` of the messages that
//! hold secrets (redacted). Domain types and validation belong to the crates that use the API.

#![allow(clippy::all, missing_docs)]

mod debug;

/// `gateway.v1`: the admin API and the config-discovery stream.
pub mod v1 {
    tonic::include_proto!("gateway.v1");

    /// Encoded `FileDescriptorSet` of `gateway.v1`, for `tonic-reflection`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("gateway_v1_descriptor");

    /// The `NodeHello.capabilities` entry of a data plane that applies `ConfigDelta`
    /// responses (see `DiscoveryResponse.delta`).
    pub const CAPABILITY_DELTA: &str = "delta";

    /// The `NodeHello.capabilities` entry of a data plane that takes `FleetUpdate` responses
    /// (see `DiscoveryResponse.fleet`).
    pub const CAPABILITY_FLEET: &str = "fleet";
}
