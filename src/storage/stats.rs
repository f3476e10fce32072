//! Open statistics (BRIEF C12): the exact counts a release is built from,
//! each unit (a resident) counted once per cell and in at most `bound`
//! cells of a table (its first ones in a fixed order: the sensitivity the
//! noise is scaled to); the releases themselves, immutable; and the public
//! ledger of the ε they spent, charged atomically; and the counts of the
//! DPO's annual report (DGA art. 20).
//!
//! Storage stores and fetches; it never decides who may do what.

use async_trait::async_trait;

use super::StorageResult;
use crate::domain::Timestamp;

/// One exact cell: up to three dimension values (unused ones are empty)
/// and its count.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StatCount {
    pub a: String,
    pub b: String,
    pub c: String,
    pub n: i64,
}

/// A published release.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct StatsReleaseRow {
    /// `YYYY-MM`: the release's id.
    pub period: String,
    pub epsilon: f64,
    /// The Frictionless data package, exactly as hashed.
    pub datapackage: String,
    /// SHA-256 of `datapackage`, hex: the value the audit log holds.
    pub sha256: String,
    pub audit_index: i64,
    pub published_at: i64,
}

/// ε spent in a calendar year, in millionths.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StatsBudgetRow {
    pub year: i64,
    pub spent_micro: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    Published,
    /// A release of that month exists (releases never change).
    AlreadyPublished,
    /// Its ε would take its year over the cap: nothing was stored.
    BudgetExhausted,
}

#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Residents (active) by purpose and the state of their consent at
    /// `end`: the last event before it, `given` past its end date being
    /// `expired`. One consent per resident and purpose.
    async fn stats_consents(&self, end: Timestamp) -> StorageResult<Vec<StatCount>>;
    /// The month's counts of one table whose unit (a resident) may fall in
    /// several cells: each resident counted once per cell and in at most
    /// `bound` cells, the first ones in (a, b, c) order.
    async fn stats_clamped(
        &self,
        table: ClampedTable,
        start: Timestamp,
        end: Timestamp,
        bound: i64,
    ) -> StorageResult<Vec<StatCount>>;
    /// Extracts requested in the month, by partner and kind.
    async fn stats_extracts(
        &self,
        start: Timestamp,
        end: Timestamp,
    ) -> StorageResult<Vec<StatCount>>;

    /// Stores a release and charges `charge_micro` (its ε in millionths)
    /// to its year, in one transaction: nothing is stored when the month
    /// has a release already or when the year's spend would pass
    /// `cap_micro`.
    async fn stats_publish(
        &self,
        release: &StatsReleaseRow,
        tables: &[(String, String)],
        year: i64,
        charge_micro: i64,
        cap_micro: i64,
    ) -> StorageResult<PublishOutcome>;
    /// Claims the building of `period`'s release until `until`: true when
    /// no claim stands at `now` (one statement: of concurrent claimers, one
    /// wins).
    async fn stats_claim(
        &self,
        period: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> StorageResult<bool>;
    /// Releases, newest first.
    async fn stats_releases(&self) -> StorageResult<Vec<StatsReleaseRow>>;
    async fn stats_release(&self, period: &str) -> StorageResult<Option<StatsReleaseRow>>;
    /// A release's table as CSV.
    async fn stats_table(&self, period: &str, name: &str) -> StorageResult<Option<String>>;
    /// Every table of a release: (name, CSV).
    async fn stats_tables(&self, period: &str) -> StorageResult<Vec<(String, String)>>;
    /// ε spent per year, newest first.
    async fn stats_budgets(&self) -> StorageResult<Vec<StatsBudgetRow>>;

    /// The DPO's annual report: extracts requested in [start, end) by
    /// partner, kind and state.
    async fn report_extracts(
        &self,
        start: Timestamp,
        end: Timestamp,
    ) -> StorageResult<Vec<StatCount>>;
    /// ε of the noisy aggregates approved among them, by partner.
    async fn report_epsilon(
        &self,
        start: Timestamp,
        end: Timestamp,
    ) -> StorageResult<Vec<(String, f64)>>;
    /// Rights requests received in [start, end) by kind, state and
    /// deadline (`on_time`, `late`, or `open` / `overdue` at `now`).
    async fn report_rights(
        &self,
        start: Timestamp,
        end: Timestamp,
        now: Timestamp,
    ) -> StorageResult<Vec<StatCount>>;
    /// Deposits standing from [start, end) by source and category.
    async fn report_deposits(
        &self,
        start: Timestamp,
        end: Timestamp,
    ) -> StorageResult<Vec<StatCount>>;
}

/// Counts distinct (resident, cell) pairs of `pairs` (a query giving
/// `resident_id, a, b, c` for the month [$1, $2)), each resident in at most
/// `$3` cells, the first ones in (a, b, c) order. A literal, so each table's
/// SQL is one constant.
macro_rules! clamped {
    ($pairs:literal) => {
        concat!(
            "SELECT a, b, c, COUNT(*) AS n FROM ( \
               SELECT a, b, c, ROW_NUMBER() OVER (PARTITION BY resident_id ORDER BY a, b, c) AS rn \
               FROM (SELECT DISTINCT resident_id, a, b, c FROM (",
            $pairs,
            ") p) d \
             ) r WHERE rn <= $3 GROUP BY a, b, c ORDER BY a, b, c"
        )
    };
}

/// The tables counted by [`StatsStore::stats_clamped`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClampedTable {
    /// Residents with an authorisation of a mandate created in the month,
    /// by structure and démarche.
    Mandates,
    /// Residents whose rights request was answered in the month, by kind,
    /// outcome, and `yes`/`no` for on time.
    Rights,
    /// Residents a source deposited about in the month, by source and
    /// category.
    Deposits,
}

impl ClampedTable {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            ClampedTable::Mandates => clamped!(
                "SELECT ma.resident_id, ma.structure_id AS a, ma.demarche AS b, '' AS c \
                 FROM mandate_authorisations ma JOIN mandates m ON m.id = ma.mandate_id \
                 WHERE m.created_at >= $1 AND m.created_at < $2"
            ),
            ClampedTable::Rights => clamped!(
                "SELECT resident_id, kind AS a, state AS b, \
                   CASE WHEN updated_at <= due_at THEN 'yes' ELSE 'no' END AS c \
                 FROM rights_requests \
                 WHERE state IN ('granted', 'refused') AND updated_at >= $1 AND updated_at < $2"
            ),
            ClampedTable::Deposits => clamped!(
                "SELECT resident_id, source_id AS a, category AS b, '' AS c \
                 FROM source_deposits WHERE deposited_at >= $1 AND deposited_at < $2"
            ),
        }
    }
}

macro_rules! impl_stats_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::StatsStore for $store {
            async fn stats_consents(
                &self,
                end: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(
                    "SELECT e.purpose AS a, \
                       CASE WHEN e.state = 'given' AND e.valid_until IS NOT NULL AND e.valid_until <= $1 \
                            THEN 'expired' ELSE e.state END AS b, \
                       '' AS c, COUNT(*) AS n \
                     FROM consent_events e JOIN residents r ON r.id = e.resident_id AND r.status = 'active' \
                     WHERE e.created_at < $1 AND NOT EXISTS ( \
                       SELECT 1 FROM consent_events f WHERE f.consent_id = e.consent_id AND f.created_at < $1 \
                       AND (f.created_at > e.created_at OR (f.created_at = e.created_at AND f.id > e.id))) \
                     GROUP BY a, b ORDER BY a, b",
                )
                .bind(end)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn stats_clamped(
                &self,
                table: $crate::storage::stats::ClampedTable,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
                bound: i64,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(table.sql())
                    .bind(start)
                    .bind(end)
                    .bind(bound)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn stats_extracts(
                &self,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(
                    "SELECT partner_id AS a, kind AS b, '' AS c, COUNT(*) AS n FROM extracts \
                     WHERE created_at >= $1 AND created_at < $2 GROUP BY partner_id, kind ORDER BY a, b",
                )
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn stats_publish(
                &self,
                release: &$crate::storage::StatsReleaseRow,
                tables: &[(String, String)],
                year: i64,
                charge_micro: i64,
                cap_micro: i64,
            ) -> $crate::storage::StorageResult<$crate::storage::PublishOutcome> {
                let mut tx = self.pool.begin().await?;
                // The release first: a second process publishing the same
                // month waits on its key, then stores nothing.
                let stored = sqlx::query(
                    "INSERT INTO stats_releases (period, epsilon, datapackage, sha256, audit_index, published_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (period) DO NOTHING",
                )
                .bind(&release.period)
                .bind(release.epsilon)
                .bind(&release.datapackage)
                .bind(&release.sha256)
                .bind(release.audit_index)
                .bind(release.published_at)
                .execute(&mut *tx)
                .await?;
                if stored.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok($crate::storage::PublishOutcome::AlreadyPublished);
                }
                // The charge: one conditional update of the year's row,
                // which PostgreSQL re-checks on the row it locked and
                // SQLite runs under its write lock. Two releases of one
                // year cannot both pass on the same remaining budget.
                sqlx::query(
                    "INSERT INTO stats_budget (year, spent_micro) VALUES ($1, 0) ON CONFLICT (year) DO NOTHING",
                )
                .bind(year)
                .execute(&mut *tx)
                .await?;

                let charged = sqlx::query(
                    "UPDATE stats_budget SET spent_micro = spent_micro + $2 \
                     WHERE year = $1 AND spent_micro + $2 <= $3",
                )
                .bind(year)
                .bind(charge_micro)
                .bind(cap_micro)
                .execute(&mut *tx)
                .await?;
                if charged.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok($crate::storage::PublishOutcome::BudgetExhausted);
                }
                for (name, csv) in tables {
                    sqlx::query("INSERT INTO stats_tables (period, name, csv) VALUES ($1, $2, $3)")
                        .bind(&release.period)
                        .bind(name)
                        .bind(csv)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok($crate::storage::PublishOutcome::Published)
            }

            async fn stats_claim(
                &self,
                period: &str,
                until: $crate::domain::Timestamp,
                now: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<bool> {
                let claimed = sqlx::query(
                    "INSERT INTO stats_attempts (period, until) VALUES ($1, $2) \
                     ON CONFLICT (period) DO UPDATE SET until = excluded.until \
                     WHERE stats_attempts.until <= $3",
                )
                .bind(period)
                .bind(until)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(claimed.rows_affected() == 1)
            }

            async fn stats_releases(
                &self,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatsReleaseRow>> {
                Ok(sqlx::query_as(
                    "SELECT period, epsilon, datapackage, sha256, audit_index, published_at \
                     FROM stats_releases ORDER BY period DESC",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn stats_release(
                &self,
                period: &str,
            ) -> $crate::storage::StorageResult<Option<$crate::storage::StatsReleaseRow>> {
                Ok(sqlx::query_as(
                    "SELECT period, epsilon, datapackage, sha256, audit_index, published_at \
                     FROM stats_releases WHERE period = $1",
                )
                .bind(period)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn stats_table(
                &self,
                period: &str,
                name: &str,
            ) -> $crate::storage::StorageResult<Option<String>> {
                Ok(sqlx::query_scalar("SELECT csv FROM stats_tables WHERE period = $1 AND name = $2")
                    .bind(period)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn stats_tables(
                &self,
                period: &str,
            ) -> $crate::storage::StorageResult<Vec<(String, String)>> {
                Ok(sqlx::query_as("SELECT name, csv FROM stats_tables WHERE period = $1")
                    .bind(period)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn stats_budgets(
                &self,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatsBudgetRow>> {
                Ok(sqlx::query_as("SELECT year, spent_micro FROM stats_budget ORDER BY year DESC")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn report_extracts(
                &self,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(
                    "SELECT partner_id AS a, kind AS b, state AS c, COUNT(*) AS n FROM extracts \
                     WHERE created_at >= $1 AND created_at < $2 GROUP BY partner_id, kind, state ORDER BY a, b, c",
                )
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn report_epsilon(
                &self,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<(String, f64)>> {
                Ok(sqlx::query_as(
                    "SELECT partner_id, CAST(SUM(epsilon) AS DOUBLE PRECISION) FROM extracts \
                     WHERE created_at >= $1 AND created_at < $2 AND epsilon IS NOT NULL \
                     AND state IN ('approved', 'building', 'ready', 'downloaded', 'expired') \
                     GROUP BY partner_id ORDER BY partner_id",
                )
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn report_rights(
                &self,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
                now: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(
                    "SELECT kind AS a, state AS b, \
                       CASE WHEN state IN ('granted', 'refused') \
                              THEN (CASE WHEN updated_at <= due_at THEN 'on_time' ELSE 'late' END) \
                            WHEN due_at < $3 THEN 'overdue' ELSE 'open' END AS c, \
                       COUNT(*) AS n \
                     FROM rights_requests WHERE created_at >= $1 AND created_at < $2 \
                     GROUP BY a, b, c ORDER BY a, b, c",
                )
                .bind(start)
                .bind(end)
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn report_deposits(
                &self,
                start: $crate::domain::Timestamp,
                end: $crate::domain::Timestamp,
            ) -> $crate::storage::StorageResult<Vec<$crate::storage::StatCount>> {
                Ok(sqlx::query_as(
                    "SELECT source_id AS a, category AS b, '' AS c, COUNT(*) AS n FROM source_deposits \
                     WHERE deposited_at >= $1 AND deposited_at < $2 GROUP BY source_id, category ORDER BY a, b",
                )
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}
pub(crate) use impl_stats_store;
