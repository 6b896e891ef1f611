//! Shared pieces of gw's benchmarks (see bench/README.md). Benchmarks report figures; they are
//! never pass/fail tests.
