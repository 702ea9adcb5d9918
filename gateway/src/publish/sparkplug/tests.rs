use prost::Message as _;
use threadline_shared::event::{Quality, Reading, TagValue};

use super::node::{EdgeNode, REBIRTH_ALIAS, REBIRTH_METRIC, encode_value, is_rebirth_request};
use super::proto::{DataType, Metric, MetricValue, Payload};
use crate::config::GatewayConfig;

fn cfg(extra: &str) -> GatewayConfig {
    GatewayConfig::parse(
        "t.toml",
        &format!(
            r#"
[gateway]
id = "gw-1"
plant = "p"
line = "l"
data_dir = "/tmp/x"
[mqtt]
url = "mqtt://127.0.0.1:1"
[sparkplug]
group_id = "plant-a"
{extra}
[[device]]
id = "plc"
protocol = "modbus-tcp"
address = "127.0.0.1:502"
  [[device.tag]]
  name = "pressure"
  area = "holding"
  address = 0
  type = "f32"
  [[device.tag]]
  name = "count"
  area = "holding"
  address = 2
  type = "i32"
  [[device.tag]]
  name = "scaled"
  area = "holding"
  address = 4
  scale = 0.1
  [[device.tag]]
  name = "door"
  area = "coil"
  address = 0
  [[device.tag]]
  name = "hidden"
  area = "holding"
  address = 6
  record = false
[[device]]
id = "plc2"
protocol = "modbus-tcp"
address = "127.0.0.1:503"
  [[device.tag]]
  name = "speed"
  area = "holding"
  address = 0
  type = "u16"
"#
        ),
    )
    .unwrap()
}

fn node() -> EdgeNode {
    EdgeNode::new(&cfg(""), "plant-a", "gw-1", 10)
}

fn reading(tag: &str, device: &str, v: Option<TagValue>, q: Quality) -> Reading {
    Reading {
        device: device.into(),
        tag: tag.into(),
        value: v,
        unit: None,
        quality: q,
        error: None,
    }
}

fn decode(b: &[u8]) -> Payload {
    Payload::decode(b).unwrap()
}

#[test]
fn births_carry_bdseq_rebirth_and_every_recorded_tag_with_datatype_and_alias() {
    let mut n = node();
    let out = n.births(7, 1000);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].topic, "spBv1.0/plant-a/NBIRTH/gw-1");
    let nb = decode(&out[0].payload);
    assert_eq!(nb.seq, Some(0));
    let bd = &nb.metrics[0];
    assert_eq!(bd.name.as_deref(), Some("bdSeq"));
    assert_eq!(bd.value, Some(MetricValue::LongValue(7)));
    assert_eq!(bd.datatype, Some(DataType::Int64.code()));
    let rb = &nb.metrics[1];
    assert_eq!(rb.name.as_deref(), Some(REBIRTH_METRIC));
    assert_eq!(rb.datatype, Some(DataType::Boolean.code()));
    assert_eq!(rb.value, Some(MetricValue::BooleanValue(false)));

    assert_eq!(out[1].topic, "spBv1.0/plant-a/DBIRTH/gw-1/plc");
    let db = decode(&out[1].payload);
    assert_eq!(db.seq, Some(1));
    let got: Vec<(String, u64, u32, bool)> = db
        .metrics
        .iter()
        .map(|m| {
            (
                m.name.clone().unwrap(),
                m.alias.unwrap(),
                m.datatype.unwrap(),
                m.is_null == Some(true),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("pressure".into(), 1, DataType::Float.code(), true),
            ("count".into(), 2, DataType::Int32.code(), true),
            ("scaled".into(), 3, DataType::Double.code(), true),
            ("door".into(), 4, DataType::Boolean.code(), true),
        ]
    );
    assert_eq!(out[2].topic, "spBv1.0/plant-a/DBIRTH/gw-1/plc2");
    let db2 = decode(&out[2].payload);
    assert_eq!(db2.seq, Some(2));
    assert_eq!(db2.metrics[0].alias, Some(5));
    assert_eq!(db2.metrics[0].datatype, Some(DataType::UInt16.code()));
    // NDEATH: the same bdSeq, no seq.
    let nd = decode(&n.ndeath(7, 2000).payload);
    assert_eq!(nd.seq, None);
    assert_eq!(nd.metrics[0].value, Some(MetricValue::LongValue(7)));
}

#[test]
fn data_goes_by_alias_with_the_source_timestamp_one_ddata_per_device() {
    let mut n = node();
    n.births(0, 1000);
    let g = Quality::Good;
    n.update(
        &reading("pressure", "plc", Some(TagValue::Float(2.5)), g),
        1500,
        false,
    );
    n.update(
        &reading("count", "plc", Some(TagValue::Int(-3)), g),
        1501,
        false,
    );
    n.update(
        &reading("count", "plc", Some(TagValue::Int(-4)), g),
        1502,
        false,
    );
    let out = n.flush(1600);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/plant-a/DDATA/gw-1/plc");
    let p = decode(&out[0].payload);
    assert_eq!(p.seq, Some(3));
    assert_eq!(
        p.metrics.len(),
        2,
        "the latest value of each changed metric"
    );
    assert!(p.metrics.iter().all(|m| m.name.is_none()));
    assert_eq!(p.metrics[0].alias, Some(1));
    assert_eq!(p.metrics[0].value, Some(MetricValue::FloatValue(2.5)));
    assert_eq!(p.metrics[0].timestamp, Some(1500));
    assert_eq!(p.metrics[1].alias, Some(2));
    // Int32 −4 as two's complement in the uint32 field.
    assert_eq!(
        p.metrics[1].value,
        Some(MetricValue::IntValue((-4i32) as u32))
    );
    assert_eq!(p.metrics[1].timestamp, Some(1502));
    // Nothing changed: nothing to send.
    assert!(n.flush(1700).is_empty());
    // A rebirth carries the latest values.
    let births = n.births(0, 1800);
    let db = decode(&births[1].payload);
    assert_eq!(db.metrics[0].value, Some(MetricValue::FloatValue(2.5)));
    assert_eq!(db.metrics[0].is_null, None);
}

#[test]
fn seq_wraps_from_255_to_0_and_nbirth_resets_it() {
    let mut n = node();
    n.births(0, 0); // seq 0, 1, 2
    let mut seqs = Vec::new();
    for i in 0..300u64 {
        n.update(
            &reading("speed", "plc2", Some(TagValue::UInt(i)), Quality::Good),
            i,
            false,
        );
        let out = n.flush(i);
        seqs.push(decode(&out[0].payload).seq.unwrap());
    }
    assert_eq!(seqs[0], 3);
    assert_eq!(seqs[252], 255);
    assert_eq!(seqs[253], 0);
    assert_eq!(seqs[299], 46);
    assert_eq!(decode(&n.births(1, 0)[0].payload).seq, Some(0));
}

#[test]
fn a_device_whose_tags_all_go_bad_dies_and_is_born_again_with_a_good_value() {
    let mut n = node();
    n.births(0, 0);
    let bad = Quality::Bad;
    n.update(&reading("speed", "plc2", None, bad), 10, false);
    let out = n.flush(10);
    assert_eq!(out[0].topic, "spBv1.0/plant-a/DDEATH/gw-1/plc2");
    assert!(decode(&out[0].payload).seq.is_some());
    // One bad tag of a device with good ones: DDATA, null with the Quality property.
    n.update(&reading("pressure", "plc", None, bad), 11, false);
    let out = n.flush(11);
    assert_eq!(out[0].topic, "spBv1.0/plant-a/DDATA/gw-1/plc");
    let m = &decode(&out[0].payload).metrics[0];
    assert_eq!(m.is_null, Some(true));
    let props = m.properties.as_ref().unwrap();
    assert_eq!(props.keys, vec!["Quality".to_string()]);
    // Back: a DBIRTH.
    n.update(
        &reading("speed", "plc2", Some(TagValue::UInt(5)), Quality::Good),
        12,
        false,
    );
    let out = n.flush(12);
    assert_eq!(out[0].topic, "spBv1.0/plant-a/DBIRTH/gw-1/plc2");
    let m = &decode(&out[0].payload).metrics[0];
    assert_eq!(m.value, Some(MetricValue::IntValue(5)));
}

#[test]
fn held_values_come_back_historical_and_bounded() {
    let mut n = node(); // historical_max 10
    n.births(0, 0);
    for i in 0..15u64 {
        n.update(
            &reading("speed", "plc2", Some(TagValue::UInt(i)), Quality::Good),
            100 + i,
            true,
        );
    }
    assert!(n.flush(200).is_empty(), "held values are not live data");
    assert_eq!(n.historical_dropped, 5);
    let births = n.births(1, 300);
    let db = decode(&births[2].payload);
    assert_eq!(db.metrics[0].value, Some(MetricValue::IntValue(14)));
    let hist = n.historical(300, 4);
    assert_eq!(hist.len(), 3);
    let ms: Vec<Metric> = hist
        .iter()
        .flat_map(|o| decode(&o.payload).metrics)
        .collect();
    assert_eq!(ms.len(), 10);
    assert!(ms.iter().all(|m| m.is_historical == Some(true)));
    assert_eq!(ms[0].timestamp, Some(105), "the oldest were given up");
    assert_eq!(ms[9].value, Some(MetricValue::IntValue(14)));
    assert!(n.historical(400, 4).is_empty());
}

#[test]
fn values_encode_in_the_field_of_their_datatype() {
    use MetricValue::*;
    assert_eq!(
        encode_value(DataType::Int16, &TagValue::Int(-1)),
        Some(IntValue(u32::MAX))
    );
    assert_eq!(
        encode_value(DataType::Int64, &TagValue::Int(-2)),
        Some(LongValue((-2i64) as u64))
    );
    assert_eq!(
        encode_value(DataType::UInt64, &TagValue::UInt(u64::MAX)),
        Some(LongValue(u64::MAX))
    );
    assert_eq!(
        encode_value(DataType::Double, &TagValue::Float(1.25)),
        Some(DoubleValue(1.25))
    );
    assert_eq!(
        encode_value(DataType::String, &TagValue::Text("A1".into())),
        Some(StringValue("A1".into()))
    );
    assert_eq!(
        encode_value(DataType::Boolean, &TagValue::Bool(true)),
        Some(BooleanValue(true))
    );
    assert_eq!(
        encode_value(DataType::UInt16, &TagValue::Text("x".into())),
        None
    );
    assert_eq!(encode_value(DataType::UInt16, &TagValue::Int(-1)), None);
}

#[test]
fn rebirth_requests_are_recognised_by_name_or_alias() {
    let by_name = Payload {
        metrics: vec![Metric {
            name: Some(REBIRTH_METRIC.into()),
            datatype: Some(DataType::Boolean.code()),
            value: Some(MetricValue::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(is_rebirth_request(&by_name.encode_to_vec()).unwrap());
    let by_alias = Payload {
        metrics: vec![Metric {
            alias: Some(REBIRTH_ALIAS),
            value: Some(MetricValue::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(is_rebirth_request(&by_alias.encode_to_vec()).unwrap());
    let no = Payload {
        metrics: vec![Metric {
            name: Some(REBIRTH_METRIC.into()),
            value: Some(MetricValue::BooleanValue(false)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(!is_rebirth_request(&no.encode_to_vec()).unwrap());
    assert!(is_rebirth_request(b"\xff\xff\xff").is_err());
}

#[test]
fn state_payloads_of_3_0_and_2_x() {
    use super::client::host_state_for_test as state;
    assert_eq!(
        state(br#"{"online": true, "timestamp": 1}"#),
        (true, Some(1))
    );
    assert_eq!(
        state(br#"{"online": false, "timestamp": 2}"#),
        (false, Some(2))
    );
    assert_eq!(state(b"ONLINE"), (true, None));
    assert_eq!(state(b"OFFLINE"), (false, None));
    assert_eq!(state(b"garbage"), (false, None));
    assert_eq!(state(br#"{"timestamp": 3}"#), (false, Some(3)));
}

#[test]
fn bad_topic_levels_are_refused_at_their_keys() {
    let text = "[gateway]\nid = \"gw\"\nplant = \"p\"\nline = \"l\"\ndata_dir = \"/tmp/x\"\n\
                [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
                [sparkplug]\ngroup_id = \"a/b\"\nprimary_host_id = \"h#\"\nhistorical_max = 0\n";
    let errs = GatewayConfig::parse("t.toml", text).unwrap_err().0;
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{shown:#?}");
    assert!(shown[0].contains("sparkplug.group_id"), "{shown:#?}");
    assert!(shown[1].contains("sparkplug.primary_host_id"), "{shown:#?}");
    assert!(shown[2].contains("sparkplug.historical_max"), "{shown:#?}");
    assert_eq!(cfg("").sparkplug.unwrap().edge_node_id("gw-1"), "gw-1");
}

#[test]
fn ddata_carries_each_changed_metric_once_and_the_quality_only_when_it_says_something() {
    let mut n = node();
    n.births(0, 0);
    let good = Quality::Good;
    // Two changes of one tag before a flush: one metric, the latest value, no Quality property
    // (good and unchanged since the birth).
    n.update(
        &reading("count", "plc", Some(TagValue::Int(1)), good),
        10,
        false,
    );
    n.update(
        &reading("count", "plc", Some(TagValue::Int(2)), good),
        11,
        false,
    );
    let out = n.flush(12);
    let metrics = decode(&out[0].payload).metrics;
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0].value, Some(MetricValue::IntValue(2)));
    assert_eq!(metrics[0].properties, None);
    // Bad: null with the property; good again: the property once more (the change), then not.
    n.update(&reading("count", "plc", None, Quality::Bad), 13, false);
    let m = &decode(&n.flush(13)[0].payload).metrics[0];
    assert_eq!((m.is_null, m.properties.is_some()), (Some(true), true));
    n.update(
        &reading("count", "plc", Some(TagValue::Int(3)), good),
        14,
        false,
    );
    let m = &decode(&n.flush(14)[0].payload).metrics[0];
    assert!(
        m.properties.is_some(),
        "the return to good is a quality change: {m:?}"
    );
    n.update(
        &reading("count", "plc", Some(TagValue::Int(4)), good),
        15,
        false,
    );
    let m = &decode(&n.flush(15)[0].payload).metrics[0];
    assert_eq!(m.properties, None);
    // A flush with nothing changed sends nothing; a change after it is pending again.
    assert!(n.flush(16).is_empty());
    n.update(
        &reading("count", "plc", Some(TagValue::Int(5)), good),
        17,
        false,
    );
    assert_eq!(decode(&n.flush(17)[0].payload).metrics.len(), 1);
}
