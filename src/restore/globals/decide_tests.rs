//! Cases for [`super::decide`] on a real PostgreSQL 15 globals dump.

use super::*;
use crate::restore::globals::parse::parse;

const SAMPLE: &str = include_str!("../../../tests/data/globals-pg15.sql");

fn target(roles: &[&str], superuser: bool, createrole: bool) -> Target {
    Target {
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tablespaces: ["pg_default", "pg_global"].map(str::to_owned).into(),
        superuser,
        createrole,
    }
}

/// `(kind, what, outcome)` of every reported step.
fn outcomes(steps: &[Step]) -> Vec<(Kind, String, Outcome)> {
    steps
        .iter()
        .filter(|s| s.phase != Phase::Session)
        .map(|s| (s.item.kind, s.item.what.clone(), s.item.outcome))
        .collect()
}

fn find<'a>(steps: &'a [Step], what: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.item.what == what)
        .unwrap_or_else(|| panic!("no step {what}: {:#?}", outcomes(steps)))
}

#[test]
fn a_fresh_cluster_as_superuser_gets_everything_but_existing_roles() {
    let all = parse(SAMPLE).expect("parses");
    let steps = decide(&all, &target(&["postgres", "pg_read_all_data"], true, true));
    use Outcome::*;
    let got = outcomes(&steps);
    assert!(
        got.contains(&(Kind::Role, "postgres".into(), Skipped)),
        "{got:#?}"
    );
    for r in [
        "Odd Role",
        "analyst",
        "app_owner",
        "readers",
        "repl",
        "semi;colon",
    ] {
        assert!(
            got.contains(&(Kind::Role, r.into(), Planned)),
            "{r}: {got:#?}"
        );
    }
    assert!(got.iter().all(|(_, _, o)| *o != NotApplied), "{got:#?}");
    let create = find(&steps, "Odd Role");
    assert_eq!(
        create.sql.as_ref().map(Secret::expose),
        Some(
            "CREATE ROLE \"Odd Role\" WITH LOGIN CONNECTION LIMIT 5 VALID UNTIL '2030-01-01 00:00:00+00'"
        )
    );
    assert_eq!(create.creates.as_deref(), Some("Odd Role"));
    assert_eq!(
        find(&steps, "app_owner to analyst with admin option")
            .sql
            .as_ref()
            .map(Secret::expose),
        Some("GRANT \"app_owner\" TO \"analyst\" WITH ADMIN OPTION"),
        "no GRANTED BY"
    );
    assert_eq!(
        find(&steps, "pg_read_all_data to readers").item.outcome,
        Planned
    );
    assert_eq!(find(&steps, "ts1").creates.as_deref(), Some("ts1"));
    let phases: Vec<Phase> = steps.iter().map(|s| s.phase).collect();
    assert!(
        phases.is_sorted(),
        "session, transaction, tablespaces: {phases:?}"
    );
    assert!(
        steps.iter().position(|s| s.item.what == "analyst")
            < steps
                .iter()
                .position(|s| s.item.what == "readers to analyst"),
        "roles before their memberships"
    );
}

#[test]
fn existing_roles_are_never_altered() {
    let all = parse(SAMPLE).expect("parses");
    let steps = decide(
        &all,
        &target(&["postgres", "analyst", "readers"], true, true),
    );
    use Outcome::*;
    assert_eq!(find(&steps, "analyst").item.outcome, Skipped);
    assert!(find(&steps, "analyst").sql.is_none());
    assert_eq!(
        find(&steps, "analyst: statement_timeout").item.outcome,
        Skipped
    );
    let comment = steps
        .iter()
        .find(|s| s.item.kind == Kind::Comment)
        .expect("comment");
    assert_eq!(comment.item.outcome, Skipped, "the comment on readers");
    assert_eq!(
        find(&steps, "readers to analyst").item.outcome,
        Skipped,
        "both existed"
    );
    assert_eq!(
        find(&steps, "readers to Odd Role").item.outcome,
        Planned,
        "a new member"
    );
    assert_eq!(
        find(&steps, "pg_read_all_data to readers").item.outcome,
        NotApplied,
        "pg_read_all_data is not in this target's role list"
    );
}

#[test]
fn without_the_privileges_it_says_what_is_missing() {
    let all = parse(SAMPLE).expect("parses");
    let createrole = decide(&all, &target(&["postgres"], false, true));
    let repl = find(&createrole, "repl");
    assert_eq!(repl.item.outcome, Outcome::NotApplied);
    assert!(
        repl.item
            .reason
            .contains("REPLICATION, BYPASSRLS needs a superuser"),
        "{repl:?}"
    );
    assert_eq!(find(&createrole, "analyst").item.outcome, Outcome::Planned);
    assert_eq!(find(&createrole, "ts1").item.outcome, Outcome::NotApplied);
    assert!(find(&createrole, "ts1").item.reason.contains("superuser"));
    assert_eq!(
        find(&createrole, "ts1: ALTER TABLESPACE ts1").item.outcome,
        Outcome::NotApplied
    );

    let plain = decide(&all, &target(&["postgres"], false, false));
    let analyst = find(&plain, "analyst");
    assert_eq!(analyst.item.outcome, Outcome::NotApplied);
    assert!(analyst.item.reason.contains("CREATEROLE"), "{analyst:?}");
    assert_eq!(
        find(&plain, "analyst: statement_timeout").item.outcome,
        Outcome::NotApplied
    );
    assert_eq!(
        find(&plain, "readers to analyst").item.outcome,
        Outcome::NotApplied
    );
    assert!(plain.iter().all(|s| s.creates.is_none()));
}

#[test]
fn passwords_go_into_the_sql_only() {
    let all = parse("CREATE ROLE a;\nALTER ROLE a WITH LOGIN PASSWORD 'SCRAM-x';\n").expect("p");
    let steps = decide(&all, &target(&[], true, true));
    let a = find(&steps, "a");
    assert_eq!(
        a.sql.as_ref().map(Secret::expose),
        Some("CREATE ROLE \"a\" WITH LOGIN PASSWORD 'SCRAM-x'")
    );
    assert!(a.item.reason.contains("password kept"));
    assert!(!format!("{steps:?}").contains("SCRAM"));
    let json = serde_json::to_string(&a.item).expect("json");
    assert!(!json.contains("SCRAM"), "{json}");
}
