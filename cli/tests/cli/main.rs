//! gwctl end to end: the built binary against a live in-process control plane.
#![allow(clippy::unwrap_used)]

mod apply;
mod certs;
mod completions;
mod connection;
mod consumer_stats;
mod consumers;
mod dev;
mod jwt;
mod nodes;
mod policies;
mod reports;
mod services;
mod support;
