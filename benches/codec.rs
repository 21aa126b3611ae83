//! Codec benchmarks (criterion).

use criterion::{Criterion, criterion_group, criterion_main};

fn codec(_c: &mut Criterion) {}

criterion_group!(benches, codec);
criterion_main!(benches);
