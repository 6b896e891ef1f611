//! Default addresses and settings that both the flag definitions (`args`) and the code that
//! uses them (`client`, `dev`) read, kept apart so that neither imports the other for them.

/// Where gwctl looks for the control plane when neither `--control-plane` nor
/// `GW_CONTROL_PLANE` says: the control plane's own default listen address.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:50051";

/// How long one call may take unless `--timeout` says otherwise. Admin calls are single small
/// transactions; anything slower than this means the control plane is stuck, and saying so
/// beats hanging.
pub const DEFAULT_TIMEOUT: &str = "30s";

/// `gwctl dev`'s default proxy address: the README's quick start curls it. Loopback: a demo
/// should not be reachable from the network unless asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data-plane admin address, the data plane's own default.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default control-plane address: where gwctl and the data plane look by default, so the
/// printed `gwctl` commands need no flags.
pub const DEFAULT_CONTROL_PLANE_LISTEN: &str = "127.0.0.1:50051";
/// Default demo backend ports, as in the README.
pub const DEFAULT_BACKEND_PORTS: &str = "8001,8002,8003";
