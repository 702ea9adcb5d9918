//! Every gateway config shipped under `config/` parses and validates; mistakes are reported
//! all at once with file, line, column and field.

use std::path::{Path, PathBuf};

use threadline_gateway::config::GatewayConfig;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Gateway configs are the TOML files under `config/` with a `[gateway]` table.
fn gateway_configs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![config_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("config dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml")
                && std::fs::read_to_string(&path)
                    .expect("readable")
                    .lines()
                    .any(|l| l.trim() == "[gateway]")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_shipped_gateway_config_is_valid() {
    let files = gateway_configs();
    assert!(
        files.iter().any(|f| f.ends_with("gateway.example.toml")),
        "{files:?}"
    );
    for f in files {
        if let Err(e) = GatewayConfig::load(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn example_config_has_the_documented_values() {
    let cfg = GatewayConfig::load(&config_dir().join("gateway.example.toml")).expect("valid");
    assert_eq!(cfg.gateway.id, "gw-line-1");
    assert_eq!(cfg.client_id(), "gw-line-1");
    assert_eq!(cfg.device.len(), 3);
    assert_eq!(cfg.device[0].tag[0].name, "press.pressure");
    assert_eq!(cfg.station[0].feeder[0].part, "P-6202");
    // One serial reader and one USB HID handheld, both at ST10.
    use threadline_gateway::config::{KeyboardLayout, ScannerLink};
    assert!(matches!(cfg.scanner[0].link(), Some(ScannerLink::Serial(s)) if s.baud == 9600));
    let Some(ScannerLink::Hid(hid)) = cfg.scanner[1].link() else {
        panic!("scanner[1] is the HID example: {:?}", cfg.scanner[1]);
    };
    assert_eq!(hid.layout, KeyboardLayout::De);
    assert_eq!(hid.char_timeout_ms, 50);
    assert_eq!(cfg.scanner[1].station, "ST10");
}

#[test]
fn three_mistakes_give_three_precise_messages() {
    let text =
        std::fs::read_to_string(config_dir().join("gateway.example.toml")).expect("readable");
    let broken = text
        .replacen(
            "  scan_ms = 100\n  deadband = 0.5",
            "  scan_msec = 100\n  deadband = 0.5",
            1,
        )
        .replacen("parity = \"even\"", "parity = \"evn\"", 1)
        .replacen(
            "complete_on = { tag = \"press.cycle_done\"",
            "complete_on = { tag = \"press.cycle_dne\"",
            1,
        );
    let errs = GatewayConfig::parse("line-1.toml", &broken)
        .expect_err("three mistakes")
        .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "every problem at once: {shown:#?}");
    // The line of the first mistake, counted in the example itself (comments there may grow).
    let line = text[..text
        .find("  scan_ms = 100\n  deadband = 0.5")
        .expect("example has the tag")]
        .lines()
        .count()
        + 1;
    assert!(
        shown[0].starts_with(&format!(
            "line-1.toml:{line}:3: device[0].tag[0].scan_msec: unknown field `scan_msec`"
        )),
        "{}",
        shown[0]
    );
    assert!(
        shown[0].contains("scan_ms"),
        "lists the expected fields: {}",
        shown[0]
    );
    assert!(
        shown[1].contains("device[1].parity") && shown[1].contains("evn"),
        "{}",
        shown[1]
    );
    assert!(
        shown[1].contains("even") && shown[1].contains("odd"),
        "lists the valid values: {}",
        shown[1]
    );
    assert_eq!(errs[2].field, "station[0].complete_on.tag");
    assert!(
        errs[2].line > 0 && errs[2].message.contains("press.cycle_dne"),
        "{}",
        errs[2]
    );
}

#[test]
fn a_wrong_protocol_names_the_valid_ones() {
    let text =
        std::fs::read_to_string(config_dir().join("gateway.example.toml")).expect("readable");
    let broken = text.replacen("protocol = \"modbus-rtu\"", "protocol = \"modbus-rtv\"", 1);
    let errs = GatewayConfig::parse("line-1.toml", &broken)
        .expect_err("bad protocol")
        .0;
    assert!(
        errs[0].to_string().contains("device[1].protocol"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].message.contains("modbus-rtv") && errs[0].message.contains("modbus-tcp"),
        "{}",
        errs[0]
    );
}

/// The file of issue 20: a wrong type on line 6, an unknown enum value on line 13 and an
/// unknown key on line 26. serde alone stops at the first; `check` reports all three.
const THREE_MISTAKES: &str = r#"[gateway]
id = "gw-line-1"
plant = "plant-a"
line = "line-1"
data_dir = "/tmp/threadline-three-mistakes"
buffer_max_mb = "big"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[device]]
id = "press-plc"
protocol = "modbus-tcpp"
address = "127.0.0.1:5020"
unit_id = 1
timeout_ms = 1000

  [[device.tag]]
  name = "press.pressure"
  area = "holding"
  address = 100
  type = "f32"
  order = "ABCD"
  unit = "bar"
  scan_ms = 100
  scan_msec = 100
"#;

#[test]
fn a_wrong_type_an_unknown_enum_value_and_an_unknown_key_are_all_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("line-1.toml");
    std::fs::write(&path, THREE_MISTAKES).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_threadline-gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let f = path.display();
    let lines: Vec<&str> = err.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "3 problems in the configuration:".to_owned(),
            format!("{f}:6:17: gateway.buffer_max_mb: invalid type: string \"big\", expected u64"),
            format!(
                "{f}:13:12: device[0].protocol: unknown variant `modbus-tcpp`, expected one of \
                 `modbus-tcp`, `modbus-rtu`, `opcua`"
            ),
            format!(
                "{f}:26:3: device[0].tag[0].scan_msec: unknown field `scan_msec`, expected one \
                 of `name`, `area`, `address`, `type`, `order`, `length`, `scale`, `offset`, \
                 `unit`, `scan_ms`, `deadband`, `record`, `node_id`, `sampling_ms`, `writable`"
            ),
        ],
        "{err}"
    );
}

#[test]
fn sparkplug_example_has_the_documented_section_and_datatypes() {
    use threadline_gateway::publish::sparkplug::node::tag_datatype;
    use threadline_gateway::publish::sparkplug::proto::DataType;
    let cfg =
        GatewayConfig::load(&config_dir().join("gateway.sparkplug.example.toml")).expect("valid");
    let sp = cfg.sparkplug.as_ref().expect("[sparkplug]");
    assert!(sp.enabled);
    assert_eq!(sp.group_id, "plant-a");
    assert_eq!(sp.edge_node_id(&cfg.gateway.id), "line-1-gw");
    assert_eq!(sp.primary_host_id.as_deref(), Some("scada"));
    assert_eq!(sp.historical_max, 100_000);
    // The datatypes the example's comments name.
    let d = &cfg.device[0];
    let types: Vec<(&str, Option<DataType>, bool)> = d
        .tag
        .iter()
        .map(|t| (t.name.as_str(), tag_datatype(d.protocol, t), t.record))
        .collect();
    assert_eq!(
        types,
        vec![
            ("press.pressure", Some(DataType::Float), true),
            ("press.strokes", Some(DataType::UInt32), true),
            ("press.oil_temp", Some(DataType::Double), true),
            ("press.cycle_done", Some(DataType::Boolean), true),
            ("press.recipe_step", Some(DataType::UInt16), false),
        ]
    );
    // The main example has no [sparkplug]: absent = not published.
    let main = GatewayConfig::load(&config_dir().join("gateway.example.toml")).expect("valid");
    assert!(main.sparkplug.is_none());
}

#[test]
fn a_sparkplug_mistake_names_its_key() {
    let text = std::fs::read_to_string(config_dir().join("gateway.sparkplug.example.toml"))
        .expect("readable");
    let broken = text.replacen("group_id = \"plant-a\"", "group = \"plant-a\"", 1);
    let errs = GatewayConfig::parse("spb.toml", &broken)
        .expect_err("unknown key")
        .0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        shown[0].contains("sparkplug") && shown[0].contains("group"),
        "{shown:#?}"
    );
}

#[test]
fn route_enforcement_needs_its_section_and_a_plain_http_url() {
    let text =
        std::fs::read_to_string(config_dir().join("gateway.example.toml")).expect("readable");
    let cfg = GatewayConfig::parse("line-1.toml", &text).expect("valid");
    let route = cfg.route.as_ref().expect("the example has [route]");
    assert_eq!(route.lookup_timeout_ms, 1000);
    assert_eq!(
        route.when_unreachable,
        threadline_gateway::route::WhenUnreachable::Block
    );
    assert!(cfg.station[0].enforce_route);

    // Without [route], the enforcing station is refused at its key.
    let start = text.find("[route]").expect("example has [route]");
    let end = start + text[start..].find("\n\n").expect("section ends");
    let without = format!("{}{}", &text[..start], &text[end..]);
    let errs = GatewayConfig::parse("line-1.toml", &without)
        .expect_err("enforce_route without [route]")
        .0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "station[0].enforce_route");
    let line = without[..without.find("enforce_route = true").expect("key")]
        .lines()
        .count()
        + 1;
    assert_eq!(errs[0].line, line, "{}", errs[0]);

    // https (no TLS in the gateway's HTTP client) and a zero timeout, both at their keys.
    let broken = text
        .replacen(
            "aggregator_url = \"http://",
            "aggregator_url = \"https://",
            1,
        )
        .replacen("lookup_timeout_ms = 1000", "lookup_timeout_ms = 0", 1);
    let errs = GatewayConfig::parse("line-1.toml", &broken)
        .expect_err("two mistakes")
        .0;
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["route.aggregator_url", "route.lookup_timeout_ms"],
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.line > 0), "{errs:#?}");
}

#[test]
fn an_interlock_needs_a_writable_tag() {
    let text =
        std::fs::read_to_string(config_dir().join("gateway.example.toml")).expect("readable");
    let with = text.replacen(
        "interlock = { tag = \"st10.ok_to_run\"",
        "interlock = { tag = \"press.ok\"",
        1,
    );
    let errs = GatewayConfig::parse("line-1.toml", &with)
        .expect_err("press.ok is not writable")
        .0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "station[0].interlock.tag");
    let line = with[..with.find("interlock = {").expect("key")]
        .lines()
        .count()
        + 1;
    let shown = errs[0].to_string();
    assert!(
        shown.starts_with(&format!("line-1.toml:{line}:"))
            && shown.contains("not writable: declare `writable = true`"),
        "{shown}"
    );
}

/// An OPC UA interlock tag must say its node's data type (the Write carries it); with it, the
/// config is valid.
#[test]
fn an_opc_ua_interlock_needs_the_node_type() {
    let text =
        std::fs::read_to_string(config_dir().join("gateway.example.toml")).expect("readable");
    let untyped = text
        .replacen(
            "  sampling_ms = 250                           # subscription (monitored item), not polling",
            "  sampling_ms = 250\n  writable = true # the OPC UA interlock",
            1,
        )
        .replacen(
            "interlock = { tag = \"st10.ok_to_run\"",
            "interlock = { tag = \"oven.zone1.temp\"",
            1,
        );
    assert_ne!(untyped, text);
    let errs = GatewayConfig::parse("line-1.toml", &untyped)
        .expect_err("no type")
        .0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].field, "station[0].interlock.tag");
    assert!(
        errs[0]
            .message
            .contains("an OPC UA interlock needs the node's `type`"),
        "{errs:#?}"
    );
    let typed = untyped.replacen(
        "writable = true # the OPC UA interlock",
        "writable = true\n  type = \"f32\"",
        1,
    );
    GatewayConfig::parse("line-1.toml", &typed).unwrap_or_else(|e| panic!("{e}"));
}
