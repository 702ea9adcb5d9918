//! What a new config changes against the running one, and how it is applied: live (only the
//! changed drivers restart, station logic is rebuilt from its committed state) or by a restart in
//! place of the whole gateway (same process, same outbox), or not at all.
//!
//! The diff is taken on the TOML documents, so that it names what the engineer edited (a device
//! by id, a tag by name, a field by key) rather than derived values.

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

use crate::config::GatewayConfig;

/// Sections a running gateway cannot change without restarting everything that uses them.
const RESTART_SECTIONS: [&str; 4] = ["mqtt", "health", "sparkplug", "route"];
/// `[gateway]` fields that make it another gateway (another identity or another outbox): never
/// applied by a reload.
const IDENTITY_FIELDS: [&str; 2] = ["id", "data_dir"];
/// Driver arrays, keyed by `id`.
const DRIVERS: [(&str, &str); 2] = [("device", "device"), ("scanner", "scanner")];

/// A driver of the running gateway: a `[[device]]` or a `[[scanner]]`, by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DriverId {
    /// `"device"` or `"scanner"`.
    pub kind: &'static str,
    pub id: String,
}

impl std::fmt::Display for DriverId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// The outcome of comparing two configs.
#[derive(Debug, Default)]
pub struct Plan {
    /// What changed, one line each (indented lines detail the line above).
    pub changes: Vec<String>,
    /// Drivers to stop (removed or changed).
    pub stop: BTreeSet<DriverId>,
    /// Drivers to start (added or changed).
    pub start: BTreeSet<DriverId>,
    /// Drivers that keep running untouched.
    pub untouched: BTreeSet<DriverId>,
    /// `[[station]]` or `[[pattern]]` changed: the station logic is rebuilt.
    pub stations: bool,
    /// Why the whole gateway must restart in place (empty: applied live).
    pub restart: Vec<String>,
    /// Why the new config cannot be applied by a reload at all (empty: it can).
    pub refused: Vec<String>,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan for people: the changes, then how they will be applied.
    pub fn lines(&self) -> Vec<String> {
        if self.is_empty() {
            return vec!["no changes".to_owned()];
        }
        let mut out = self.changes.clone();
        let ids = |set: &BTreeSet<DriverId>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.refused.is_empty() {
            out.push(format!(
                "not applied by a reload: {}; restart the service instead \
                 (systemctl restart threadline-gateway)",
                self.refused.join("; ")
            ));
        } else if !self.restart.is_empty() {
            out.push(format!(
                "the whole gateway restarts in place (same process and outbox; every device \
                 pauses for a moment): {}",
                self.restart.join("; ")
            ));
        } else {
            let mut live = Vec::new();
            let restarted: BTreeSet<&DriverId> = self.stop.intersection(&self.start).collect();
            let only = |a: &BTreeSet<DriverId>| {
                a.iter()
                    .filter(|d| !restarted.contains(d))
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            };
            if !restarted.is_empty() {
                let r: Vec<String> = restarted.iter().map(ToString::to_string).collect();
                live.push(format!("restart {}", r.join(", ")));
            }
            let (stopped, started) = (only(&self.stop), only(&self.start));
            if !stopped.is_empty() {
                live.push(format!("stop {}", stopped.join(", ")));
            }
            if !started.is_empty() {
                live.push(format!("start {}", started.join(", ")));
            }
            if self.stations {
                live.push("rebuild the station logic from its committed state".to_owned());
            }
            if live.is_empty() {
                live.push("new reading rules".to_owned());
            }
            out.push(format!("applied live: {}", live.join("; ")));
            if !self.untouched.is_empty() {
                out.push(format!(
                    "untouched, polling without a gap: {}",
                    ids(&self.untouched)
                ));
            }
        }
        out
    }
}

/// Compares the running config (`old`, parsed from `old_text`) with a validated new one.
pub fn plan(old: &GatewayConfig, old_text: &str, new: &GatewayConfig, new_text: &str) -> Plan {
    let (a, b) = (document(old_text), document(new_text));
    let mut p = Plan::default();

    // [gateway]
    let (ga, gb) = (section(&a, "gateway"), section(&b, "gateway"));
    for key in keys(ga.as_ref(), gb.as_ref()) {
        let (va, vb) = (field(ga.as_ref(), &key), field(gb.as_ref(), &key));
        if va != vb {
            p.changes
                .push(format!("[gateway] {}", describe_field(&key, va, vb)));
            if IDENTITY_FIELDS.contains(&key.as_str()) {
                p.refused.push(format!("gateway.{key} changed"));
            } else {
                p.restart.push(format!("gateway.{key} changed"));
            }
        }
    }
    // Whole sections.
    for name in RESTART_SECTIONS {
        let (sa, sb) = (section(&a, name), section(&b, name));
        if sa == sb {
            continue;
        }
        match (&sa, &sb) {
            (None, Some(_)) => p.changes.push(format!("[{name}]: added")),
            (Some(_), None) => p.changes.push(format!("[{name}]: removed")),
            _ => {
                for key in keys(sa.as_ref(), sb.as_ref()) {
                    let (va, vb) = (field(sa.as_ref(), &key), field(sb.as_ref(), &key));
                    if va != vb {
                        p.changes
                            .push(format!("[{name}] {}", describe_field(&key, va, vb)));
                    }
                }
            }
        }
        p.restart.push(format!("[{name}] changed"));
    }

    // Drivers, by id.
    for (array, kind) in DRIVERS {
        let (ia, ib) = (by_id(&a, array), by_id(&b, array));
        for id in ia.keys().chain(ib.keys()).collect::<BTreeSet<_>>() {
            let d = DriverId {
                kind,
                id: id.clone(),
            };
            match (ia.get(id), ib.get(id)) {
                (Some(x), Some(y)) if x == y => {
                    p.untouched.insert(d);
                }
                (Some(x), Some(y)) => {
                    p.changes.push(format!("{d}: changed"));
                    p.changes.extend(driver_details(x, y));
                    p.stop.insert(d.clone());
                    p.start.insert(d);
                }
                (Some(_), None) => {
                    p.changes.push(format!("{d}: removed"));
                    p.stop.insert(d);
                }
                (None, Some(_)) => {
                    p.changes.push(format!("{d}: added"));
                    p.start.insert(d);
                }
                (None, None) => {}
            }
        }
    }

    // Station logic.
    let (sa, sb) = (by_id(&a, "station"), by_id(&b, "station"));
    for id in sa.keys().chain(sb.keys()).collect::<BTreeSet<_>>() {
        let what = match (sa.get(id), sb.get(id)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), Some(_)) => "changed",
            (Some(_), None) => "removed",
            (None, Some(_)) => "added",
            (None, None) => continue,
        };
        p.changes.push(format!("station {id}: {what}"));
        p.stations = true;
    }
    let (pa, pb) = (array_of(&a, "pattern"), array_of(&b, "pattern"));
    if pa != pb {
        p.changes.push(format!(
            "[[pattern]]: changed ({} → {} patterns)",
            pa.len(),
            pb.len()
        ));
        p.stations = true;
    }

    // What cannot be applied live even though only drivers or stations changed.
    let drivers_changed = !p.stop.is_empty() || !p.start.is_empty();
    if drivers_changed && old.sparkplug.is_some() && new.sparkplug.is_some() {
        p.restart
            .push("devices changed while [sparkplug] publishes their births".to_owned());
    }
    if old.route.is_some() && new.route.is_some() {
        if p.stations {
            p.restart
                .push("stations changed while [route] checks them".to_owned());
        }
        let interlocked = interlock_devices(old)
            .union(&interlock_devices(new))
            .cloned()
            .collect::<BTreeSet<_>>();
        if p.stop
            .iter()
            .any(|d| d.kind == "device" && interlocked.contains(&d.id))
        {
            p.restart
                .push("a device that an interlock writes changed".to_owned());
        }
    }
    p
}

/// Devices holding an interlock tag.
fn interlock_devices(cfg: &GatewayConfig) -> BTreeSet<String> {
    cfg.station
        .iter()
        .filter_map(|s| s.interlock.as_ref())
        .filter_map(|il| {
            cfg.device
                .iter()
                .find(|d| d.tag.iter().any(|t| t.name == il.tag))
                .map(|d| d.id.clone())
        })
        .collect()
}

fn document(text: &str) -> Table {
    text.parse::<Table>().unwrap_or_default()
}

fn section(doc: &Table, name: &str) -> Option<Table> {
    doc.get(name).and_then(Value::as_table).cloned()
}

fn array_of(doc: &Table, name: &str) -> Vec<Value> {
    doc.get(name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The tables of an array of tables, by their `id` (or `name`).
fn by_id(doc: &Table, name: &str) -> BTreeMap<String, Table> {
    keyed(&array_of(doc, name), "id")
}

fn keyed(items: &[Value], key: &str) -> BTreeMap<String, Table> {
    items
        .iter()
        .filter_map(Value::as_table)
        .enumerate()
        .map(|(i, t)| {
            let k = t
                .get(key)
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{i}"), str::to_owned);
            (k, t.clone())
        })
        .collect()
}

fn keys(a: Option<&Table>, b: Option<&Table>) -> BTreeSet<String> {
    a.into_iter()
        .chain(b)
        .flat_map(|t| t.keys().cloned())
        .collect()
}

fn field<'a>(t: Option<&'a Table>, key: &str) -> Option<&'a Value> {
    t.and_then(|t| t.get(key))
}

/// `key: old → new`. The gateway's file holds no secret itself (passwords and keys are in
/// the files it names: `password_file`, `signing_key_file`), so values are shown as written.
fn describe_field(key: &str, a: Option<&Value>, b: Option<&Value>) -> String {
    let show = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_owned(), Value::to_string);
    format!("{key}: {} → {}", show(a), show(b))
}

/// The detail lines of a changed device or scanner: its fields, then its tags by name.
fn driver_details(a: &Table, b: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys(Some(a), Some(b)) {
        if key == "tag" {
            continue;
        }
        let (va, vb) = (a.get(&key), b.get(&key));
        if va != vb {
            out.push(format!("  {}", describe_field(&key, va, vb)));
        }
    }
    let tags = |t: &Table| {
        keyed(
            t.get("tag")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice),
            "name",
        )
    };
    let (ta, tb) = (tags(a), tags(b));
    for name in ta.keys().chain(tb.keys()).collect::<BTreeSet<_>>() {
        match (ta.get(name), tb.get(name)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let fields: Vec<String> = keys(Some(x), Some(y))
                    .into_iter()
                    .filter(|k| x.get(k) != y.get(k))
                    .map(|k| describe_field(&k, x.get(&k), y.get(&k)))
                    .collect();
                out.push(format!("  tag {name}: {}", fields.join(", ")));
            }
            (Some(_), None) => out.push(format!("  tag {name}: removed")),
            (None, Some(_)) => out.push(format!("  tag {name}: added")),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
id = "gw"
plant = "p"
line = "l"
data_dir = "/tmp/gw"

[mqtt]
url = "mqtt://127.0.0.1:1883"
username = "one"

[[device]]
id = "a"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"
  [[device.tag]]
  name = "a.n"
  area = "holding"
  address = 0

[[device]]
id = "b"
protocol = "modbus-tcp"
address = "127.0.0.1:5021"
  [[device.tag]]
  name = "b.n"
  area = "holding"
  address = 0

[[station]]
id = "ST"
operation = "OP10"
kind = "process"
complete_on = { tag = "a.n", edge = "rising" }
"#;

    fn cfg(text: &str) -> GatewayConfig {
        match GatewayConfig::parse("t.toml", text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn plan_of(new: &str) -> Plan {
        plan(&cfg(BASE), BASE, &cfg(new), new)
    }

    fn id(kind: &'static str, id: &str) -> DriverId {
        DriverId {
            kind,
            id: id.to_owned(),
        }
    }

    #[test]
    fn the_same_file_is_no_change() {
        let p = plan_of(BASE);
        assert!(p.is_empty());
        assert_eq!(p.lines(), ["no changes"]);
    }

    #[test]
    fn an_added_tag_restarts_only_its_device_and_the_other_keeps_polling() {
        let new = BASE.replace(
            "  name = \"b.n\"\n  area = \"holding\"\n  address = 0\n",
            "  name = \"b.n\"\n  area = \"holding\"\n  address = 0\n  [[device.tag]]\n  name = \"b.x\"\n  area = \"holding\"\n  address = 1\n",
        );
        let p = plan_of(&new);
        assert!(p.restart.is_empty() && p.refused.is_empty(), "{p:?}");
        assert_eq!(p.stop, [id("device", "b")].into());
        assert_eq!(p.start, [id("device", "b")].into());
        assert_eq!(p.untouched, [id("device", "a")].into());
        assert!(!p.stations);
        let lines = p.lines();
        assert_eq!(
            lines,
            [
                "device b: changed",
                "  tag b.x: added",
                "applied live: restart device b",
                "untouched, polling without a gap: device a",
            ]
        );
    }

    #[test]
    fn a_station_change_rebuilds_the_station_logic_live() {
        let new = BASE.replace("operation = \"OP10\"", "operation = \"OP10 v2\"");
        let p = plan_of(&new);
        assert!(p.stations && p.restart.is_empty());
        assert!(p.stop.is_empty() && p.start.is_empty());
        assert_eq!(p.changes, ["station ST: changed"]);
        assert!(
            p.lines()
                .iter()
                .any(|l| l.contains("rebuild the station logic"))
        );
    }

    #[test]
    fn an_mqtt_change_restarts_in_place() {
        let new = BASE
            .replace("127.0.0.1:1883", "127.0.0.1:1884")
            .replace("\"one\"", "\"two\"");
        let p = plan_of(&new);
        assert_eq!(p.restart, ["[mqtt] changed"]);
        assert_eq!(
            p.changes,
            [
                "[mqtt] url: \"mqtt://127.0.0.1:1883\" → \"mqtt://127.0.0.1:1884\"",
                "[mqtt] username: \"one\" → \"two\"",
            ]
        );
        let lines = p.lines().join("\n");
        assert!(lines.contains("restarts in place"), "{lines}");
    }

    #[test]
    fn a_new_identity_or_outbox_is_refused() {
        let new = BASE.replace("data_dir = \"/tmp/gw\"", "data_dir = \"/tmp/other\"");
        let p = plan_of(&new);
        assert_eq!(p.refused, ["gateway.data_dir changed"]);
        assert!(
            p.lines()
                .last()
                .is_some_and(|l| l.starts_with("not applied by a reload"))
        );
    }

    #[test]
    fn removed_and_added_devices() {
        let new = BASE.replace("id = \"b\"", "id = \"c\"");
        let p = plan_of(&new);
        assert_eq!(p.stop, [id("device", "b")].into());
        assert_eq!(p.start, [id("device", "c")].into());
        assert_eq!(
            p.lines()[2..],
            [
                "applied live: stop device b; start device c",
                "untouched, polling without a gap: device a"
            ]
        );
    }
}
