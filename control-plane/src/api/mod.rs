//! The gRPC edge: AdminService (`admin`), ConfigDiscoveryService (`discovery`), the
//! admin-token check (`auth`), and the one place where store and validation errors become
//! gRPC statuses (`status`).

pub mod admin;
pub mod auth;
pub mod discovery;
pub mod status;
