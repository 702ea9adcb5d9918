//! The dead-letter table as the `dead-letters list|replay` commands see it: listing, and
//! re-ingesting rows after an upgrade (the ones that now store are removed, the others keep
//! their row with the new reason).

use serde::Serialize;

use super::db::Db;
use super::model::{Batch, DeadLetterKind};
use super::sql::{self, Sql};
use crate::ingest::{Incoming, decode};

/// One dead letter, as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    #[sqlx(try_from = "sql::OptTime")]
    pub received_at: Option<String>,
    #[sqlx(try_from = "sql::OptTime")]
    pub last_received_at: Option<String>,
    /// How many times the same payload arrived on the same topic.
    pub count: i64,
    pub kind: String,
    pub topic: String,
    pub gateway: Option<String>,
    pub reason: String,
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Replayed {
    /// Stored now; its row was removed.
    Stored,
    /// Still cannot be stored; its row keeps the new reason.
    StillFailing(String),
}

impl Db {
    /// Dead letters, oldest first (`id` given: that one only).
    pub async fn dead_letters(&self, id: Option<i64>) -> sqlx::Result<Vec<DeadLetterRow>> {
        let mut q = Sql::new(
            "SELECT id, received_at, last_received_at, count, kind, topic, gateway, reason, payload
             FROM dead_letters",
        );
        if let Some(id) = id {
            let p = q.param(id);
            q.push(&format!(" WHERE id = {p}"));
        }
        q.push(" ORDER BY id");
        self.fetch_all(q).await
    }

    /// Decodes dead letter `d` again (topic root `root`, payload limit `max_payload_bytes`) and
    /// writes it in one transaction. A row that now stores is removed in that transaction's
    /// wake; one that is still refused (by decoding or by the database) keeps its row, with the
    /// new reason and kind. `Err` only when the database is unavailable.
    pub async fn replay_dead_letter(
        &self,
        d: &DeadLetterRow,
        root: &str,
        max_payload_bytes: usize,
    ) -> sqlx::Result<Replayed> {
        let mut batch = Batch::default();
        // An envelope whose signature failed is what a forger sends: replaying it (unsigned,
        // decoded as plain JSON) would let it into the chain. It stays; the real gateway
        // re-sends its own records, signed.
        let decoded = if d.kind == DeadLetterKind::BadSignature.as_str() {
            None
        } else {
            Some(decode(root, &d.topic, &d.payload, max_payload_bytes))
        };
        let refusal = match decoded {
            None => Some((
                DeadLetterKind::BadSignature,
                format!(
                    "{} (never replayed: a badly signed envelope may be forged; the gateway \
                     re-sends its own records, signed)",
                    d.reason
                        .split(" (never replayed")
                        .next()
                        .unwrap_or_default()
                ),
            )),
            Some(decoded) => match decoded {
                Incoming::Dead(x) => Some((x.kind, x.reason)),
                Incoming::Records(_, deads) if !deads.is_empty() => Some((
                    deads[0].kind,
                    deads
                        .iter()
                        .map(|x| x.reason.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                )),
                Incoming::Records(e, _) => {
                    batch.envelopes.push(e);
                    None
                }
                Incoming::Status(s) => {
                    batch.statuses.push(s);
                    None
                }
                Incoming::Ignored => None,
            },
        };
        let refusal = match refusal {
            Some(r) => Some(r),
            None if batch.is_empty() => None,
            None => match self.write_batch(&batch).await {
                Ok(_) => None,
                Err(e) => match self.refusal(&e) {
                    Some(why) => Some((
                        DeadLetterKind::Refused,
                        format!("refused by the database: {why}"),
                    )),
                    None => return Err(e),
                },
            },
        };
        match refusal {
            None => {
                self.execute(Sql::new("DELETE FROM dead_letters WHERE id = $1").bind(d.id))
                    .await?;
                Ok(Replayed::Stored)
            }
            Some((kind, reason)) => {
                let reason = super::backend::storable(&reason);
                self.execute(
                    Sql::new("UPDATE dead_letters SET kind = $1, reason = $2 WHERE id = $3")
                        .bind(kind.as_str())
                        .bind(&reason)
                        .bind(d.id),
                )
                .await?;
                Ok(Replayed::StillFailing(reason))
            }
        }
    }
}
