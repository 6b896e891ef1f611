//! Compiles `gateway/v1/*.proto` with the protoc binary shipped inside the `protoc-bin-vendored`
//! crate, so building needs nothing but cargo. Also writes the encoded descriptor set that the
//! control plane serves through gRPC server reflection.

use std::path::PathBuf;

/// Messages holding a secret (a private key, an API key in clear, an HS256 secret). Skipping
/// a message's Debug also skips its oneofs' (`jwt_credential::Key`).
const SECRET_HOLDERS: [&str; 3] = [
    ".gateway.v1.Certificate",
    ".gateway.v1.CreateApiKeyResponse",
    ".gateway.v1.JwtCredential",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["gateway/v1/gateway.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("gateway_v1_descriptor.bin"))
        // Messages with a secret field get a hand-written Debug that redacts it (src/debug.rs);
        // messages that contain them keep the derived one, which calls it.
        .skip_debug(SECRET_HOLDERS)
        .compile_with_config(
            config,
            &protos.map(PathBuf::from),
            &[PathBuf::from("."), protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}
