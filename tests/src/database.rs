//! A fresh PostgreSQL database per test, and the checks that only the database can answer.

use std::time::Duration;

use anyhow::Result;
use threadline_shared::testing::skip_or_fail;

/// A fresh PostgreSQL database, dropped at the end of the test (best effort).
pub struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates `threadline_e2e_<uuid>` on the server of `THREADLINE_TEST_DATABASE_URL`
    /// (default `postgres://postgres@127.0.0.1:5432/postgres`); `None` when unreachable.
    pub async fn create() -> Option<TestDb> {
        let admin_url = std::env::var("THREADLINE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            sqlx::postgres::PgPool::connect(&admin_url),
        )
        .await;
        let pool = match conn {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                skip_or_fail(&format!(
                    "PostgreSQL at {admin_url} is unreachable ({e}); set THREADLINE_TEST_DATABASE_URL to a server where the user may CREATE DATABASE"
                ));
                return None;
            }
            Err(_) => {
                skip_or_fail(&format!("PostgreSQL at {admin_url} did not answer in 5 s"));
                return None;
            }
        };
        let name = format!("threadline_e2e_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
        {
            skip_or_fail(&format!("cannot create a test database: {e}"));
            return None;
        }
        pool.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin_url.clone());
        Some(TestDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        })
    }

    /// A copy of this database as it is now (`CREATE DATABASE … TEMPLATE`), read-only for every
    /// session (`default_transaction_read_only`): what a read replica that stopped replaying at
    /// this moment looks like. Nobody may be connected to this database while it is copied.
    pub async fn read_only_copy(&self) -> Result<TestDb> {
        let pool = sqlx::postgres::PgPool::connect(&self.admin_url).await?;
        let name = format!("{}_replica", self.name);
        for sql in [
            format!("CREATE DATABASE {name} TEMPLATE {}", self.name),
            format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await?;
        }
        pool.close().await;
        let base = self
            .url
            .rsplit_once('/')
            .map_or(self.url.as_str(), |(b, _)| b);
        Ok(TestDb {
            url: format!("{base}/{name}"),
            admin_url: self.admin_url.clone(),
            name,
        })
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        if let Ok(pool) = sqlx::postgres::PgPool::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }

    /// Rows of `sql` (a `SELECT count(*)`), for duplicate checks.
    pub async fn count(&self, sql: &str) -> Result<i64> {
        let pool = sqlx::postgres::PgPool::connect(&self.url).await?;
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(n)
    }
}

/// Duplicate checks on the aggregator's database: (gateway, epoch, seq) appear once in the
/// event log, and no genealogy edge or operation is stored twice.
pub async fn duplicates(db: &TestDb) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (what, sql) in [
        (
            "events with the same (gateway, epoch, seq)",
            "SELECT count(*) FROM (SELECT gateway, epoch, seq FROM events GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
        (
            "edges stored twice",
            "SELECT count(*) FROM (SELECT parent_id, child_id, relation FROM edges GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
        (
            "operations stored twice",
            "SELECT count(*) FROM (SELECT unit_id, station, completed_at FROM operations GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        ),
    ] {
        let n = db.count(sql).await?;
        if n != 0 {
            out.push(format!("{n} {what}"));
        }
    }
    Ok(out)
}
