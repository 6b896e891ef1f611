//! Binding every address `gwctl dev` needs before anything starts.
//!
//! All listeners are bound up front so that a port already in use fails the whole launch with
//! one line naming the flag, having started nothing; and so that port 0 resolves to real
//! ports that can be printed and registered before any server runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

use crate::args::DevArgs;
use crate::error::DevError;

/// Every listener of a `gwctl dev` run, bound.
pub struct Listeners {
    /// The data plane's proxy (client traffic).
    pub proxy: TcpListener,
    /// The data plane's admin endpoints.
    pub admin: TcpListener,
    /// The control plane's gRPC server.
    pub control_plane: TcpListener,
    /// The demo backends, in [`BACKEND_NAMES`](crate::dev::backend::BACKEND_NAMES) order.
    pub backends: [TcpListener; 3],
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The data plane's proxy.
    pub proxy: SocketAddr,
    /// The data plane's admin endpoints.
    pub admin: SocketAddr,
    /// The control plane.
    pub control_plane: SocketAddr,
    /// The demo backends, in [`BACKEND_NAMES`](crate::dev::backend::BACKEND_NAMES) order.
    pub backends: [SocketAddr; 3],
}

impl Listeners {
    /// Binds, in the order the flags appear in `--help`, stopping at the first failure.
    pub async fn bind(args: &DevArgs) -> Result<Self, DevError> {
        let proxy = bind("--listen", args.listen).await?;
        let admin = bind("--admin-listen", args.admin_listen).await?;
        let control_plane = bind("--control-plane-listen", args.control_plane_listen).await?;
        let [a, b, c] = args.backend_ports.0.map(backend_address);
        let backends = [
            bind("--backend-ports", a).await?,
            bind("--backend-ports", b).await?,
            bind("--backend-ports", c).await?,
        ];
        Ok(Self {
            proxy,
            admin,
            control_plane,
            backends,
        })
    }

    /// The bound addresses.
    pub fn addresses(&self) -> Result<Addresses, DevError> {
        let local = |l: &TcpListener| l.local_addr().map_err(DevError::LocalAddr);
        let [a, b, c] = &self.backends;
        Ok(Addresses {
            proxy: local(&self.proxy)?,
            admin: local(&self.admin)?,
            control_plane: local(&self.control_plane)?,
            backends: [local(a)?, local(b)?, local(c)?],
        })
    }
}

/// Where a demo backend listens: loopback, since only the local data plane calls it.
pub fn backend_address(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The address to dial to reach a listener bound to `addr`: a wildcard bind (`0.0.0.0`,
/// `[::]`) is reached over loopback.
pub fn dial_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

async fn bind(flag: &'static str, address: SocketAddr) -> Result<TcpListener, DevError> {
    TcpListener::bind(address)
        .await
        .map_err(|e| DevError::Bind {
            flag,
            address,
            reason: crate::client::strip_os_error(&e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::BackendPorts;

    fn args(listen: SocketAddr, backend_ports: [u16; 3]) -> DevArgs {
        let any = backend_address(0);
        DevArgs {
            database: None,
            listen,
            admin_listen: any,
            control_plane_listen: any,
            backend_ports: BackendPorts(backend_ports),
            redis_url: None,
            redis_timeout: None,
        }
    }

    #[tokio::test]
    async fn port_zero_binds_and_reports_real_ports() {
        let listeners = Listeners::bind(&args(backend_address(0), [0, 0, 0]))
            .await
            .unwrap();
        let addrs = listeners.addresses().unwrap();
        let all = [
            addrs.proxy,
            addrs.admin,
            addrs.control_plane,
            addrs.backends[0],
            addrs.backends[1],
            addrs.backends[2],
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(a.ip().is_loopback(), "{a}");
            assert_ne!(a.port(), 0, "{a}");
            assert!(!all[..i].contains(a), "{a} bound twice");
        }
    }

    #[tokio::test]
    async fn a_taken_port_names_the_flag_and_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = Listeners::bind(&args(addr, [0, 0, 0])).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            format!("--listen {addr}: address already in use")
        );

        let err = Listeners::bind(&args(backend_address(0), [0, addr.port(), 0]))
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!("--backend-ports {addr}: address already in use")
        );
    }

    #[test]
    fn wildcard_binds_are_dialed_over_loopback() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("127.0.0.2:1", "127.0.0.2:1"),
            ("[::1]:9", "[::1]:9"),
        ];
        for (bound, dialed) in cases {
            let bound: SocketAddr = bound.parse().unwrap();
            assert_eq!(dial_address(bound).to_string(), dialed);
        }
    }
}
