//! The databases the backup tests dump, and their fingerprint as PostgreSQL sees it: what a
//! restore must reproduce.

use std::collections::BTreeMap;

use crate::harness::PgServer;

/// Several tables with jsonb, bytea, numeric, dates, unicode text and names, NULLs, a foreign
/// key, an index, a sequence moved by hand and a view: 225,000 rows.
pub const RICH_SCHEMA: &str = r#"
CREATE TABLE customers (
    id bigserial,
    name text NOT NULL,
    email text,
    created timestamptz NOT NULL,
    profile jsonb
);
CREATE TABLE orders (
    id bigserial,
    customer_id bigint NOT NULL,
    amount numeric(12, 2) NOT NULL,
    note text,
    placed date NOT NULL
);
CREATE TABLE attachments (
    id integer,
    customer_id bigint,
    mime text,
    content bytea NOT NULL
);
CREATE TABLE "Événements ✓" (
    id integer PRIMARY KEY,
    "libellé" text,
    payload jsonb
);
CREATE SEQUENCE invoice_no START 1000;
CREATE VIEW big_spenders AS
    SELECT c.id, c.name, sum(o.amount) AS total
    FROM customers c JOIN orders o ON o.customer_id = c.id
    GROUP BY c.id, c.name HAVING sum(o.amount) > 2000;
INSERT INTO customers (name, email, created, profile)
    SELECT 'Client ' || g || CASE g % 4
               WHEN 0 THEN ' Zoë Ångström'
               WHEN 1 THEN ' 日本語テキスト'
               WHEN 2 THEN ' Ελληνικά 🐘'
               ELSE E' O''Brien, "quoted"\ttab\\slash' END,
           'c' || g || '@example.org',
           timestamptz '2020-01-01 00:00:00+00' + g * interval '17 minutes',
           CASE WHEN g % 10 = 0 THEN NULL ELSE jsonb_build_object(
               'tier', g % 5, 'tags', jsonb_build_array('a', 'β', g), 'score', g * 1.5,
               'active', g % 3 = 0, 'nested', jsonb_build_object('ü', repeat('z', g % 7))) END
    FROM generate_series(1, 50000) g;
INSERT INTO orders (customer_id, amount, note, placed)
    SELECT 1 + g % 50000, (g % 997) * 1.37,
           CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || md5(g::text) END,
           date '2021-01-01' + g % 700
    FROM generate_series(1, 150000) g;
INSERT INTO attachments
    SELECT g, 1 + g % 50000, 'application/octet-stream',
           decode(md5(g::text) || md5((-g)::text), 'hex') || '\x00ff0a5c'::bytea
    FROM generate_series(1, 20000) g;
INSERT INTO "Événements ✓"
    SELECT g, 'événement n°' || g || E'\nligne 2', jsonb_build_object('k', repeat('x', g % 50), 'ü', g)
    FROM generate_series(1, 5000) g;
-- Constraints after the data: one index build or join each instead of a check per row.
ALTER TABLE customers ADD PRIMARY KEY (id), ADD UNIQUE (email);
ALTER TABLE orders ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE attachments ADD PRIMARY KEY (id),
    ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
CREATE INDEX orders_customer ON orders (customer_id);
SELECT setval('invoice_no', 4242);
SELECT nextval('invoice_no');
"#;

/// Six small tables of every kind row counts must cover: empty, partitioned (parent and
/// partitions), a quoted unicode name; 5,503 rows.
pub const SMALL_SCHEMA: &str = r#"
CREATE TABLE accounts (id integer PRIMARY KEY, name text);
INSERT INTO accounts SELECT g, 'account ' || g FROM generate_series(1, 1500) g;
CREATE TABLE "Ünï Tab" (id integer PRIMARY KEY, v jsonb);
INSERT INTO "Ünï Tab" VALUES (1, '{"a": 1}'), (2, '[]'), (3, NULL);
CREATE TABLE empty_one (id integer PRIMARY KEY);
CREATE TABLE events (id integer, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, date '2024-06-01' + g % 400 FROM generate_series(1, 2000) g;
"#;

/// Rows of each table of [`RICH_SCHEMA`].
pub const RICH_ROWS: [(&str, i64); 4] = [
    ("public.attachments", 20_000),
    ("public.customers", 50_000),
    ("public.orders", 150_000),
    ("public.\"Événements ✓\"", 5_000),
];

/// Per user table (named as `quote_ident(schema).quote_ident(table)`, as the manifest names
/// them): its row count and the md5 of all its rows as text in `id` order.
pub fn fingerprint(pg: &PgServer, db: &str) -> BTreeMap<String, (i64, String)> {
    let tables = pg.psql(
        db,
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    );
    // One query for all tables: a psql per table costs more than the counting.
    let query = tables
        .lines()
        .map(|table| {
            format!(
                "SELECT {lit}, count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) \
                 FROM {table} t",
                lit = sql_literal(table)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    pg.psql(db, &query)
        .lines()
        .map(|row| {
            let mut fields = row.rsplitn(3, '|');
            let md5 = fields.next().expect("md5").to_owned();
            let count = fields.next().expect("count").parse().expect("a count");
            let table = fields.next().expect("table").to_owned();
            (table, (count, md5))
        })
        .collect()
}

/// `s` as an SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Just the row counts of [`fingerprint`].
pub fn row_counts(pg: &PgServer, db: &str) -> BTreeMap<String, i64> {
    fingerprint(pg, db)
        .into_iter()
        .map(|(t, (n, _))| (t, n))
        .collect()
}
