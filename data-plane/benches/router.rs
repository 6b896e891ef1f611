//! Route lookup cost (issue 5): a table of 10,000 services, any-host and host-specific, for
//! shallow and deep request paths, plus the `strip_prefix` rewrite.
//!
//! Run: `cargo bench -p gw-data-plane --bench router`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::Criterion;
use gw_data_plane::config::router::{RouteSpec, RouteTable, strip_prefix};
use http::uri::PathAndQuery;

const SERVICES: usize = 10_000;

fn table() -> RouteTable {
    let mut routes = Vec::with_capacity(SERVICES + 1);
    routes.push(RouteSpec {
        path_prefix: "/".into(),
        hosts: vec![],
        service: 0,
    });
    for i in 1..SERVICES {
        routes.push(RouteSpec {
            path_prefix: format!("/svc-{i}/v{}", i % 3),
            hosts: if i % 10 == 0 {
                vec![format!("h{i}.example.com")]
            } else {
                vec![]
            },
            service: i,
        });
    }
    RouteTable::build(&routes).unwrap()
}

fn bench(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("route_lookup_10k");
    g.bench_function("shallow_hit", |b| {
        b.iter(|| {
            t.lookup(
                black_box(Some("api.example.com:8080")),
                black_box("/svc-4242/v1/users"),
            )
        })
    });
    g.bench_function("deep_hit", |b| {
        b.iter(|| {
            t.lookup(
                black_box(Some("api.example.com")),
                black_box("/svc-4242/v1/users/42/orders/7/items/3"),
            )
        })
    });
    g.bench_function("root_fallback", |b| {
        b.iter(|| t.lookup(black_box(None), black_box("/static/css/site.css")))
    });
    g.bench_function("host_specific", |b| {
        b.iter(|| {
            t.lookup(
                black_box(Some("h4240.example.com")),
                black_box("/svc-4240/v1/x"),
            )
        })
    });
    g.finish();
    let pq = PathAndQuery::from_static("/svc-4242/v1/users/42?page=2");
    c.bench_function("strip_prefix", |b| {
        b.iter(|| strip_prefix(black_box(&pq), black_box(12)))
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
