//! Bulk inserts of the write side: binary `COPY … FROM STDIN` for big batches, one
//! `INSERT … SELECT FROM UNNEST(…)` for small ones (see [`COPY_MIN_ROWS`]).
//!
//! Binary COPY is the cheapest way into PostgreSQL: no SQL to plan, no text to parse, no arrays
//! to unpack. Neither path has `ON CONFLICT`, so callers only write rows they have already
//! deduplicated under the gateway's row lock; should a duplicate slip through anyway, the unique
//! index refuses the batch, the writer retries it, and the retry's dedupe lookup sees the row —
//! nothing is stored twice.
//!
//! Format (PostgreSQL docs, "COPY — Binary Format"): a 19-byte header, then per row a 16-bit
//! field count and per field a 32-bit length (-1 = NULL) and the value in the type's binary
//! send format; a 16-bit -1 ends the data. All integers are big-endian.

use sqlx::{Postgres, Transaction};
use threadline_shared::time::Timestamp;
use uuid::Uuid;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01T00:00:00Z).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Below this many rows a batch goes in as one `INSERT … SELECT FROM UNNEST(…)` instead.
///
/// Why: sqlx writes the COPY data and the closing `CopyDone` as two separate socket writes and
/// does not set `TCP_NODELAY`, so after a small `CopyData` the `CopyDone` waits in Nagle's
/// algorithm for the server's delayed ACK — 40 ms on Linux, per COPY. An `UNNEST` insert is one
/// write and one round trip; from a few thousand rows on, COPY's lower cost per row wins.
pub(crate) const COPY_MIN_ROWS: usize = 2000;

/// One column's values, typed as the table wants them.
enum Col<'a> {
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<&'a str>>),
    Bytea(Vec<&'a [u8]>),
    Uuid(Vec<Option<Uuid>>),
    Ts(Vec<Option<Timestamp>>),
    /// JSON text, stored as `jsonb`.
    Jsonb(Vec<Option<&'a str>>),
}

impl Col<'_> {
    /// The array type `UNNEST` takes it as, and the cast back in the select list.
    fn sql_types(&self) -> (&'static str, &'static str) {
        match self {
            Col::I64(_) => ("int8[]", ""),
            Col::F64(_) => ("float8[]", ""),
            Col::Bool(_) => ("bool[]", ""),
            Col::Text(_) => ("text[]", ""),
            Col::Bytea(_) => ("bytea[]", ""),
            Col::Uuid(_) => ("uuid[]", ""),
            Col::Ts(_) => ("timestamptz[]", ""),
            Col::Jsonb(_) => ("text[]", "::jsonb"),
        }
    }
}

/// Rows for one table, built row by row (`rows.row().i64(..).text(..)`), then written by
/// [`BulkRows::insert`] as a binary COPY or an `UNNEST` insert, whichever is cheaper for the
/// count. Rows are stored in the order given, in both ways (serial ids follow it).
pub(crate) struct BulkRows<'a> {
    cols: Vec<Col<'a>>,
    /// Next column of the current row.
    at: usize,
    rows: usize,
}

macro_rules! push {
    ($self:ident, $variant:ident, $v:expr) => {{
        let i = $self.at;
        $self.at += 1;
        match $self.cols.get_mut(i) {
            Some(Col::$variant(c)) => c.push($v),
            None => $self.cols.push(Col::$variant(vec![$v])),
            // A different type than the first row gave this column: a bug at the call site.
            Some(_) => debug_assert!(false, "column {i} changed type"),
        }
        $self
    }};
}

impl<'a> BulkRows<'a> {
    pub(crate) fn new() -> Self {
        BulkRows {
            cols: Vec::new(),
            at: 0,
            rows: 0,
        }
    }

    /// Starts a row; every row must give the same columns in the same order.
    pub(crate) fn row(&mut self) -> &mut Self {
        debug_assert!(
            self.rows == 0 || self.at == self.cols.len(),
            "row incomplete"
        );
        self.at = 0;
        self.rows += 1;
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        push!(self, I64, Some(v))
    }
    pub(crate) fn f64(&mut self, v: f64) -> &mut Self {
        push!(self, F64, Some(v))
    }
    pub(crate) fn opt_f64(&mut self, v: Option<f64>) -> &mut Self {
        push!(self, F64, v)
    }
    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        push!(self, Bool, Some(v))
    }
    pub(crate) fn text(&mut self, v: &'a str) -> &mut Self {
        push!(self, Text, Some(v))
    }
    pub(crate) fn opt_text(&mut self, v: Option<&'a str>) -> &mut Self {
        push!(self, Text, v)
    }
    pub(crate) fn bytea(&mut self, v: &'a [u8]) -> &mut Self {
        push!(self, Bytea, v)
    }
    pub(crate) fn uuid(&mut self, v: Uuid) -> &mut Self {
        push!(self, Uuid, Some(v))
    }
    pub(crate) fn ts(&mut self, v: Timestamp) -> &mut Self {
        push!(self, Ts, Some(v))
    }
    pub(crate) fn opt_ts(&mut self, v: Option<Timestamp>) -> &mut Self {
        push!(self, Ts, v)
    }
    pub(crate) fn jsonb(&mut self, v: &'a str) -> &mut Self {
        push!(self, Jsonb, Some(v))
    }

    /// Writes the rows into `target` — a table with its column list, e.g.
    /// `readings (gateway, epoch, …)` — in the transaction; rows written.
    pub(crate) async fn insert(
        self,
        t: &mut Transaction<'_, Postgres>,
        target: &str,
    ) -> sqlx::Result<u64> {
        if self.rows == 0 {
            return Ok(0);
        }
        if self.rows >= COPY_MIN_ROWS {
            self.copy_into(t, target).await
        } else {
            self.unnest_into(t, target).await
        }
    }

    async fn unnest_into(
        self,
        t: &mut Transaction<'_, Postgres>,
        target: &str,
    ) -> sqlx::Result<u64> {
        let n = self.cols.len();
        let arrays: Vec<String> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 1, c.sql_types().0))
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let select: Vec<String> = self
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("c{i}{}", c.sql_types().1))
            .collect();
        let sql = format!(
            "INSERT INTO {target} SELECT {} FROM UNNEST({}) WITH ORDINALITY AS u({}, ord) \
             ORDER BY ord",
            select.join(", "),
            arrays.join(", "),
            names.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in self.cols {
            q = match c {
                Col::I64(v) => q.bind(v),
                Col::F64(v) => q.bind(v),
                Col::Bool(v) => q.bind(v),
                Col::Text(v) | Col::Jsonb(v) => q.bind(v),
                Col::Bytea(v) => q.bind(v),
                Col::Uuid(v) => q.bind(v),
                Col::Ts(v) => q.bind(v),
            };
        }
        Ok(q.execute(&mut **t).await?.rows_affected())
    }

    /// Binary `COPY … FROM STDIN`.
    async fn copy_into(self, t: &mut Transaction<'_, Postgres>, target: &str) -> sqlx::Result<u64> {
        let data = self.encode();
        let mut copy = t
            .copy_in_raw(&format!("COPY {target} FROM STDIN (FORMAT binary)"))
            .await?;
        // Chunks bound the size of each CopyData message.
        for chunk in data.chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await
    }

    /// The binary COPY stream of the rows.
    fn encode(&self) -> Vec<u8> {
        let fields = self.cols.len() as i16;
        let mut buf = Vec::with_capacity(21 + self.rows * (2 + self.cols.len() * 16));
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        fn field(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
            match bytes {
                Some(b) => {
                    buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    buf.extend_from_slice(b);
                }
                None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        for r in 0..self.rows {
            buf.extend_from_slice(&fields.to_be_bytes());
            for c in &self.cols {
                match c {
                    Col::I64(v) => field(
                        &mut buf,
                        v[r].map(i64::to_be_bytes).as_ref().map(|b| &b[..]),
                    ),
                    Col::F64(v) => field(
                        &mut buf,
                        v[r].map(|x| x.to_bits().to_be_bytes())
                            .as_ref()
                            .map(|b| &b[..]),
                    ),
                    Col::Bool(v) => field(
                        &mut buf,
                        v[r].map(|x| [u8::from(x)]).as_ref().map(|b| &b[..]),
                    ),
                    Col::Text(v) => field(&mut buf, v[r].map(str::as_bytes)),
                    Col::Bytea(v) => field(&mut buf, Some(v[r])),
                    Col::Uuid(v) => field(&mut buf, v[r].as_ref().map(|u| &u.as_bytes()[..])),
                    Col::Ts(v) => field(
                        &mut buf,
                        v[r].map(|t| (t.timestamp_micros() - PG_EPOCH_OFFSET_US).to_be_bytes())
                            .as_ref()
                            .map(|b| &b[..]),
                    ),
                    Col::Jsonb(v) => match v[r] {
                        // jsonb's binary format: version 1, then the text.
                        Some(j) => {
                            buf.extend_from_slice(&(j.len() as i32 + 1).to_be_bytes());
                            buf.push(1);
                            buf.extend_from_slice(j.as_bytes());
                        }
                        None => field(&mut buf, None),
                    },
                }
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rows_and_trailer() {
        let mut c = BulkRows::new();
        c.row().i64(7).opt_text(None);
        let b = c.encode();
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(b.len(), 19 + 2 + (4 + 8) + 4 + 2);
        assert_eq!(&b[19..21], &2i16.to_be_bytes());
        assert_eq!(&b[21..25], &8i32.to_be_bytes());
        assert_eq!(&b[25..33], &7i64.to_be_bytes());
        assert_eq!(&b[33..37], &(-1i32).to_be_bytes());
        assert_eq!(&b[37..], &(-1i16).to_be_bytes());
    }

    #[test]
    fn timestamps_count_from_2000() {
        let mut c = BulkRows::new();
        let t = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:01.000002Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("valid");
        c.row().ts(t);
        let b = c.encode();
        assert_eq!(&b[25..33], &1_000_002i64.to_be_bytes());
    }
}
