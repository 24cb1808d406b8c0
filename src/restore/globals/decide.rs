//! What of `globals.sql` to run on the target cluster, and why each item is run, skipped or
//! cannot be applied. Pure: the parsed statements and what the target has in, steps out.
//!
//! The rules: a role that exists on the target is never altered (its attributes, password,
//! settings and memberships are the target's business); a new role is created with the
//! attributes it had, and gets its settings, comment and memberships. A membership is granted
//! when at least one of its two roles is created by this restore and both exist afterwards.
//! What needs more than atpred's role has is reported, not attempted: SUPERUSER, REPLICATION
//! and BYPASSRLS roles and tablespaces need a superuser, other roles CREATEROLE (PostgreSQL 15).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::parse::{Membership, Role, Statement};
use crate::pg::quote_ident;
use crate::secret::Secret;

/// What the target cluster has, and what atpred's role may do on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub roles: BTreeSet<String>,
    pub tablespaces: BTreeSet<String>,
    pub superuser: bool,
    pub createrole: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Role,
    Setting,
    Comment,
    Membership,
    Tablespace,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Would be applied (a dry run), or is about to be.
    Planned,
    Applied,
    /// Left alone on purpose (it exists on the target).
    Skipped,
    /// Could not be applied; `reason` says why (a missing privilege, the server's message).
    NotApplied,
}

/// One line of the globals report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: Kind,
    /// The role, `role: parameter`, `role to member`, or tablespace.
    pub what: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// When a step runs: session settings first, then roles, comments, settings and memberships
/// in one transaction (each in a savepoint), then tablespaces (`CREATE TABLESPACE` cannot run
/// in a transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Session,
    Transaction,
    Tablespace,
}

/// An item and the SQL that applies it (`None` unless planned). The SQL of a role with a
/// kept password holds the password, hence a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub item: Item,
    pub sql: Option<Secret>,
    /// A role or tablespace this step creates (undone if the restore fails later).
    pub creates: Option<String>,
}

/// The steps for `statements` on `target`, in the order they run.
pub fn decide(statements: &[Statement], target: &Target) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut created: BTreeSet<&str> = BTreeSet::new();
    for s in statements {
        if let Statement::Role(r) = s {
            let step = role(r, target);
            if step.item.outcome == Outcome::Planned {
                created.insert(r.name.as_str());
            }
            steps.push(step);
        }
    }
    let mut spaces: BTreeSet<&str> = BTreeSet::new();
    for s in statements {
        let step = match s {
            Statement::Session { sql } => Step {
                phase: Phase::Session,
                item: item(Kind::Other, "session setting", Outcome::Planned, ""),
                sql: Some(Secret::new(sql.clone())),
                creates: None,
            },
            Statement::Role(_) => continue,
            Statement::Setting {
                role,
                parameter,
                sql,
            } => of_role(
                Kind::Setting,
                &format!("{role}: {parameter}"),
                role,
                sql,
                target,
                &created,
            ),
            Statement::RoleComment { role, sql } => {
                of_role(Kind::Comment, role, role, sql, target, &created)
            }
            Statement::Membership(m) => membership(m, target, &created),
            Statement::Tablespace { name, create, sql } => {
                let step = tablespace(name, *create, sql, target, &spaces);
                if *create && step.item.outcome == Outcome::Planned {
                    spaces.insert(name.as_str());
                }
                step
            }
            Statement::Other { line, sql } => Step {
                phase: Phase::Transaction,
                item: item(
                    Kind::Other,
                    &format!("line {line}: {}", first_words(sql)),
                    Outcome::NotApplied,
                    "a statement of a kind atpred does not apply; apply it by hand if needed",
                ),
                sql: None,
                creates: None,
            },
        };
        steps.push(step);
    }
    steps.sort_by_key(|s| s.phase);
    steps
}

fn item(kind: Kind, what: &str, outcome: Outcome, reason: &str) -> Item {
    Item {
        kind,
        what: what.to_owned(),
        outcome,
        reason: reason.to_owned(),
    }
}

fn not_planned(phase: Phase, item: Item) -> Step {
    Step {
        phase,
        item,
        sql: None,
        creates: None,
    }
}

fn role(r: &Role, target: &Target) -> Step {
    let phase = Phase::Transaction;
    let no = |outcome, reason: &str| not_planned(phase, item(Kind::Role, &r.name, outcome, reason));
    if target.roles.contains(&r.name) {
        return no(
            Outcome::Skipped,
            "exists on the target; left as it is (its attributes, password, settings and \
             memberships are the target's)",
        );
    }
    let needs_super = r.superuser_attributes();
    if !needs_super.is_empty() && !target.superuser {
        return no(
            Outcome::NotApplied,
            &format!(
                "{} needs a superuser; atpred's role is not one",
                needs_super.join(", ")
            ),
        );
    }
    if !target.superuser && !target.createrole {
        return no(
            Outcome::NotApplied,
            "creating roles needs CREATEROLE (or a superuser); atpred's role has neither",
        );
    }
    let mut sql = format!("CREATE ROLE {}", quote_ident(&r.name));
    if !r.attributes.is_empty() || r.password.is_some() {
        sql.push_str(" WITH ");
        sql.push_str(&r.attributes.join(" "));
    }
    if let Some(pw) = &r.password {
        sql.push_str(&format!(" PASSWORD {}", pw.expose()));
    }
    let mut reason = if r.attributes.is_empty() {
        "default attributes".to_owned()
    } else {
        r.attributes.join(" ")
    };
    if r.password.is_some() {
        reason.push_str(", password kept");
    } else if r.attributes.iter().any(|a| a == "LOGIN") {
        reason.push_str(", no password (the backup holds none): set one to log in with it");
    }
    Step {
        phase,
        item: item(Kind::Role, &r.name, Outcome::Planned, &reason),
        sql: Some(Secret::new(sql)),
        creates: Some(r.name.clone()),
    }
}

/// A setting or comment of `role`: applied only to a role this restore creates.
fn of_role(
    kind: Kind,
    what: &str,
    role: &str,
    sql: &str,
    target: &Target,
    created: &BTreeSet<&str>,
) -> Step {
    let phase = Phase::Transaction;
    if created.contains(role) {
        return Step {
            phase,
            item: item(kind, what, Outcome::Planned, ""),
            sql: Some(Secret::new(sql.to_owned())),
            creates: None,
        };
    }
    let (outcome, reason) = if target.roles.contains(role) {
        (
            Outcome::Skipped,
            format!("role {role} existed: left as it is"),
        )
    } else {
        (Outcome::NotApplied, format!("role {role} was not created"))
    };
    not_planned(phase, item(kind, what, outcome, &reason))
}

fn membership(m: &Membership, target: &Target, created: &BTreeSet<&str>) -> Step {
    let phase = Phase::Transaction;
    let what = format!(
        "{} to {}{}",
        m.role,
        m.member,
        if m.admin { " with admin option" } else { "" }
    );
    let there = |r: &str| target.roles.contains(r) || created.contains(r);
    let missing: Vec<&str> = [m.role.as_str(), m.member.as_str()]
        .into_iter()
        .filter(|r| !there(r))
        .collect();
    if !missing.is_empty() {
        let reason = format!("role {} is not on the target", missing.join(" and "));
        return not_planned(
            phase,
            item(Kind::Membership, &what, Outcome::NotApplied, &reason),
        );
    }
    if !created.contains(m.role.as_str()) && !created.contains(m.member.as_str()) {
        return not_planned(
            phase,
            item(
                Kind::Membership,
                &what,
                Outcome::Skipped,
                "both roles existed: their memberships are the target's",
            ),
        );
    }
    // Without GRANTED BY: the grantor of the source may not exist here; atpred's role grants.
    let sql = format!(
        "GRANT {} TO {}{}",
        quote_ident(&m.role),
        quote_ident(&m.member),
        if m.admin { " WITH ADMIN OPTION" } else { "" }
    );
    Step {
        phase,
        item: item(Kind::Membership, &what, Outcome::Planned, ""),
        sql: Some(Secret::new(sql)),
        creates: None,
    }
}

fn tablespace(
    name: &str,
    create: bool,
    sql: &str,
    target: &Target,
    created: &BTreeSet<&str>,
) -> Step {
    let phase = Phase::Tablespace;
    let what = if create {
        name.to_owned()
    } else {
        format!("{name}: {}", first_words(sql))
    };
    let no =
        |outcome, reason: &str| not_planned(phase, item(Kind::Tablespace, &what, outcome, reason));
    if create {
        if target.tablespaces.contains(name) {
            return no(Outcome::Skipped, "exists on the target; left as it is");
        }
        if !target.superuser {
            return no(
                Outcome::NotApplied,
                "CREATE TABLESPACE needs a superuser; atpred's role is not one",
            );
        }
    } else if !created.contains(name) {
        return if target.tablespaces.contains(name) {
            no(Outcome::Skipped, "the tablespace existed: left as it is")
        } else {
            no(Outcome::NotApplied, "the tablespace was not created")
        };
    }
    Step {
        phase,
        item: item(Kind::Tablespace, &what, Outcome::Planned, ""),
        sql: Some(Secret::new(sql.to_owned())),
        creates: create.then(|| name.to_owned()),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
