//! Watchlist operations in-process (criterion): `fail` on many items, on one hot item
//! from several threads, and `check`. Target: at least 100 000 `fail` operations/s.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use catchd::time::Time;
use catchd::watchlist::{Settings, Watchlist};

fn list(anonymize: bool) -> Watchlist {
    Watchlist::new(
        Settings {
            anonymize,
            threshold: 1_000_000,
            ..Settings::default()
        },
        anonymize.then(|| b"0123456789abcdef0123456789abcdef".to_vec()),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let items: Vec<String> = (0..100_000u32)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let now = Time::from_micros(1_795_219_200_000_000);
    let mut g = c.benchmark_group("watchlist");
    g.throughput(Throughput::Elements(items.len() as u64));
    for anonymize in [false, true] {
        let w = list(anonymize);
        let name = if anonymize {
            "fail_100k_items_hmac"
        } else {
            "fail_100k_items"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                for it in &items {
                    w.fail(it, now, |c| {
                        std::hint::black_box(c);
                    });
                }
            })
        });
    }
    let w = list(false);
    for it in &items {
        w.fail(it, now, |_| ());
    }
    g.bench_function("check_100k_items", |b| {
        b.iter(|| {
            for it in &items {
                std::hint::black_box(w.check(it, now, |_| ()));
            }
        })
    });
    // Two threads hammering one item: the per-item lock is the whole cost.
    let hot = Arc::new(list(false));
    g.throughput(Throughput::Elements(200_000));
    g.bench_function("fail_one_hot_item_2_threads", |b| {
        b.iter(|| {
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let w = hot.clone();
                    std::thread::spawn(move || {
                        for _ in 0..100_000 {
                            w.fail("hot", now, |_| ());
                        }
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
