//! Benchmarks for BlockTorrent. The criterion micro-benchmarks live in `benches/`; this library is
//! empty so heavy benchmark-only dependencies never enter the normal build.
