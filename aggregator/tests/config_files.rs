//! Every aggregator config shipped under `config/` parses and validates.

use std::path::{Path, PathBuf};

use threadline_aggregator::config::AggregatorConfig;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn every_shipped_aggregator_config_is_valid() {
    let mut found = 0;
    let mut dirs = vec![config_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("config dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_some_and(|e| e == "toml")
                && text.lines().any(|l| l.trim() == "[database]")
            {
                found += 1;
                if let Err(e) = AggregatorConfig::load(&path) {
                    panic!("{}: {e}", path.display());
                }
            }
        }
    }
    assert!(found >= 1, "aggregator.example.toml is found");
}

#[test]
fn mistakes_are_all_reported() {
    let text = "[aggregator]\nid = \"a\"\nbatch_size = 5\n[mqtt]\nembeded = true\n[database]\nurl = \"mysql://x\"\n[http]\nlisten = \"nowhere\"\n";
    let errs = AggregatorConfig::parse("agg.toml", text)
        .expect_err("mistakes")
        .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    // Structural and cross-field problems come in one report, in file order.
    assert!(
        shown[0].starts_with("agg.toml:3:1: aggregator.batch_size: unknown field"),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("agg.toml:5:1: mqtt.embeded: unknown field")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("agg.toml:7:1: database.url:") && s.contains("postgres://")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("agg.toml:9:1: http.listen:")),
        "{shown:#?}"
    );
    let fixed = text
        .replace("batch_size = 5\n", "")
        .replace("embeded", "embedded");
    let errs = AggregatorConfig::parse("agg.toml", &fixed)
        .expect_err("semantic mistakes")
        .0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
}
