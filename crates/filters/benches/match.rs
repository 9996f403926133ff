//! Parse and match speed of containerd-style filters.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use berth_filters::{Fields, parse, parse_all};
use criterion::{Criterion, criterion_group, criterion_main};

const FILTERS: &[(&str, &str)] = &[
    ("presence", "labels.foo"),
    ("equal", "name==docker.io/library/busybox:latest"),
    (
        "quoted_label",
        r#"labels."com.example.tier"==web,name!=redis"#,
    ),
    ("regex", r#"name~=/^docker\.io\/library\/[a-z]+:/"#),
];

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (id, filter) in FILTERS {
        group.bench_function(*id, |b| b.iter(|| parse(black_box(filter))));
    }
    group.bench_function("parse_all_4", |b| {
        let all: Vec<&str> = FILTERS.iter().map(|(_, f)| *f).collect();
        b.iter(|| parse_all(black_box(&all)))
    });
    group.finish();
}

fn bench_match(c: &mut Criterion) {
    let labels: HashMap<String, String> = (0..16)
        .map(|i| (format!("com.example.key{i}"), format!("value{i}")))
        .chain([("com.example.tier".to_owned(), "web".to_owned())])
        .collect();
    let name = "docker.io/library/busybox:latest";
    let mut group = c.benchmark_group("match");
    for (id, filter) in FILTERS {
        let filter = parse(filter).expect("bench filters are valid");
        group.bench_function(*id, |b| {
            b.iter(|| {
                let fields = Fields::new()
                    .with("name", black_box(name))
                    .with("target.digest", "sha256:0123")
                    .with_labels(&labels);
                filter.matches(&fields)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse, bench_match);
criterion_main!(benches);
