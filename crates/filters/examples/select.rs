//! Filters a small list of images the way a List call does.
//!
//! Run with filters as arguments (any one may match), e.g.
//! `cargo run -p berth-filters --example select -- 'labels."com.example.tier"==web' 'name~=^redis'`

use std::collections::HashMap;
use std::process::ExitCode;

use berth_filters::{Fields, parse_all};

struct Image {
    name: &'static str,
    labels: HashMap<String, String>,
}

fn image(name: &'static str, labels: &[(&str, &str)]) -> Image {
    Image {
        name,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn main() -> ExitCode {
    let mut filters: Vec<String> = std::env::args().skip(1).collect();
    if filters.is_empty() {
        filters = vec![
            r#"labels."com.example.tier"==web"#.to_owned(),
            "name~=^redis".to_owned(),
        ];
    }
    let filter = match parse_all(&filters) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("invalid filter: {err}");
            return ExitCode::FAILURE;
        }
    };

    let images = [
        image("nginx:1.27", &[("com.example.tier", "web")]),
        image("redis:7", &[("com.example.tier", "cache")]),
        image("postgres:16", &[]),
    ];
    println!("filters: {filters:?}");
    for img in &images {
        let fields = Fields::new()
            .with("name", img.name)
            .with_labels(&img.labels);
        let verdict = if filter.matches(&fields) {
            "match"
        } else {
            "-"
        };
        println!("{verdict:>6}  {}", img.name);
    }
    ExitCode::SUCCESS
}
