//! The gRPC edge: AdminService (`admin`), ConfigDiscoveryService (`discovery`), the
//! admin-token check (`auth`), decode errors answered INVALID_ARGUMENT (`decode`), and the
//! one place where store and validation errors become gRPC statuses (`status`).

pub mod admin;
pub mod auth;
pub mod decode;
pub mod discovery;
pub mod status;
