//! EPCIS capture: a supplier's `EPCISDocument` (JSON-LD) → checked events, each with its
//! idempotency key and the *lot keys* that link it to our lots. Pure: no database here
//! (storing is [`super::supplier`], reading by lot is `trace::supplier`).
//!
//! **Shape.** The checks are those of GS1's EPCIS 2.0 JSON schema that matter for storing and
//! linking (document `type`, `@context`, `schemaVersion` 2.x, `creationDate`, `epcisBody.eventList`;
//! per event its `type`, `eventTime` with offset, `eventTimeZoneOffset`, `action` where the type
//! needs one, the id lists as arrays of URIs, quantity elements, `readPoint` / `bizLocation`,
//! `sourceList` / `destinationList`); the first problem is reported with its JSON path
//! (`epcisBody.eventList[2].eventTime`), what was expected and what was given. Fields the
//! schema allows beyond those are kept as they came.
//!
//! **Idempotency.** An event is stored once under its `eventID` when it has one (EPCIS 2.0
//! recommends the GS1 event hash there); without one, under
//! `ni:///sha-256;{hex}?ver=tl-json` — the SHA-256 of the event's canonical JSON (object keys
//! sorted, no whitespace), so the same event captured twice is the same row. (That key is not
//! the GS1 event hash: Threadline computes that only for the event shapes it exports.)
//!
//! **Lot keys** (the matching rule, also in `docs/epcis.md`). Every identifier an event names —
//! `epcList`, `childEPCs`, `inputEPCList`, `outputEPCList`, `parentID` and the `epcClass` of every
//! quantity list — gives keys:
//! - a GS1 identifier carrying a GTIN and a lot (AI 10) — a Digital Link on any host
//!   (`…/01/{gtin}/10/{lot}`, also with `/21/{serial}`), an element string, or an EPC class URN
//!   `urn:epc:class:lgtin:{company prefix}.{item ref}.{lot}` — gives `uri:` + its canonical lot
//!   URI (`https://id.gs1.org/01/{gtin14}/10/{lot}`) and `lot:` + the lot number;
//! - a GS1 identifier without a lot (an SGTIN, an SSCC) gives none (it names an instance or a
//!   container, not a lot);
//! - anything else gives `uri:` + the identifier exactly (e.g. our own `{id_base}/lot/{lot}`).
//!
//! A lot of ours has the keys [`our_lot_keys`]: `uri:` + its export URI (`Ids::lot`, the same
//! URI the EPCIS export writes for it), `lot:` + its id and `lot:` + its `supplier_batch`. An
//! event is linked to every lot with which it shares a key — evaluated when the lot is read, so
//! a supplier's document captured before the goods arrive links once the lot is received.

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use threadline_shared::ids::{gtin_check_digit, parse_gs1};
use threadline_shared::time::Timestamp;

use super::ids::{Ids, encode};

/// The event types of EPCIS 2.0.
const EVENT_TYPES: [&str; 5] = [
    "ObjectEvent",
    "AggregationEvent",
    "TransformationEvent",
    "AssociationEvent",
    "TransactionEvent",
];
/// Events per document at most (a bigger delivery is split by the sender).
pub const MAX_EVENTS: usize = 100_000;
/// Longest identifier accepted (the key index has a row-size limit on PostgreSQL).
const MAX_ID_LEN: usize = 1000;

/// Why a document was refused: the JSON path, what was expected there and what was given.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub path: String,
    pub expected: String,
    pub given: Option<Value>,
}

impl ShapeError {
    fn new(path: impl Into<String>, expected: impl Into<String>, given: Option<&Value>) -> Self {
        ShapeError {
            path: path.into(),
            expected: expected.into(),
            // Long values are cut: the evidence, not an echo of the whole body.
            given: given.map(|v| match v {
                Value::Object(_) | Value::Array(_) => Value::String(cut(&v.to_string())),
                Value::String(s) => Value::String(cut(s)),
                other => other.clone(),
            }),
        }
    }

    /// `{path}: expected {expected}`.
    pub fn message(&self) -> String {
        if self.path.is_empty() {
            format!("not an EPCIS 2.0 document: expected {}", self.expected)
        } else {
            format!(
                "not an EPCIS 2.0 document: {}: expected {}",
                self.path, self.expected
            )
        }
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= 200 {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    }
}

/// One checked event of a captured document.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    /// Its `eventID`, or the canonical-JSON key (see the module doc).
    pub event_id: String,
    pub event_type: String,
    pub event_time: Timestamp,
    pub action: Option<String>,
    /// Bare CBV value when it was a CBV URI.
    pub biz_step: Option<String>,
    pub disposition: Option<String>,
    pub read_point: Option<String>,
    pub biz_location: Option<String>,
    /// The party the goods come from: the `owning_party` / `possessing_party` of `sourceList`
    /// (else its first entry), else the document's `sender`.
    pub source: Option<String>,
    /// The event as it came.
    pub body: Value,
    /// `(key, identifier that gave it)`, each key once.
    pub keys: Vec<(String, String)>,
}

/// A checked document.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedDocument {
    pub sender: Option<String>,
    pub events: Vec<CapturedEvent>,
}

/// Parses and checks a capture body.
pub fn parse_document(body: &[u8]) -> Result<CapturedDocument, ShapeError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ShapeError::new("", format!("a JSON document ({e})"), None))?;
    if let Some(path) = find_nul(&doc, String::new()) {
        return Err(ShapeError::new(path, "text without NUL characters", None));
    }
    let Value::Object(d) = &doc else {
        return Err(ShapeError::new("", "a JSON object", Some(&doc)));
    };
    match d.get("type").and_then(Value::as_str) {
        Some("EPCISDocument") => {}
        Some("EPCISQueryDocument") => {
            return Err(ShapeError::new(
                "type",
                "\"EPCISDocument\" (a query document is an answer to a query, not a capture)",
                d.get("type"),
            ));
        }
        _ => return Err(ShapeError::new("type", "\"EPCISDocument\"", d.get("type"))),
    }
    match d.get("@context") {
        Some(Value::String(_)) | Some(Value::Array(_)) => {}
        other => {
            return Err(ShapeError::new(
                "@context",
                "the EPCIS 2.0 JSON-LD context (a URI or an array)",
                other,
            ));
        }
    }
    match d.get("schemaVersion") {
        Some(Value::String(v)) if v == "2.0" || v.starts_with("2.") => {}
        other => {
            return Err(ShapeError::new(
                "schemaVersion",
                "\"2.0\" (EPCIS 2.0 JSON-LD; 1.x XML documents are not accepted)",
                other,
            ));
        }
    }
    time_at(d, "creationDate", "creationDate", true)?;
    let sender = d.get("sender").and_then(Value::as_str).map(str::to_owned);
    let body = d
        .get("epcisBody")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ShapeError::new("epcisBody", "an object with eventList", d.get("epcisBody"))
        })?;
    let list = body
        .get("eventList")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ShapeError::new(
                "epcisBody.eventList",
                "an array of events",
                body.get("eventList"),
            )
        })?;
    if list.len() > MAX_EVENTS {
        return Err(ShapeError::new(
            "epcisBody.eventList",
            format!("at most {MAX_EVENTS} events per document (split the delivery)"),
            Some(&Value::from(list.len())),
        ));
    }
    let mut events = Vec::with_capacity(list.len());
    for (i, ev) in list.iter().enumerate() {
        events.push(event(&format!("epcisBody.eventList[{i}]"), ev, &sender)?);
    }
    Ok(CapturedDocument { sender, events })
}

fn find_nul(v: &Value, path: String) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then_some(path),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_nul(x, format!("{path}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                return Some(path.clone());
            }
            find_nul(x, join(&path, k))
        }),
        _ => None,
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

fn time_at(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    required: bool,
) -> Result<Option<Timestamp>, ShapeError> {
    match m.get(key) {
        None if !required => Ok(None),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                ShapeError::new(
                    path,
                    "an RFC 3339 date-time with offset (2026-11-25T08:00:00.000+01:00)",
                    m.get(key),
                )
            }),
        other => Err(ShapeError::new(
            path,
            "an RFC 3339 date-time with offset (2026-11-25T08:00:00.000+01:00)",
            other,
        )),
    }
}

/// A URI as the schema's `format: uri` wants it: a scheme, then no whitespace.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut cs = scheme.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphabetic())
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.len() <= MAX_ID_LEN
}

fn uri_at<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ShapeError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if is_uri(s) => Ok(Some(s)),
        other => Err(ShapeError::new(
            join(path, key),
            format!("a URI (scheme:…, no spaces, at most {MAX_ID_LEN} characters)"),
            other,
        )),
    }
}

fn uris_at<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<&'a str>, ShapeError> {
    match m.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, x) in a.iter().enumerate() {
                match x {
                    Value::String(s) if is_uri(s) => out.push(s.as_str()),
                    other => {
                        return Err(ShapeError::new(
                            format!("{}[{i}]", join(path, key)),
                            "a URI (an EPC, e.g. https://id.gs1.org/01/…/21/… or urn:epc:id:sgtin:…)",
                            Some(other),
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(ShapeError::new(join(path, key), "an array of URIs", other)),
    }
}

fn quantities_at<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<&'a str>, ShapeError> {
    let at = join(path, key);
    match m.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, q) in a.iter().enumerate() {
                let p = format!("{at}[{i}]");
                let Value::Object(q) = q else {
                    return Err(ShapeError::new(
                        p,
                        "a quantity element {\"epcClass\": URI, \"quantity\": number, \"uom\": code}",
                        Some(q),
                    ));
                };
                for (k, v) in q {
                    let ok = match k.as_str() {
                        "epcClass" => true,
                        "quantity" => v.is_number(),
                        "uom" => v.is_string(),
                        _ => {
                            return Err(ShapeError::new(
                                join(&p, k),
                                "no other field than epcClass, quantity, uom",
                                Some(v),
                            ));
                        }
                    };
                    if !ok {
                        return Err(ShapeError::new(
                            join(&p, k),
                            if k == "quantity" {
                                "a number"
                            } else {
                                "a string (UN/CEFACT Rec. 20 code)"
                            },
                            Some(v),
                        ));
                    }
                }
                match uri_at(q, "epcClass", &p)? {
                    Some(c) => out.push(c),
                    None => {
                        return Err(ShapeError::new(
                            join(&p, "epcClass"),
                            "an EPC class URI (required)",
                            None,
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(ShapeError::new(at, "an array of quantity elements", other)),
    }
}

fn string_at<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ShapeError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        other => Err(ShapeError::new(join(path, key), "a string", other)),
    }
}

fn location_at<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ShapeError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Object(o)) => match uri_at(o, "id", &join(path, key))? {
            Some(id) => Ok(Some(id)),
            None => Err(ShapeError::new(
                join(&join(path, key), "id"),
                "a location URI (required)",
                None,
            )),
        },
        other => Err(ShapeError::new(
            join(path, key),
            "an object {\"id\": URI}",
            other,
        )),
    }
}

/// `(type, party)` entries of a source / destination list.
fn parties_at(
    m: &Map<String, Value>,
    key: &str,
    field: &str,
    path: &str,
) -> Result<Vec<(String, String)>, ShapeError> {
    let at = join(path, key);
    match m.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}[{i}]");
                let o = x.as_object();
                // A business transaction's type is optional; a source's / destination's is not.
                let t = o
                    .and_then(|o| o.get("type"))
                    .and_then(Value::as_str)
                    .or((field == "bizTransaction" && o.is_some()).then_some(""));
                let id = o.and_then(|o| o.get(field)).and_then(Value::as_str);
                match (t, id) {
                    (Some(t), Some(id)) => out.push((t.to_owned(), id.to_owned())),
                    _ => {
                        return Err(ShapeError::new(
                            p,
                            format!("an object {{\"type\": …, \"{field}\": URI}}"),
                            Some(x),
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(ShapeError::new(at, "an array", other)),
    }
}

fn event(path: &str, ev: &Value, sender: &Option<String>) -> Result<CapturedEvent, ShapeError> {
    let Value::Object(m) = ev else {
        return Err(ShapeError::new(path, "an event object", Some(ev)));
    };
    let ty = match m.get("type").and_then(Value::as_str) {
        Some(t) if EVENT_TYPES.contains(&t) => t,
        _ => {
            return Err(ShapeError::new(
                join(path, "type"),
                format!("one of {}", EVENT_TYPES.join(", ")),
                m.get("type"),
            ));
        }
    };
    let event_time = time_at(m, "eventTime", &join(path, "eventTime"), true)?
        .ok_or_else(|| ShapeError::new(join(path, "eventTime"), "a date-time", None))?;
    time_at(m, "recordTime", &join(path, "recordTime"), false)?;
    match m.get("eventTimeZoneOffset") {
        Some(Value::String(s)) if tz_offset_ok(s) => {}
        other => {
            return Err(ShapeError::new(
                join(path, "eventTimeZoneOffset"),
                "an offset ±hh:mm (required), e.g. \"+01:00\"",
                other,
            ));
        }
    }
    let action = match (m.get("action"), ty) {
        (None, "TransformationEvent") => None,
        (Some(Value::String(a)), _) if matches!(a.as_str(), "ADD" | "OBSERVE" | "DELETE") => {
            Some(a.clone())
        }
        (other, _) => {
            return Err(ShapeError::new(
                join(path, "action"),
                format!("ADD, OBSERVE or DELETE (required for an {ty})"),
                other,
            ));
        }
    };
    let given_id = uri_at(m, "eventID", path)?;
    let parent = uri_at(m, "parentID", path)?;
    let epcs = uris_at(m, "epcList", path)?;
    let children = uris_at(m, "childEPCs", path)?;
    let inputs = uris_at(m, "inputEPCList", path)?;
    let outputs = uris_at(m, "outputEPCList", path)?;
    let mut classes = quantities_at(m, "quantityList", path)?;
    for k in [
        "childQuantityList",
        "inputQuantityList",
        "outputQuantityList",
    ] {
        classes.extend(quantities_at(m, k, path)?);
    }
    let has = |k: &str| m.contains_key(k);
    let what_ok = match ty {
        "ObjectEvent" => has("epcList") || has("quantityList"),
        "AggregationEvent" | "AssociationEvent" => {
            !children.is_empty() || has("childQuantityList") || action.as_deref() == Some("DELETE")
        }
        "TransformationEvent" => {
            has("inputEPCList")
                || has("inputQuantityList")
                || has("outputEPCList")
                || has("outputQuantityList")
                || has("transformationID")
        }
        _ => has("epcList") || has("quantityList"),
    };
    if !what_ok {
        let need = match ty {
            "ObjectEvent" | "TransactionEvent" => "epcList or quantityList",
            "TransformationEvent" => "an input or output list",
            _ => "childEPCs or childQuantityList",
        };
        return Err(ShapeError::new(
            path,
            format!("an {ty} with {need} (what the event is about)"),
            None,
        ));
    }
    if ty == "AssociationEvent" && parent.is_none() {
        return Err(ShapeError::new(
            join(path, "parentID"),
            "a parent URI (required for an AssociationEvent)",
            None,
        ));
    }
    let txs = parties_at(m, "bizTransactionList", "bizTransaction", path)?;
    if ty == "TransactionEvent" && txs.is_empty() {
        return Err(ShapeError::new(
            join(path, "bizTransactionList"),
            "at least one business transaction (required for a TransactionEvent)",
            m.get("bizTransactionList"),
        ));
    }
    let biz_step = string_at(m, "bizStep", path)?.map(|s| bare(s, "BizStep-", "bizstep:"));
    let disposition = string_at(m, "disposition", path)?.map(|s| bare(s, "Disp-", "disp:"));
    let read_point = location_at(m, "readPoint", path)?.map(str::to_owned);
    let biz_location = location_at(m, "bizLocation", path)?.map(str::to_owned);
    let sources = parties_at(m, "sourceList", "source", path)?;
    parties_at(m, "destinationList", "destination", path)?;
    let source = sources
        .iter()
        .find(|(t, _)| {
            let t = bare(t, "SDT-", "sdt:");
            t == "owning_party" || t == "possessing_party"
        })
        .or(sources.first())
        .map(|(_, s)| s.clone())
        .or_else(|| sender.clone());

    let mut keys: Vec<(String, String)> = Vec::new();
    for id in parent
        .into_iter()
        .chain(epcs)
        .chain(children)
        .chain(inputs)
        .chain(outputs)
        .chain(classes)
    {
        for k in identifier_keys(id) {
            if !keys.iter().any(|(x, _)| *x == k) {
                keys.push((k, id.to_owned()));
            }
        }
    }
    Ok(CapturedEvent {
        event_id: given_id
            .map(str::to_owned)
            .unwrap_or_else(|| content_key(ev)),
        event_type: ty.to_owned(),
        event_time,
        action,
        biz_step,
        disposition,
        read_point,
        biz_location,
        source,
        body: ev.clone(),
        keys,
    })
}

fn tz_offset_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 6
        && matches!(b[0], b'+' | b'-')
        && b[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit())
        && {
            let h = (b[1] - b'0') * 10 + (b[2] - b'0');
            let m = (b[4] - b'0') * 10 + (b[5] - b'0');
            m < 60 && (h < 14 || (h == 14 && m == 0))
        }
}

/// A CBV value's bare form: `https://ref.gs1.org/cbv/BizStep-shipping` and
/// `urn:epcglobal:cbv:bizstep:shipping` → `shipping`; anything else as it is.
fn bare(s: &str, web: &str, urn: &str) -> String {
    s.strip_prefix("https://ref.gs1.org/cbv/")
        .and_then(|r| r.strip_prefix(web))
        .or_else(|| {
            s.strip_prefix("urn:epcglobal:cbv:")
                .and_then(|r| r.strip_prefix(urn))
        })
        .unwrap_or(s)
        .to_owned()
}

/// The key of an event without an `eventID` (see the module doc).
pub fn content_key(ev: &Value) -> String {
    let mut s = String::new();
    canonical_json(ev, &mut s);
    format!(
        "ni:///sha-256;{}?ver=tl-json",
        hex::encode(Sha256::digest(s.as_bytes()))
    )
}

fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical lot URI of a GTIN and lot number.
fn lot_uri(gtin: &str, lot: &str) -> String {
    format!("https://id.gs1.org/01/{gtin}/10/{}", encode(lot))
}

/// `urn:epc:class:lgtin:{cp}.{ir}.{lot}` → (GTIN-14, lot).
fn lgtin(urn: &str) -> Option<(String, String)> {
    let rest = urn.strip_prefix("urn:epc:class:lgtin:")?;
    let mut parts = rest.splitn(3, '.');
    let (cp, ir, lot) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(cp) || !digits(ir) || cp.len() + ir.len() != 13 || lot.is_empty() {
        return None;
    }
    // The indicator digit leads the item reference; it moves in front of the company prefix.
    let body = format!("{}{cp}{}", &ir[..1], &ir[1..]);
    let check = gtin_check_digit(&body).ok()?;
    Some((format!("{body}{check}"), percent_decode(lot)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lot keys of one identifier of a supplier's event (see the module doc).
pub fn identifier_keys(id: &str) -> Vec<String> {
    if let Some((gtin, lot)) = lgtin(id) {
        return vec![
            format!("uri:{}", lot_uri(&gtin, &lot)),
            format!("lot:{lot}"),
        ];
    }
    let gs1ish = id.starts_with("https://") || id.starts_with("http://") || id.starts_with('(');
    if gs1ish && let Ok(e) = parse_gs1(id) {
        return match (e.gtin(), e.lot()) {
            (Some(g), Some(l)) => vec![format!("uri:{}", lot_uri(g, l)), format!("lot:{l}")],
            _ => Vec::new(),
        };
    }
    if id.starts_with("urn:epc:id:") {
        return Vec::new(); // an instance (SGTIN, SSCC, …): no lot
    }
    vec![format!("uri:{id}")]
}

/// The keys of one of our lots (its id and `supplier_batch`): what a supplier's event must
/// share to be linked to it.
pub fn our_lot_keys(
    ids: &Ids,
    lot: &str,
    supplier_batch: Option<&str>,
) -> Vec<(String, &'static str)> {
    let mut out = vec![
        (format!("uri:{}", ids.lot(lot)), "uri"),
        (format!("lot:{lot}"), "lot_number"),
    ];
    if let Some(b) = supplier_batch.filter(|b| !b.trim().is_empty()) {
        let k = format!("lot:{b}");
        if !out.iter().any(|(x, _)| *x == k) {
            out.push((k, "supplier_batch"));
        }
    }
    out
}

/// Lot ids that may have one of `keys` (a superset; exact matching is [`our_lot_keys`]):
/// the lot numbers, the URIs, and a GS1 lot URI's element-string forms.
pub fn candidate_lot_ids(keys: &[String], ids: &Ids) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let local = format!("{}/lot/", ids.base());
    for k in keys {
        if let Some(l) = k.strip_prefix("lot:") {
            out.push(l.to_owned());
        } else if let Some(u) = k.strip_prefix("uri:") {
            out.push(u.to_owned());
            if let Some(l) = u.strip_prefix(&local) {
                out.push(percent_decode(l));
            }
            if let Some(rest) = u.strip_prefix("https://id.gs1.org/01/")
                && let Some((g, l)) = rest.split_once("/10/")
            {
                let l = percent_decode(l);
                out.push(format!("(01){g}(10){l}"));
                out.push(format!("01{g}10{l}"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(events: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"],
            "type": "EPCISDocument", "schemaVersion": "2.0",
            "creationDate": "2026-11-20T10:00:00.000+01:00",
            "epcisBody": {"eventList": events}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn lot_identifiers_give_uri_and_lot_number_keys() {
        let want = vec![
            "uri:https://id.gs1.org/01/09506000134352/10/H123".to_owned(),
            "lot:H123".to_owned(),
        ];
        assert_eq!(
            identifier_keys("https://brand.example/01/09506000134352/10/H123"),
            want
        );
        assert_eq!(
            identifier_keys("https://id.gs1.org/01/09506000134352/10/H123/21/7"),
            want
        );
        // LGTIN URN: company prefix 9506000, item reference 013435 (indicator digit 0).
        assert_eq!(
            identifier_keys("urn:epc:class:lgtin:9506000.013435.H123"),
            want
        );
        assert!(identifier_keys("https://id.gs1.org/01/09506000134352/21/7").is_empty());
        assert!(identifier_keys("urn:epc:id:sgtin:9506000.013435.7").is_empty());
        assert_eq!(
            identifier_keys("https://plant.example/tl/lot/STEEL-7"),
            vec!["uri:https://plant.example/tl/lot/STEEL-7".to_owned()]
        );
    }

    #[test]
    fn our_keys_meet_theirs() {
        let ids = Ids::new("https://plant.example/tl");
        let ours = our_lot_keys(&ids, "STEEL-7", Some("H123"));
        let theirs = identifier_keys("https://id.gs1.org/01/09506000134352/10/H123");
        assert!(
            ours.iter()
                .any(|(k, how)| theirs.contains(k) && *how == "supplier_batch")
        );
        let gs1 = our_lot_keys(&ids, "(01)09506000134352(10)L9", None);
        let theirs = identifier_keys("urn:epc:class:lgtin:9506000.013435.L9");
        assert!(
            gs1.iter()
                .any(|(k, how)| theirs.contains(k) && *how == "uri")
        );
        let cands = candidate_lot_ids(&theirs, &ids);
        assert!(
            cands.contains(&"(01)09506000134352(10)L9".to_owned()),
            "{cands:?}"
        );
    }

    #[test]
    fn a_valid_document_parses_and_bad_ones_name_the_path() {
        let ev = json!({"type":"ObjectEvent","eventTime":"2026-11-20T08:00:00.000+01:00",
            "eventTimeZoneOffset":"+01:00","action":"ADD","bizStep":"https://ref.gs1.org/cbv/BizStep-commissioning",
            "quantityList":[{"epcClass":"https://id.gs1.org/01/09506000134352/10/H123","quantity":500,"uom":"KGM"}],
            "sourceList":[{"type":"owning_party","source":"https://supplier.example/party/acme"}]});
        let d = parse_document(&doc(json!([ev.clone()]))).unwrap();
        let e = &d.events[0];
        assert_eq!(e.biz_step.as_deref(), Some("commissioning"));
        assert_eq!(
            e.source.as_deref(),
            Some("https://supplier.example/party/acme")
        );
        assert!(e.event_id.starts_with("ni:///sha-256;"));
        // Same content, keys in another order: the same key.
        let mut shuffled = serde_json::Map::new();
        if let Value::Object(m) = &ev {
            for (k, v) in m.iter().rev() {
                shuffled.insert(k.clone(), v.clone());
            }
        }
        assert_eq!(content_key(&Value::Object(shuffled)), e.event_id);

        let mut bad = ev.clone();
        bad["eventTime"] = json!("yesterday");
        let err = parse_document(&doc(json!([ev.clone(), bad]))).unwrap_err();
        assert_eq!(err.path, "epcisBody.eventList[1].eventTime");
        let mut bad = ev.clone();
        bad["quantityList"][0]["quantity"] = json!("lots");
        let err = parse_document(&doc(json!([bad]))).unwrap_err();
        assert_eq!(err.path, "epcisBody.eventList[0].quantityList[0].quantity");
        let mut bad = ev.clone();
        if let Some(m) = bad.as_object_mut() {
            m.remove("action");
        }
        let err = parse_document(&doc(json!([bad]))).unwrap_err();
        assert_eq!(err.path, "epcisBody.eventList[0].action");
        let err = parse_document(b"{\"type\":\"EPCISDocument\"").unwrap_err();
        assert!(err.expected.contains("JSON"), "{err:?}");
        let err = parse_document(&serde_json::to_vec(&json!({"type":"EPCISDocument"})).unwrap())
            .unwrap_err();
        assert_eq!(err.path, "@context");
    }
}
