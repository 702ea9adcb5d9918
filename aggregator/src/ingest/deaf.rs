//! A deaf records subscription: the broker granted it but delivers nothing. NATS 2.9 and
//! RabbitMQ 3.10 (measured, docs/scaling.md) accept `$share/{group}/…` and never deliver to it,
//! so `shared_group` replicas there would sit "connected and healthy" while every gateway's
//! outbox grows. The statuses (which every replica subscribes to without `$share`, so that it
//! also gets the retained ones) say which gateways are online and how many records they hold:
//! gateways online with records waiting and no records message for `deaf_after_s` means the
//! subscription is deaf.
//!
//! Both conditions must hold for the whole period: records waiting *since* at least
//! `deaf_after_s` (a status that says so, with no record since), and no record for as long —
//! so a loop that was blocked by back-pressure (no statuses either) and a gateway that has
//! just come online are not mistaken for deafness.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use threadline_shared::envelope::{GatewayState, Status};

/// `[aggregator] deaf_after_s` when not set.
pub const DEFAULT_DEAF_AFTER_S: u64 = 60;

/// The watch (owned by the MQTT loop; see the module docs).
#[derive(Debug)]
pub struct DeafWatch {
    /// `None` = never deaf (`deaf_after_s = 0`).
    after: Option<Duration>,
    /// Status topic → records waiting, for gateways online with `buffer_depth` > 0.
    waiting: HashMap<String, u64>,
    /// Status topics of the gateways whose last status says online (as this replica saw it:
    /// `/metrics` shows the count, which tells whether every replica gets the statuses).
    online: HashSet<String>,
    /// The last records message (or the subscription, at the start).
    last_record: Instant,
    /// Since when records have been waiting without a records message.
    waiting_since: Option<Instant>,
}

impl DeafWatch {
    pub fn new(deaf_after_s: u64, now: Instant) -> DeafWatch {
        DeafWatch {
            after: (deaf_after_s > 0).then(|| Duration::from_secs(deaf_after_s)),
            waiting: HashMap::new(),
            online: HashSet::new(),
            last_record: now,
            waiting_since: None,
        }
    }

    /// The subscriptions were (re)made: the clock starts again.
    pub fn subscribed(&mut self, now: Instant) {
        self.last_record = now;
        self.waiting_since = None;
    }

    /// A records message arrived: the subscription hears.
    pub fn record(&mut self, now: Instant) {
        self.last_record = now;
        self.waiting_since = None;
    }

    /// A gateway's status (`topic` is its status topic).
    pub fn status(&mut self, topic: &str, status: &Status, now: Instant) {
        if status.state == GatewayState::Online {
            self.online.insert(topic.to_owned());
        } else {
            self.online.remove(topic);
        }
        if status.state == GatewayState::Online && status.buffer_depth > 0 {
            self.waiting.insert(topic.to_owned(), status.buffer_depth);
            self.waiting_since.get_or_insert(now);
        } else {
            self.waiting.remove(topic);
            if self.waiting.is_empty() {
                self.waiting_since = None;
            }
        }
    }

    /// Gateways whose last status (seen here) says online.
    pub fn online(&self) -> usize {
        self.online.len()
    }

    /// Why the subscription looks deaf, if it does.
    pub fn deaf(&self, now: Instant) -> Option<String> {
        let after = self.after?;
        let since = self.waiting_since?;
        if self.waiting.is_empty()
            || now.duration_since(since) < after
            || now.duration_since(self.last_record) < after
        {
            return None;
        }
        let records: u64 = self.waiting.values().sum();
        Some(format!(
            "no records received for {} s while {} online gateway(s) report {records} records \
             waiting: the broker accepted the records subscription but delivers nothing to it \
             (NATS 2.9 and RabbitMQ 3.10 do this with `$share/…` shared subscriptions: leave \
             `shared_group` out there, see docs/scaling.md)",
            now.duration_since(self.last_record).as_secs(),
            self.waiting.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: GatewayState, depth: u64) -> Status {
        Status {
            state,
            since: threadline_shared::time::now(),
            buffer_depth: depth,
            devices: Vec::new(),
            epoch: None,
            buffer_full: false,
            readings_dropped: 0,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn records_waiting_and_none_arriving_is_deaf() {
        let t0 = Instant::now();
        let mut w = DeafWatch::new(10, t0);
        w.status("a/status", &status(GatewayState::Online, 500), t0 + S);
        assert_eq!(w.deaf(t0 + 10 * S), None, "waiting for 9 s only");
        let why = w.deaf(t0 + 11 * S).expect("deaf");
        assert!(
            why.contains("no records received for 11 s")
                && why.contains("1 online gateway(s) report 500 records")
                && why.contains("$share"),
            "{why}"
        );
        // A record: it hears again, and the clock starts over.
        w.record(t0 + 12 * S);
        assert_eq!(w.deaf(t0 + 21 * S), None);
        w.status("a/status", &status(GatewayState::Online, 700), t0 + 22 * S);
        assert_eq!(w.deaf(t0 + 31 * S), None, "waiting for 9 s only");
        assert!(w.deaf(t0 + 32 * S).is_some());
    }

    #[test]
    fn idle_or_offline_gateways_are_not_deafness() {
        let t0 = Instant::now();
        let mut w = DeafWatch::new(10, t0);
        w.status("a/status", &status(GatewayState::Online, 0), t0);
        assert_eq!(w.deaf(t0 + 100 * S), None, "nothing waiting");
        assert_eq!(w.online(), 1);
        w.status("b/status", &status(GatewayState::Online, 5), t0 + S);
        w.status("b/status", &status(GatewayState::Offline, 5), t0 + 2 * S);
        assert_eq!(
            w.deaf(t0 + 100 * S),
            None,
            "the only waiting gateway went offline"
        );
        assert_eq!(w.online(), 1, "a online, b offline");
        // Switched off.
        let mut w = DeafWatch::new(0, t0);
        w.status("a/status", &status(GatewayState::Online, 5), t0);
        assert_eq!(w.deaf(t0 + 1000 * S), None);
    }

    #[test]
    fn a_status_after_a_long_silence_is_not_deafness_at_once() {
        // The loop was blocked (back-pressure): no record and no status for a long time; the
        // first status after it must not make the subscription deaf at once.
        let t0 = Instant::now();
        let mut w = DeafWatch::new(10, t0);
        w.status("a/status", &status(GatewayState::Online, 5), t0 + 100 * S);
        assert_eq!(w.deaf(t0 + 101 * S), None);
        w.subscribed(t0 + 102 * S);
        w.status("a/status", &status(GatewayState::Online, 5), t0 + 103 * S);
        assert_eq!(w.deaf(t0 + 111 * S), None, "9 s since the re-subscription");
        assert!(w.deaf(t0 + 113 * S).is_some());
    }
}
