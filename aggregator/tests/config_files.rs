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
                // Relative paths in a shipped config are meant from the repository root (as
                // docs/demo.md runs them); the test runs in aggregator/.
                let root = config_dir().join("..");
                let text = text.replace(
                    "routes_file = \"config/",
                    &format!("routes_file = \"{}/config/", root.display()),
                );
                if let Err(e) = AggregatorConfig::parse(&path.display().to_string(), &text) {
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
    // The embedded broker with neither a password file nor allow_anonymous is a third one.
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs.iter()
            .any(|e| e.field == "mqtt.embedded" && e.message.contains("broker_password_file")),
        "{errs:#?}"
    );
}

#[test]
fn writers_are_checked_against_the_connection_pool() {
    let base = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[database]\nurl = \"postgres://x@h/db\"\n";
    let cfg = AggregatorConfig::parse("agg.toml", base).expect("defaults");
    assert_eq!(cfg.writers(), 4, "default with 8 connections");
    let small = format!("{base}max_connections = 3\n");
    let cfg = AggregatorConfig::parse("agg.toml", &small).expect("small pool");
    assert_eq!(cfg.writers(), 1, "half the pool, at least one");
    let too_many = format!("[aggregator]\nwriters = 8\n{base}max_connections = 8\n");
    let errs = AggregatorConfig::parse("agg.toml", &too_many)
        .expect_err("writers take every connection")
        .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        shown.len() == 1
            && shown[0].starts_with("agg.toml:2:1: aggregator.writers:")
            && shown[0].contains("max_connections is 8"),
        "{shown:#?}"
    );
    let zero = format!("[aggregator]\nwriters = 0\n{base}");
    let errs = AggregatorConfig::parse("agg.toml", &zero)
        .expect_err("zero")
        .0;
    assert!(
        errs[0].to_string().contains("expected 1 to 64"),
        "{errs:#?}"
    );
}

#[test]
fn a_zero_retention_is_refused() {
    let text = "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[database]\nurl = \"sqlite://x.db\"\nreadings_retention_days = 0\n";
    let errs = AggregatorConfig::parse("agg.toml", text)
        .expect_err("zero")
        .0;
    let shown = errs[0].to_string();
    assert!(
        shown.starts_with("agg.toml:5:1: database.readings_retention_days:")
            && shown.contains("at least 1"),
        "{shown}"
    );
    let ok = text.replace("= 0", "= 90");
    let cfg = AggregatorConfig::parse("agg.toml", &ok).expect("90 days");
    assert_eq!(cfg.database.readings_retention_days, Some(90));
}
