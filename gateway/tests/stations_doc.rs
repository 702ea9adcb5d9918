//! The worked example of `docs/stations.md` is a test: its config, its scan / edge sequence and
//! the events it shows are read from the document and replayed through the engine.

#![allow(clippy::unwrap_used)] // helpers of tests panic on purpose

use serde_json::Value;
use threadline_gateway::config::GatewayConfig;
use threadline_gateway::drivers::{RawScan, TagUpdate};
use threadline_gateway::stations::StationEngine;
use threadline_shared::event::{Quality, Record, TagValue};
use threadline_shared::time::parse;

/// The fenced block that follows `<!-- example:NAME -->`.
fn block<'a>(doc: &'a str, name: &str) -> &'a str {
    let marker = format!("<!-- example:{name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} missing"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("```").unwrap()]
}

fn value(text: &str) -> TagValue {
    match text {
        "true" => TagValue::Bool(true),
        "false" => TagValue::Bool(false),
        _ if text.parse::<i64>().is_ok() => TagValue::Int(text.parse().unwrap()),
        _ if text.parse::<f64>().is_ok() => TagValue::Float(text.parse().unwrap()),
        _ => TagValue::Text(text.trim_matches('"').to_owned()),
    }
}

#[test]
fn worked_example_in_docs_is_exact() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/stations.md"))
        .unwrap();
    let cfg = match GatewayConfig::parse("docs/stations.md", block(&doc, "config")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut engine = StationEngine::new(&cfg, None);
    let t0 = parse("2026-11-25T08:00:00Z").unwrap();
    let mut got = Vec::new();
    for line in block(&doc, "sequence").lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let mut it = line.split_whitespace();
        let ts = t0 + chrono::Duration::seconds(it.next().unwrap().parse().unwrap());
        let what = it.next().unwrap();
        let a = it.next().unwrap();
        let b = it.collect::<Vec<_>>().join(" ");
        let events = match what {
            "tag" => engine.on_tag(&TagUpdate {
                device: "plc".into(),
                tag: a.into(),
                value: Some(value(&b)),
                quality: Quality::Good,
                error: None,
                ts,
            }),
            "scan" => {
                let scanner = cfg
                    .scanner
                    .iter()
                    .find(|s| s.station == a)
                    .map_or("?", |s| s.id.as_str());
                engine.on_scan(&RawScan {
                    scanner: scanner.into(),
                    station: a.into(),
                    raw: b,
                    rfid: false,
                    ts,
                    error: None,
                })
            }
            other => panic!("unknown step {other:?}"),
        };
        for e in events {
            // As the outbox numbers them (seq from 1 in a fresh epoch), in canonical JSON.
            let record = Record {
                seq: got.len() as u64 + 1,
                ts: e.ts,
                body: e.body,
            };
            got.push(String::from_utf8(record.canonical_json()).unwrap());
        }
    }
    let parse_all = |lines: Vec<&str>| -> Vec<Value> {
        lines
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let want = parse_all(block(&doc, "events").lines().collect());
    if parse_all(got.iter().map(String::as_str).collect()) != want {
        panic!(
            "docs/stations.md example events differ; the engine produced:\n{}",
            got.join("\n")
        );
    }
}

#[test]
fn wiring_lines_for_check() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/stations.md"))
        .unwrap();
    let cfg = GatewayConfig::parse("docs/stations.md", block(&doc, "config")).unwrap();
    let lines = cfg.station_wiring();
    assert_eq!(
        lines[0],
        "ST10 process \"OP10 press-fit bearing\" on PRESS-1: scanners [\"st10-scanner\"]; unit from scan; \
         starts units; completes on press.cycle_done rising; result press.ok; captures [\"press.pressure\"]; \
         environment [\"hall.temp\"]; feeders [P-6202×1]"
    );
    assert_eq!(
        lines[1],
        "PK1 pack \"PK1\": scanners [\"pk1-scanner\"]; packs case of 2"
    );
}
