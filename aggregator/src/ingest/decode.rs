//! Turning one MQTT message into something the writer can store. Every failure becomes a dead
//! letter with the raw payload and the reason; nothing here panics or drops silently.

use serde::Deserialize;
use serde_json::value::RawValue;
use threadline_shared::envelope::ENVELOPE_VERSION;
use threadline_shared::event::{Record, RecordBody};
use threadline_shared::{Status, Topic, TopicKind};
use uuid::Uuid;

use threadline_shared::signing::Purpose;

use super::keys::GatewayKeys;
use crate::store::{DeadLetter, DeadLetterKind, EnvelopeRecords, StatusUpdate};

/// Bytes of an oversized payload kept in its dead letter.
pub const OVERSIZED_KEEP_BYTES: usize = 4096;

/// A decoded message.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// Valid records of an envelope, plus dead letters for its unusable records.
    Records(EnvelopeRecords, Vec<DeadLetter>),
    Status(StatusUpdate),
    Dead(DeadLetter),
    /// Nothing to do (an empty retained message clearing a status).
    Ignored,
}

impl Incoming {
    /// The gateway this message is about, when it names one.
    pub fn gateway(&self) -> Option<&str> {
        match self {
            Incoming::Records(e, _) => Some(e.gateway.as_str()),
            Incoming::Status(s) => Some(s.gateway.as_str()),
            Incoming::Dead(d) => d.gateway.as_deref(),
            Incoming::Ignored => None,
        }
    }

    /// Records this message carries (for batch sizing).
    pub fn weight(&self) -> usize {
        match self {
            Incoming::Records(e, d) => e.records.len() + d.len(),
            _ => 1,
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    v: u32,
    gateway: String,
    plant: String,
    line: String,
    epoch: Uuid,
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RecordHead {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(rename = "type", default)]
    type_: Option<String>,
}

fn dead(
    topic: &str,
    gateway: Option<&str>,
    kind: DeadLetterKind,
    reason: String,
    payload: &[u8],
) -> DeadLetter {
    DeadLetter {
        topic: topic.to_owned(),
        gateway: gateway.map(str::to_owned),
        kind,
        reason,
        payload: payload.to_vec(),
    }
}

/// Decodes a message received on `topic` under `root`.
pub fn decode(root: &str, topic: &str, payload: &[u8], max_payload_bytes: usize) -> Incoming {
    let parsed = Topic::parse(root, topic);
    let gw = parsed.as_ref().ok().map(|t| t.gateway.as_str());
    if payload.len() > max_payload_bytes {
        return Incoming::Dead(dead(
            topic,
            gw,
            DeadLetterKind::Oversized,
            format!(
                "payload of {} bytes exceeds max_payload_kb ({} bytes); first {} bytes kept",
                payload.len(),
                max_payload_bytes,
                OVERSIZED_KEEP_BYTES.min(payload.len())
            ),
            &payload[..OVERSIZED_KEEP_BYTES.min(payload.len())],
        ));
    }
    let t = match parsed {
        Ok(t) => t,
        Err(e) => {
            return Incoming::Dead(dead(
                topic,
                None,
                DeadLetterKind::BadTopic,
                e.to_string(),
                payload,
            ));
        }
    };
    match t.kind {
        TopicKind::Records => decode_records(&t, topic, payload),
        TopicKind::Status => {
            if payload.is_empty() {
                return Incoming::Ignored;
            }
            let parsed = serde_json::from_slice::<serde_json::Value>(payload)
                .and_then(|raw| serde_json::from_value::<Status>(raw.clone()).map(|s| (s, raw)));
            match parsed {
                Ok(_) if has_nul_bytes(payload) => Incoming::Dead(dead(
                    topic,
                    Some(&t.gateway),
                    DeadLetterKind::Refused,
                    "status message: a text contains a NUL character (\\u0000), which the \
                     database cannot store"
                        .to_owned(),
                    payload,
                )),
                Ok((status, raw)) => Incoming::Status(StatusUpdate {
                    gateway: t.gateway.clone(),
                    plant: t.plant.clone(),
                    line: t.line.clone(),
                    status,
                    raw,
                }),
                Err(e) => Incoming::Dead(dead(
                    topic,
                    Some(&t.gateway),
                    DeadLetterKind::MalformedStatus,
                    format!("status message is not a status: {e}"),
                    payload,
                )),
            }
        }
        TopicKind::Ack => Incoming::Ignored,
    }
}

/// [`decode`] after checking the signature of a records envelope against its gateway's keys
/// (`keys` = `gateway_keys_dir`; `None`: nothing is signed, plain [`decode`]). An unsigned or
/// badly signed envelope becomes one dead letter, reason `bad signature: …`, with the payload
/// as received; it is never acked (a forged envelope must not make the aggregator ack seqs of
/// the real gateway) and never touches the chain. Status messages are not signed (the broker
/// ACL guards them; docs/security.md).
pub fn decode_signed(
    root: &str,
    topic: &str,
    payload: &[u8],
    max_payload_bytes: usize,
    keys: Option<&GatewayKeys>,
) -> Incoming {
    let Some(keys) = keys else {
        return decode(root, topic, payload, max_payload_bytes);
    };
    let t = match Topic::parse(root, topic) {
        Ok(t) if t.kind == TopicKind::Records && payload.len() <= max_payload_bytes => t,
        _ => return decode(root, topic, payload, max_payload_bytes),
    };
    let verified = keys
        .get(&t.gateway)
        .and_then(|ring| ring.verify(Purpose::Envelope, &t.gateway, payload));
    match verified {
        Ok(body) => decode(root, topic, body, max_payload_bytes),
        Err(e) => Incoming::Dead(dead(
            topic,
            Some(&t.gateway),
            DeadLetterKind::BadSignature,
            format!("bad signature: {e}"),
            payload,
        )),
    }
}

/// Whether JSON text holds an escaped NUL character (`\u0000`; JSON cannot hold a raw one).
/// An escaped backslash followed by `u0000` (`\\u0000`) is not one.
pub fn has_nul(json: &str) -> bool {
    has_nul_bytes(json.as_bytes())
}

fn has_nul_bytes(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = json[from..]
        .windows(6)
        .position(|w| w[0] == b'\\' && w[1] == b'u' && &w[2..] == b"0000")
    {
        let at = from + i;
        let backslashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// A whole envelope that cannot be stored, dead-lettered **and acked** when its epoch and record
/// seqs can be read (`{"epoch": …, "records": [{"seq": …}, …]}` in any version): the gateway
/// then moves on instead of re-sending it every `ack_timeout`. `dead-letters replay`
/// re-ingests it after an upgrade. A payload with no readable epoch cannot be acked; it is
/// still stored once (the same payload again only counts).
fn acked_dead(t: &Topic, d: DeadLetter) -> Incoming {
    #[derive(Deserialize)]
    struct Seqs {
        epoch: Uuid,
        records: Vec<RecordHead>,
    }
    match serde_json::from_slice::<Seqs>(&d.payload) {
        Ok(s) => {
            let seqs: Vec<u64> = s.records.iter().filter_map(|r| r.seq).collect();
            if seqs.is_empty() {
                return Incoming::Dead(d);
            }
            Incoming::Records(
                EnvelopeRecords {
                    gateway: t.gateway.clone(),
                    plant: t.plant.clone(),
                    line: t.line.clone(),
                    epoch: s.epoch,
                    records: Vec::new(),
                    dead_seqs: seqs,
                },
                vec![d],
            )
        }
        Err(_) => Incoming::Dead(d),
    }
}

/// The payload of a dead-lettered record: a version-1 envelope holding just that record (so
/// that `dead-letters replay` can decode it again as it came).
pub fn single_record_envelope(env: &EnvelopeRecords, raw_record: &str) -> Vec<u8> {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"v":{ENVELOPE_VERSION},"gateway":{},"plant":{},"line":{},"epoch":"{}","records":[{raw_record}]}}"#,
        q(&env.gateway),
        q(&env.plant),
        q(&env.line),
        env.epoch
    )
    .into_bytes()
}

/// The dead letter of a payload that is not a version-1 envelope: not JSON, another version, or
/// not an envelope.
fn refused_envelope(
    topic: &str,
    gw: Option<&str>,
    payload: &[u8],
    envelope_error: &serde_json::Error,
) -> DeadLetter {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Err(e) => dead(
            topic,
            gw,
            DeadLetterKind::MalformedEnvelope,
            format!("not JSON: {e}"),
            payload,
        ),
        Ok(v) => match v.get("v") {
            Some(ver) if ver.as_u64() != Some(u64::from(ENVELOPE_VERSION)) => dead(
                topic,
                gw,
                DeadLetterKind::UnsupportedVersion,
                format!("envelope version {ver} is not supported (expected {ENVELOPE_VERSION})"),
                payload,
            ),
            _ => dead(
                topic,
                gw,
                DeadLetterKind::MalformedEnvelope,
                format!("not an envelope: {envelope_error}"),
                payload,
            ),
        },
    }
}

fn decode_records(t: &Topic, topic: &str, payload: &[u8]) -> Incoming {
    let gw = Some(t.gateway.as_str());
    let env: RawEnvelope<'_> = match serde_json::from_slice::<RawEnvelope<'_>>(payload) {
        Ok(env) if env.v == ENVELOPE_VERSION => env,
        Ok(env) => {
            return acked_dead(
                t,
                dead(
                    topic,
                    gw,
                    DeadLetterKind::UnsupportedVersion,
                    format!(
                        "envelope version {} is not supported (expected {ENVELOPE_VERSION})",
                        env.v
                    ),
                    payload,
                ),
            );
        }
        // Only now the slow look at why: a future envelope may not parse as this one, and
        // "unsupported version" is the useful answer then.
        Err(e) => return acked_dead(t, refused_envelope(topic, gw, payload, &e)),
    };
    for (what, env_v, topic_v) in [
        ("gateway", &env.gateway, &t.gateway),
        ("plant", &env.plant, &t.plant),
        ("line", &env.line, &t.line),
    ] {
        if env_v != topic_v {
            return Incoming::Dead(dead(
                topic,
                gw,
                DeadLetterKind::TopicMismatch,
                format!("envelope {what} {env_v:?} differs from the topic's {topic_v:?}"),
                payload,
            ));
        }
    }
    let mut records = Vec::with_capacity(env.records.len());
    let mut dead_seqs = Vec::new();
    let mut deads = Vec::new();
    for raw in env.records {
        match Record::from_json(raw.get()) {
            // Admission check: a NUL character can be in JSON text but in no PostgreSQL text or
            // jsonb; refused here on both backends (same answer everywhere, and no bisection
            // of the batch for the commonest poison).
            Ok(r) if has_nul(raw.get()) => {
                dead_seqs.push(r.seq);
                deads.push(dead(
                    topic,
                    gw,
                    DeadLetterKind::Refused,
                    format!(
                        "record seq {} of epoch {}: a text contains a NUL character (\\u0000), \
                         which the database cannot store",
                        r.seq, env.epoch
                    ),
                    raw.get().as_bytes(),
                ));
            }
            Ok(r) => records.push(r),
            Err(e) => {
                let head: Option<RecordHead> = serde_json::from_str(raw.get()).ok();
                let seq = head.as_ref().and_then(|h| h.seq);
                let ty = head.and_then(|h| h.type_);
                let (kind, reason) = match &ty {
                    Some(ty) if !RecordBody::TYPE_NAMES.contains(&ty.as_str()) => (
                        DeadLetterKind::UnknownRecordType,
                        format!(
                            "record seq {} of epoch {}: unknown record type {ty:?}",
                            seq.map_or("?".to_owned(), |s| s.to_string()),
                            env.epoch
                        ),
                    ),
                    _ => (
                        DeadLetterKind::InvalidRecord,
                        format!(
                            "record seq {} of epoch {}: {e}",
                            seq.map_or("?".to_owned(), |s| s.to_string()),
                            env.epoch
                        ),
                    ),
                };
                if let Some(s) = seq {
                    dead_seqs.push(s);
                }
                deads.push(dead(topic, gw, kind, reason, raw.get().as_bytes()));
            }
        }
    }
    let env = EnvelopeRecords {
        gateway: env.gateway,
        plant: env.plant,
        line: env.line,
        epoch: env.epoch,
        records,
        dead_seqs,
    };
    // Each dead-lettered record is kept as an envelope of its own: replayable as it came.
    for d in &mut deads {
        d.payload = single_record_envelope(&env, &String::from_utf8_lossy(&d.payload));
    }
    Incoming::Records(env, deads)
}

#[cfg(test)]
mod tests {
    use super::has_nul;

    #[test]
    fn finds_escaped_nul_only() {
        assert!(has_nul(r#"{"a":"x\u0000y"}"#));
        assert!(has_nul(r#"{"a":"\\\u0000"}"#));
        assert!(!has_nul(r#"{"a":"\\u0000"}"#));
        assert!(!has_nul(r#"{"a":"u0000 \u0001"}"#));
        assert!(!has_nul(r#"{"a":"plain"}"#));
    }
}
