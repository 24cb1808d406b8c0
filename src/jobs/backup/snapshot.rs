//! The dump's snapshot: a REPEATABLE READ transaction that exports a snapshot for
//! `pg_dump --snapshot` and counts every table's rows in it, so the counts describe exactly
//! what was dumped.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::pg::PgError;

/// What we learn about the database before dumping it.
pub struct Snapshot {
    pub client: Client,
    pub id: String,
    pub server_version: String,
    pub database_bytes: u64,
}

/// Opens the snapshot transaction on `client`; keep it open until pg_dump has finished.
pub async fn begin(client: Client) -> Result<Snapshot, PgError> {
    let q = |e: tokio_postgres::Error| PgError::Query(crate::pg::describe(&e));
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(q)?;
    let row = client
        .query_one(
            "SELECT pg_export_snapshot(), current_setting('server_version'), \
             pg_database_size(current_database())",
            &[],
        )
        .await
        .map_err(q)?;
    let size: i64 = row.get(2);
    Ok(Snapshot {
        id: row.get(0),
        server_version: row.get(1),
        database_bytes: size.max(0) as u64,
        client,
    })
}

/// Every user table (`quote_ident(schema).quote_ident(table)`, then its pages): the tables
/// counted at backup time and after a restore, so both sides list the same ones.
pub(crate) const USER_TABLES: &str = "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relpages \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// Row counts of every user table (schema-qualified, quoted names), in the client's current
/// transaction.
pub async fn count_rows(client: &Client) -> Result<BTreeMap<String, i64>, PgError> {
    let q = |e: tokio_postgres::Error| PgError::Query(crate::pg::describe(&e));
    let tables = client
        .query(&format!("{USER_TABLES} ORDER BY 1"), &[])
        .await
        .map_err(q)?;
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        // The name comes from quote_ident, so it is safe to splice.
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(q)?
            .get(0);
        counts.insert(table, count);
    }
    Ok(counts)
}

/// On-disk size of every user table with its indexes and TOAST (`pg_total_relation_size`),
/// keyed like [`count_rows`]: what a restore of that table will write, shown by its plan.
pub async fn table_bytes(client: &Client) -> Result<BTreeMap<String, u64>, PgError> {
    let q = |e: tokio_postgres::Error| PgError::Query(crate::pg::describe(&e));
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
             pg_total_relation_size(c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(q)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect())
}

/// Differences between the dumped counts and a restored database's, one line each.
pub fn compare(expected: &BTreeMap<String, i64>, restored: &BTreeMap<String, i64>) -> Vec<String> {
    let mut problems = Vec::new();
    for (table, want) in expected {
        match restored.get(table) {
            None => problems.push(format!("{table}: missing after restore")),
            Some(got) if got != want => {
                problems.push(format!("{table}: {got} rows restored, {want} dumped"))
            }
            Some(_) => {}
        }
    }
    for table in restored.keys().filter(|t| !expected.contains_key(*t)) {
        problems.push(format!("{table}: restored but not in the dump's snapshot"));
    }
    problems
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_counts() {
        let a = [("public.a".to_owned(), 1), ("public.b".to_owned(), 2)].into();
        let b = [("public.a".to_owned(), 1), ("public.c".to_owned(), 2)].into();
        let problems = super::compare(&a, &b);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(super::compare(&a, &a).is_empty());
    }
}
