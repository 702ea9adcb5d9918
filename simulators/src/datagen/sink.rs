//! Where rows go: per-table buffers, encoded for PostgreSQL's `COPY … FROM STDIN` text format or
//! as SQLite multi-row `INSERT … VALUES` tuples, and flushed in foreign-key order.
//!
//! PostgreSQL: a table's buffer is handed to a second task once it holds 4 MB; that task loads
//! buffers one `COPY` at a time, in the order they were queued, while this one keeps generating
//! (both cores work). The queue is bounded, so generation runs at most a few buffers ahead.
//! SQLite: a table's buffer becomes one `INSERT` once it holds 500 rows.
//!
//! Invariant: before a table's buffer is sent, the buffers of every table before it in
//! [`Table::ALL`] are sent, so a row never reaches the database before the rows it references.

use std::fmt::Write as _;

use anyhow::Context as _;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::rows::{Fields, Row, Table};
use super::target::Target;

/// A PostgreSQL buffer is sent once it holds this many bytes.
const PG_FLUSH_BYTES: usize = 4 << 20;
/// Rows per SQLite `INSERT`.
const SQLITE_ROWS_PER_STMT: usize = 500;
/// PostgreSQL buffers queued for the COPY task at most.
const PG_QUEUED_BUFFERS: usize = 4;

const TABLES: usize = Table::ALL.len();

/// The rows of the generated plant on their way into the database.
pub(super) struct Sink {
    backend: Backend,
    /// Encoded rows not sent yet, per table (index of [`Table::ALL`]).
    bufs: [String; TABLES],
    /// Rows in `bufs`, per table.
    buffered: [usize; TABLES],
    /// Rows written so far, per table (the generator's report).
    rows: [u64; TABLES],
}

enum Backend {
    Postgres {
        /// Buffers for the COPY task; `None` once it was told to finish.
        copies: Option<mpsc::Sender<(Table, String)>>,
        copier: Option<JoinHandle<anyhow::Result<()>>>,
    },
    Sqlite {
        pool: SqlitePool,
    },
}

impl Sink {
    /// A sink into `target` (PostgreSQL: starts the COPY task).
    pub(super) fn new(target: &Target) -> Sink {
        let backend = match target {
            Target::Postgres(pool) => {
                let (tx, rx) = mpsc::channel(PG_QUEUED_BUFFERS);
                let copier = tokio::spawn(run_copies(pool.clone(), rx));
                Backend::Postgres {
                    copies: Some(tx),
                    copier: Some(copier),
                }
            }
            Target::Sqlite(pool) => Backend::Sqlite { pool: pool.clone() },
        };
        Sink {
            backend,
            bufs: Default::default(),
            buffered: [0; TABLES],
            rows: [0; TABLES],
        }
    }

    /// Buffers one row; sends its table's buffer (after those before it) when it is full.
    pub(super) async fn push<R: Row>(&mut self, row: &R) -> anyhow::Result<()> {
        let t = R::TABLE.index();
        let buf = &mut self.bufs[t];
        let full = match self.backend {
            Backend::Postgres { .. } => {
                row.encode(&mut Encoder::new(buf, Format::CopyText));
                buf.push('\n');
                buf.len() >= PG_FLUSH_BYTES
            }
            Backend::Sqlite { .. } => {
                if self.buffered[t] > 0 {
                    buf.push(',');
                }
                buf.push('(');
                row.encode(&mut Encoder::new(buf, Format::SqlValues));
                buf.push(')');
                self.buffered[t] + 1 >= SQLITE_ROWS_PER_STMT
            }
        };
        self.buffered[t] += 1;
        self.rows[t] += 1;
        if full {
            self.flush_upto(R::TABLE).await?;
        }
        Ok(())
    }

    /// Sends every buffer and waits until the database holds every row; the rows written per
    /// table, in [`Table::ALL`] order.
    pub(super) async fn finish(mut self) -> anyhow::Result<[u64; TABLES]> {
        for t in Table::ALL {
            self.flush(t).await?;
        }
        self.finish_copies().await?;
        Ok(self.rows)
    }

    /// Sends `table`'s buffer after the buffers of every table before it.
    async fn flush_upto(&mut self, table: Table) -> anyhow::Result<()> {
        for t in &Table::ALL[..=table.index()] {
            self.flush(*t).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, table: Table) -> anyhow::Result<()> {
        let t = table.index();
        if self.bufs[t].is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.bufs[t]);
        self.buffered[t] = 0;
        match &self.backend {
            Backend::Postgres { copies, .. } => {
                let Some(tx) = copies else {
                    anyhow::bail!("the COPY task has already finished");
                };
                if tx.send((table, data)).await.is_err() {
                    // The copier stopped on an error: report it.
                    self.finish_copies().await?;
                    anyhow::bail!("the COPY task stopped before every row was loaded");
                }
            }
            Backend::Sqlite { pool } => {
                let name = table.name();
                let sql = format!(
                    "INSERT INTO {name} ({}) VALUES {data}",
                    table.columns().join(", ")
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .with_context(|| format!("INSERT {name}"))?;
            }
        }
        Ok(())
    }

    /// Waits until every queued COPY has been loaded (PostgreSQL); its error if one failed.
    async fn finish_copies(&mut self) -> anyhow::Result<()> {
        if let Backend::Postgres { copies, copier } = &mut self.backend {
            copies.take();
            if let Some(h) = copier.take() {
                h.await.context("COPY task")??;
            }
        }
        Ok(())
    }
}

/// Loads buffers with `COPY … FROM STDIN`, in the order they were queued (which is foreign-key
/// order, see the module's invariant).
async fn run_copies(pool: PgPool, mut rx: mpsc::Receiver<(Table, String)>) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("COPY connection")?;
    while let Some((table, data)) = rx.recv().await {
        let name = table.name();
        let stmt = format!("COPY {name} ({}) FROM STDIN", table.columns().join(", "));
        let mut copy = conn
            .copy_in_raw(&stmt)
            .await
            .with_context(|| format!("COPY {name}"))?;
        copy.send(data.as_bytes()).await?;
        copy.finish()
            .await
            .with_context(|| format!("COPY {name}"))?;
    }
    Ok(())
}

/// How a row's values are written into a buffer.
#[derive(Debug, Clone, Copy)]
enum Format {
    /// PostgreSQL's COPY text format: tab-separated, `\N` for NULL, backslash escapes.
    CopyText,
    /// The inside of one SQL `VALUES` tuple: comma-separated literals.
    SqlValues,
}

/// Writes one row's values into a buffer in a [`Format`].
struct Encoder<'b> {
    out: &'b mut String,
    format: Format,
    first: bool,
}

impl<'b> Encoder<'b> {
    fn new(out: &'b mut String, format: Format) -> Self {
        Encoder {
            out,
            format,
            first: true,
        }
    }

    /// The separator before every value but the first.
    fn sep(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.out.push(match self.format {
                Format::CopyText => '\t',
                Format::SqlValues => ',',
            });
        }
    }
}

impl Fields for Encoder<'_> {
    fn int(&mut self, v: i64) {
        self.sep();
        let _ = write!(self.out, "{v}");
    }

    fn float(&mut self, v: f64) {
        self.sep();
        let _ = write!(self.out, "{v:?}");
    }

    fn text(&mut self, v: &str) {
        self.sep();
        match self.format {
            Format::CopyText => {
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '\t' => self.out.push_str("\\t"),
                        '\n' => self.out.push_str("\\n"),
                        '\r' => self.out.push_str("\\r"),
                        c => self.out.push(c),
                    }
                }
            }
            Format::SqlValues => {
                self.out.push('\'');
                for c in v.chars() {
                    if c == '\'' {
                        self.out.push('\'');
                    }
                    self.out.push(c);
                }
                self.out.push('\'');
            }
        }
    }

    fn flag(&mut self, v: bool) {
        self.sep();
        self.out.push(match (self.format, v) {
            (Format::CopyText, true) => 't',
            (Format::CopyText, false) => 'f',
            (Format::SqlValues, true) => '1',
            (Format::SqlValues, false) => '0',
        });
    }

    fn null(&mut self) {
        self.sep();
        self.out.push_str(match self.format {
            Format::CopyText => "\\N",
            Format::SqlValues => "NULL",
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::rows::Edge;

    const EDGE: Edge<'static> = Edge {
        id: 7,
        parent_id: 1,
        child_id: 2,
        relation: "packed",
        qty: None,
        station: "it's\ta\\b",
        valid_from: "2026-01-05T06:00:00.000000Z",
        valid_to: None,
        closed_reason: None,
    };

    #[test]
    fn copy_text_escapes_and_marks_null() {
        let mut s = String::new();
        EDGE.encode(&mut Encoder::new(&mut s, Format::CopyText));
        assert_eq!(
            s,
            "7\t1\t2\tpacked\t\\N\tit's\\ta\\\\b\t2026-01-05T06:00:00.000000Z\t\\N\t\\N"
        );
    }

    #[test]
    fn sql_values_quote_text() {
        let mut s = String::new();
        Edge {
            qty: Some(1.0),
            ..EDGE
        }
        .encode(&mut Encoder::new(&mut s, Format::SqlValues));
        assert_eq!(
            s,
            "7,1,2,'packed',1.0,'it''s\ta\\b','2026-01-05T06:00:00.000000Z',NULL,NULL"
        );
    }
}
