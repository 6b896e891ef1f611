//! Shared pieces of gw's benchmarks (see bench/README.md). Benchmarks report figures; they are
//! never pass/fail tests.
//!
//! The binaries in `src/bin/` are the benchmarks themselves: `upstream` (a fast backend),
//! `loadgen` (closed-loop and fixed-rate HTTP load with an HDR histogram), `proxy` (the
//! interleaved proxy comparison driver) and `propagation` (config fan-out timings). This library
//! holds what more than one of them needs.

pub mod discovery;
pub mod harness;
pub mod procs;
pub mod procstat;
pub mod report;
pub mod stats;
