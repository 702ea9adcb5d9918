//! MQTT topics: `{root}/{plant}/{line}/{gateway}/{records|status|ack}`.
//!
//! `root` may itself contain `/` (default `threadline/v1`). Plant, line and gateway ids are
//! single, non-empty topic levels without wildcards (`+`, `#`) and not starting with `$`.

use std::fmt;

use thiserror::Error;

/// Default topic root.
pub const DEFAULT_ROOT: &str = "threadline/v1";

/// The last topic level: what the message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Records,
    Status,
    Ack,
}

impl TopicKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Records => "records",
            TopicKind::Status => "status",
            TopicKind::Ack => "ack",
        }
    }
}

/// The level under the root that holds the aggregators' own topics.
pub const AGGREGATOR_LEVEL: &str = "_aggregator";

/// A parsed or to-be-built topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub root: String,
    pub plant: String,
    pub line: String,
    pub gateway: String,
    pub kind: TopicKind,
}

/// Why a topic (or one of its levels) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic {topic:?} does not start with the root {root:?}/")]
    WrongRoot { topic: String, root: String },
    #[error(
        "topic {topic:?} has {found} levels after the root, expected 4: plant/line/gateway/kind"
    )]
    WrongLevelCount { topic: String, found: usize },
    #[error("topic {topic:?}: unknown kind {kind:?}, expected one of records, status, ack")]
    UnknownKind { topic: String, kind: String },
    #[error("{what} {value:?} is not a valid topic level: {reason}")]
    BadLevel {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// Checks that `value` can be one topic level (used for plant, line and gateway ids).
pub fn check_level(what: &'static str, value: &str) -> Result<(), TopicError> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.contains('/') {
        Some("it contains '/'")
    } else if value.contains('+') || value.contains('#') {
        Some("it contains an MQTT wildcard ('+' or '#')")
    } else if value.starts_with('$') {
        Some("it starts with '$' (reserved by brokers)")
    } else if value.contains('\0') {
        Some("it contains a NUL character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TopicError::BadLevel {
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Topic {
    /// Builds a topic, checking every level.
    pub fn new(
        root: &str,
        plant: &str,
        line: &str,
        gateway: &str,
        kind: TopicKind,
    ) -> Result<Topic, TopicError> {
        check_level("plant", plant)?;
        check_level("line", line)?;
        check_level("gateway", gateway)?;
        Ok(Topic {
            root: root.trim_end_matches('/').to_owned(),
            plant: plant.to_owned(),
            line: line.to_owned(),
            gateway: gateway.to_owned(),
            kind,
        })
    }

    /// Parses `topic` under `root`.
    pub fn parse(root: &str, topic: &str) -> Result<Topic, TopicError> {
        let root = root.trim_end_matches('/');
        let rest = topic
            .strip_prefix(root)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::WrongRoot {
                topic: topic.to_owned(),
                root: root.to_owned(),
            })?;
        let levels: Vec<&str> = rest.split('/').collect();
        let [plant, line, gateway, kind] = levels[..] else {
            return Err(TopicError::WrongLevelCount {
                topic: topic.to_owned(),
                found: levels.len(),
            });
        };
        let kind = match kind {
            "records" => TopicKind::Records,
            "status" => TopicKind::Status,
            "ack" => TopicKind::Ack,
            other => {
                return Err(TopicError::UnknownKind {
                    topic: topic.to_owned(),
                    kind: other.to_owned(),
                });
            }
        };
        Topic::new(root, plant, line, gateway, kind)
    }

    /// The same gateway's topic of another kind.
    pub fn with_kind(&self, kind: TopicKind) -> Topic {
        Topic {
            kind,
            ..self.clone()
        }
    }

    /// The retained online/offline status of aggregator `id` (`{root}/_aggregator/{id}/status`,
    /// a [`Status`](crate::envelope::Status) with `state` and `since`; the last will is the
    /// offline one). Published after the aggregator has subscribed, so a gateway that sees it
    /// arrive live knows that what it publishes from then on is heard — and re-sends the
    /// window it published while no aggregator was listening (after a broker restart the
    /// gateway may reconnect first). Three levels under `root`: no gateway filter
    /// (`{root}/+/+/+/…`) matches it.
    pub fn aggregator_status(root: &str, id: &str) -> String {
        format!(
            "{}/{AGGREGATOR_LEVEL}/{id}/status",
            root.trim_end_matches('/')
        )
    }

    /// The filter of every aggregator's status ([`Topic::aggregator_status`]).
    pub fn aggregator_status_filter(root: &str) -> String {
        Topic::aggregator_status(root, "+")
    }

    /// True when `topic` is an aggregator's status under `root`.
    pub fn is_aggregator_status(root: &str, topic: &str) -> bool {
        topic
            .strip_prefix(root.trim_end_matches('/'))
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(AGGREGATOR_LEVEL))
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix("/status"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }

    /// The subscription filter for every gateway's messages of `kind` under `root`
    /// (`{root}/+/+/+/{kind}`), optionally as an MQTT 5 / Mosquitto shared subscription.
    pub fn filter(root: &str, kind: TopicKind, shared_group: Option<&str>) -> String {
        let root = root.trim_end_matches('/');
        match shared_group {
            Some(g) => format!("$share/{g}/{root}/+/+/+/{}", kind.as_str()),
            None => format!("{root}/+/+/+/{}", kind.as_str()),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.root,
            self.plant,
            self.line,
            self.gateway,
            self.kind.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregator_status_topics() {
        let t = Topic::aggregator_status("threadline/v1/", "agg-1");
        assert_eq!(t, "threadline/v1/_aggregator/agg-1/status");
        assert!(Topic::is_aggregator_status("threadline/v1", &t));
        assert_eq!(
            Topic::aggregator_status_filter("threadline/v1"),
            "threadline/v1/_aggregator/+/status"
        );
        assert!(!Topic::is_aggregator_status(
            "threadline/v1",
            "threadline/v1/_aggregator/a/b/status"
        ));
        assert!(!Topic::is_aggregator_status(
            "threadline/v1",
            "threadline/v1/plant/line/gw/status"
        ));
        assert!(!Topic::is_aggregator_status("other", &t));
    }

    #[test]
    fn builds_and_parses() {
        let t = Topic::new(
            DEFAULT_ROOT,
            "plant-a",
            "line-1",
            "gw-line-1",
            TopicKind::Records,
        )
        .unwrap();
        let s = t.to_string();
        assert_eq!(s, "threadline/v1/plant-a/line-1/gw-line-1/records");
        assert_eq!(Topic::parse(DEFAULT_ROOT, &s).unwrap(), t);
        assert_eq!(
            t.with_kind(TopicKind::Ack).to_string(),
            "threadline/v1/plant-a/line-1/gw-line-1/ack"
        );
    }

    #[test]
    fn rejects_malformed_topics_with_a_reason() {
        let cases = [
            ("other/v1/p/l/g/records", "does not start with the root"),
            ("threadline/v1/p/l/records", "has 3 levels"),
            ("threadline/v1/p/l/g/x/records", "has 5 levels"),
            ("threadline/v1/p/l/g/recordz", "unknown kind \"recordz\""),
            (
                "threadline/v1/p//g/records",
                "line \"\" is not a valid topic level: it is empty",
            ),
            ("threadline/v1/p/l/+/records", "wildcard"),
            ("threadline/v1/$p/l/g/records", "starts with '$'"),
        ];
        for (topic, want) in cases {
            let err = Topic::parse(DEFAULT_ROOT, topic).unwrap_err().to_string();
            assert!(err.contains(want), "{topic}: {err} should contain {want}");
        }
    }

    #[test]
    fn filters() {
        assert_eq!(
            Topic::filter("threadline/v1/", TopicKind::Records, None),
            "threadline/v1/+/+/+/records"
        );
        assert_eq!(
            Topic::filter("threadline/v1", TopicKind::Records, Some("threadline")),
            "$share/threadline/threadline/v1/+/+/+/records"
        );
    }
}
