//! What `gwctl dev` prints once the gateway serves the demo: each component with its address,
//! then commands to try with the real addresses filled in.
//!
//! **Format contract** (scripts and tests parse it): one line per component,
//! `  <name padded to 15>http://<addr>`, for `control plane`, `proxy`, `admin`, `service-a`,
//! `service-b`, `service-c`; the last line is [`READY_LINE`].

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::defaults::DEFAULT_CONTROL_PLANE;
use crate::dev::backend::BACKEND_NAMES;
use crate::dev::listeners::{Addresses, dial_address};
use crate::dev::setup::{POLICY_LIMIT, PREFIX};

/// The banner's last line: everything above is printed and the gateway is serving.
pub const READY_LINE: &str = "Ready. Press Ctrl-C to stop everything.";

/// Everything the banner shows.
pub struct Banner<'a> {
    /// The bound addresses.
    pub addresses: &'a Addresses,
    /// The control plane's database URL.
    pub database: &'a str,
    /// Whether the database is removed on exit.
    pub temporary_database: bool,
    /// gwctl's confirmations of the demo service and policy, one line each.
    pub registered: &'a str,
}

impl Banner<'_> {
    /// The text, ending with [`READY_LINE`] and a newline.
    pub fn render(&self) -> String {
        let a = self.addresses;
        let cp = dial_address(a.control_plane);
        let cp_url = format!("http://{cp}");
        let proxy = dial_address(a.proxy);
        let admin = dial_address(a.admin);
        // Plain `gwctl …` works when the control plane is where gwctl looks by default.
        let gwctl = if cp_url == DEFAULT_CONTROL_PLANE {
            "gwctl".to_string()
        } else {
            format!("gwctl --control-plane {cp_url}")
        };

        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "gwctl dev: a local gw gateway in one process\n");
        let mut component = |name: &str, addr: SocketAddr| {
            let _ = writeln!(s, "  {name:<15}http://{addr}");
        };
        component("control plane", a.control_plane);
        component("proxy", a.proxy);
        component("admin", a.admin);
        for (name, addr) in BACKEND_NAMES.iter().zip(a.backends) {
            component(name, addr);
        }
        let _ = writeln!(
            s,
            "  {:<15}{}{}",
            "database",
            self.database,
            if self.temporary_database {
                " (temporary: removed on exit)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "\nConfigured through the control plane's admin API:");
        for line in self.registered.lines() {
            let _ = writeln!(s, "  {line}");
        }

        let _ = writeln!(
            s,
            "\nTry:\n  \
             # {PREFIX}/data goes round robin to service-a, -b, -c; request {} gets 429 \
             (limit {POLICY_LIMIT}/min per IP)\n  \
             for i in $(seq 1 7); do curl -s http://{proxy}{PREFIX}/data; echo; done\n  \
             curl -i http://{proxy}{PREFIX}/data    # RateLimit and Retry-After headers\n\n  \
             # traffic and backend health as the data plane reports them (every few \
             seconds),\n  \
             # the data plane itself, and the registered services\n  \
             {gwctl} stats\n  \
             {gwctl} health\n  \
             {gwctl} nodes\n  \
             {gwctl} service list\n  \
             {gwctl} policy list\n  \
             curl -s http://{admin}/metrics\n\n  \
             # the same gRPC API with grpcurl (server reflection is on)\n  \
             grpcurl -plaintext {cp} list\n  \
             grpcurl -plaintext {cp} describe gateway.v1.AdminService\n  \
             grpcurl -plaintext -d '{{}}' {cp} gateway.v1.AdminService/ListServices\n  \
             grpcurl -plaintext -d '{{}}' {cp} gateway.v1.AdminService/GetStats\n",
            POLICY_LIMIT + 1
        );
        if !a.control_plane.ip().is_loopback() {
            let _ = writeln!(
                s,
                "Note: the control plane listens beyond loopback and takes no admin token here: \
                 anyone who can reach port {} can change this gateway.\n",
                a.control_plane.port()
            );
        }
        let _ = writeln!(s, "{READY_LINE}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(cp: &str, proxy: &str) -> Addresses {
        Addresses {
            proxy: proxy.parse().unwrap(),
            admin: "127.0.0.1:9901".parse().unwrap(),
            control_plane: cp.parse().unwrap(),
            backends: [
                "127.0.0.1:8001".parse().unwrap(),
                "127.0.0.1:8002".parse().unwrap(),
                "127.0.0.1:8003".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn default_addresses_give_the_readme_commands() {
        let addrs = addresses("127.0.0.1:50051", "127.0.0.1:8080");
        let text = Banner {
            addresses: &addrs,
            database: "sqlite:///tmp/x/gw.db",
            temporary_database: true,
            registered: "service 'demo' created (config version 1)\n\
                         policy 'demo-per-ip' created (config version 2)\n",
        }
        .render();
        for want in [
            "  control plane  http://127.0.0.1:50051\n",
            "  proxy          http://127.0.0.1:8080\n",
            "  admin          http://127.0.0.1:9901\n",
            "  service-a      http://127.0.0.1:8001\n",
            "  service-b      http://127.0.0.1:8002\n",
            "  service-c      http://127.0.0.1:8003\n",
            "  database       sqlite:///tmp/x/gw.db (temporary: removed on exit)\n",
            "  service 'demo' created (config version 1)\n",
            "  policy 'demo-per-ip' created (config version 2)\n",
            "request 6 gets 429 (limit 5/min per IP)",
            "  for i in $(seq 1 7); do curl -s http://127.0.0.1:8080/api/data; echo; done\n",
            "  gwctl stats\n",
            "  gwctl health\n",
            "  gwctl nodes\n",
            "  gwctl service list\n",
            "  grpcurl -plaintext 127.0.0.1:50051 list\n",
            "  grpcurl -plaintext 127.0.0.1:50051 describe gateway.v1.AdminService\n",
            "  grpcurl -plaintext -d '{}' 127.0.0.1:50051 gateway.v1.AdminService/ListServices\n",
            "  grpcurl -plaintext -d '{}' 127.0.0.1:50051 gateway.v1.AdminService/GetStats\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(text.ends_with(&format!("\n{READY_LINE}\n")), "{text}");
        assert!(!text.contains("Note:"), "{text}");
    }

    #[test]
    fn other_addresses_are_filled_in_and_wildcards_dialed_over_loopback() {
        let addrs = addresses("0.0.0.0:4000", "[::]:9000");
        let text = Banner {
            addresses: &addrs,
            database: "sqlite://gw.db",
            temporary_database: false,
            registered: "",
        }
        .render();
        for want in [
            "  control plane  http://0.0.0.0:4000\n",
            "  database       sqlite://gw.db\n",
            "curl -s http://[::1]:9000/api/data;",
            "  gwctl --control-plane http://127.0.0.1:4000 stats\n",
            "  gwctl --control-plane http://127.0.0.1:4000 health\n",
            "  gwctl --control-plane http://127.0.0.1:4000 nodes\n",
            "  gwctl --control-plane http://127.0.0.1:4000 service list\n",
            "  grpcurl -plaintext 127.0.0.1:4000 list\n",
            "Note: the control plane listens beyond loopback and takes no admin token here: \
             anyone who can reach port 4000 can change this gateway.\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
