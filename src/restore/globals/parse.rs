//! `globals.sql` as statements by kind: roles with their attributes, role settings, role
//! comments, memberships, tablespaces, the session settings at the top, and anything else.
//!
//! Pure: text in, statements out. A role's `CREATE ROLE x;` and the `ALTER ROLE x WITH …` that
//! pg_dumpall writes after it become one [`Role`]; its password, when the dump kept one
//! (`globals-passwords = true`), is a [`Secret`] and never part of a report.

use super::lex::{self, LexError, Token};
use crate::secret::Secret;

/// A statement of the globals dump, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// `SET name = value` at the top of the dump (applied to the session first).
    Session {
        sql: String,
    },
    Role(Role),
    /// `ALTER ROLE r [IN DATABASE d] SET param …`.
    Setting {
        role: String,
        parameter: String,
        sql: String,
    },
    /// `COMMENT ON ROLE r …` or `SECURITY LABEL … ON ROLE r …`.
    RoleComment {
        role: String,
        sql: String,
    },
    Membership(Membership),
    /// `CREATE TABLESPACE` (`create`), or `ALTER`/`COMMENT ON`/`GRANT … ON TABLESPACE`.
    Tablespace {
        name: String,
        create: bool,
        sql: String,
    },
    /// A statement of a kind not applied by atpred (e.g. `GRANT SET ON PARAMETER`).
    Other {
        line: usize,
        sql: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// The attributes that differ from `CREATE ROLE`'s defaults, as SQL words
    /// (`LOGIN`, `CONNECTION LIMIT 5`, `VALID UNTIL '…'`); no password.
    pub attributes: Vec<String>,
    pub password: Option<Secret>,
}

impl Role {
    /// Attributes only a superuser may give (PostgreSQL 15).
    pub fn superuser_attributes(&self) -> Vec<&str> {
        self.attributes
            .iter()
            .map(String::as_str)
            .filter(|a| ["SUPERUSER", "REPLICATION", "BYPASSRLS"].contains(a))
            .collect()
    }
}

/// `GRANT role TO member [WITH ADMIN OPTION] [GRANTED BY grantor]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub role: String,
    pub member: String,
    pub admin: bool,
}

/// `CREATE ROLE`'s defaults, left out of [`Role::attributes`].
const DEFAULTS: [&str; 7] = [
    "NOSUPERUSER",
    "INHERIT",
    "NOCREATEROLE",
    "NOCREATEDB",
    "NOLOGIN",
    "NOREPLICATION",
    "NOBYPASSRLS",
];

/// Parses the text of a globals dump.
pub fn parse(text: &str) -> Result<Vec<Statement>, LexError> {
    let mut out: Vec<Statement> = Vec::new();
    for raw in lex::statements(text)? {
        let err = |message: String| LexError {
            line: raw.line,
            message,
        };
        let t = lex::tokens(&raw.text).map_err(err)?;
        let stmt = classify(&t, &raw.text, raw.line).map_err(err)?;
        match stmt {
            // The ALTER ROLE … WITH after a CREATE ROLE: merged into it.
            Statement::Role(r) if t[0].is("alter") => {
                match out
                    .iter_mut()
                    .find(|s| matches!(s, Statement::Role(o) if o.name == r.name))
                {
                    Some(Statement::Role(o)) => {
                        o.attributes = r.attributes;
                        o.password = r.password;
                    }
                    _ => out.push(Statement::Role(r)),
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn classify(t: &[Token], sql: &str, line: usize) -> Result<Statement, String> {
    let word = |i: usize, kw: &str| t.get(i).is_some_and(|x| x.is(kw));
    let name = |i: usize| {
        t.get(i)
            .and_then(Token::ident)
            .map(str::to_owned)
            .ok_or_else(|| format!("a name expected after {:?}", words(t, i)))
    };
    let sql = sql.to_owned();
    Ok(if word(0, "set") {
        Statement::Session { sql }
    } else if word(0, "create") && word(1, "role") {
        Statement::Role(Role {
            name: name(2)?,
            attributes: Vec::new(),
            password: None,
        })
    } else if word(0, "alter") && word(1, "role") && word(3, "with") {
        attributes(name(2)?, &t[4..])?
    } else if word(0, "alter") && word(1, "role") && (word(3, "set") || word(3, "in")) {
        let at = t.iter().position(|x| x.is("set")).unwrap_or(t.len());
        Statement::Setting {
            role: name(2)?,
            parameter: name(at + 1)?,
            sql,
        }
    } else if let Some(role) = on_object(t, "role") {
        Statement::RoleComment { role, sql }
    } else if word(0, "create") && word(1, "tablespace") {
        Statement::Tablespace {
            name: name(2)?,
            create: true,
            sql,
        }
    } else if let Some(name) = on_object(t, "tablespace") {
        Statement::Tablespace {
            name,
            create: false,
            sql,
        }
    } else if word(0, "grant") && !t.iter().any(|x| x.is("on")) {
        membership(t)?
    } else {
        Statement::Other { line, sql }
    })
}

/// The name in `COMMENT ON <kind> name`, `SECURITY LABEL [FOR p] ON <kind> name`,
/// `ALTER <kind> name` (tablespaces) and `GRANT … ON <kind> name`.
fn on_object(t: &[Token], kind: &str) -> Option<String> {
    let first = t.first()?;
    let at = if first.is("comment") || first.is("security") || first.is("grant") {
        t.iter().position(|x| x.is("on"))? + 1
    } else if first.is("alter") && kind == "tablespace" {
        1
    } else {
        return None;
    };
    if !t.get(at)?.is(kind) {
        return None;
    }
    t.get(at + 1)?.ident().map(str::to_owned)
}

fn attributes(name: String, t: &[Token]) -> Result<Statement, String> {
    let mut attributes = Vec::new();
    let mut password = None;
    let mut i = 0;
    while i < t.len() {
        let w = t[i].raw().to_ascii_uppercase();
        let takes = |n: usize| -> Result<String, String> {
            let parts: Vec<String> = t
                .get(i..i + n)
                .ok_or_else(|| format!("{w} of role {name:?} has no value"))?
                .iter()
                .map(Token::raw)
                .collect();
            Ok(parts.join(" "))
        };
        let n = match w.as_str() {
            "PASSWORD" => {
                if let Some(Token::Literal(l)) = t.get(i + 1) {
                    password = Some(Secret::new(l.clone()));
                }
                i += 2;
                continue;
            }
            "VALID" => 3,
            "CONNECTION" if matches!(t.get(i + 2), Some(Token::Symbol('-'))) => 4,
            "CONNECTION" => 3,
            _ => 1,
        };
        let attr = takes(n)?;
        if n > 1 || !DEFAULTS.contains(&attr.to_ascii_uppercase().as_str()) {
            attributes.push(if n == 1 {
                attr.to_ascii_uppercase()
            } else {
                attr
            });
        }
        i += n;
    }
    Ok(Statement::Role(Role {
        name,
        attributes,
        password,
    }))
}

fn membership(t: &[Token]) -> Result<Statement, String> {
    let to = t
        .iter()
        .position(|x| x.is("to"))
        .ok_or("GRANT without TO")?;
    let one = |from: usize, until: usize, what: &str| -> Result<String, String> {
        match t.get(from..until) {
            Some([only]) => only
                .ident()
                .map(str::to_owned)
                .ok_or_else(|| format!("{what}: a role name expected")),
            _ => Err(format!("{what}: one role expected in {:?}", words(t, from))),
        }
    };
    let end = t
        .iter()
        .position(|x| x.is("with") || x.is("granted"))
        .unwrap_or(t.len());
    Ok(Statement::Membership(Membership {
        role: one(1, to, "GRANT")?,
        member: one(to + 1, end, "GRANT … TO")?,
        admin: t.iter().any(|x| x.is("admin")),
    }))
}

fn words(t: &[Token], from: usize) -> String {
    t.iter()
        .skip(from)
        .take(4)
        .map(Token::raw)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../../tests/data/globals-pg15.sql");

    fn role<'a>(all: &'a [Statement], name: &str) -> &'a Role {
        all.iter()
            .find_map(|s| match s {
                Statement::Role(r) if r.name == name => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no role {name}"))
    }

    #[test]
    fn a_real_pg15_dump_parses_by_kind() {
        let all = parse(SAMPLE).expect("the sample parses");
        assert_eq!(
            role(&all, "Odd Role").attributes,
            [
                "LOGIN",
                "CONNECTION LIMIT 5",
                "VALID UNTIL '2030-01-01 00:00:00+00'"
            ]
        );
        assert_eq!(role(&all, "analyst").attributes, ["CREATEDB", "LOGIN"]);
        assert!(role(&all, "app_owner").attributes.is_empty());
        assert_eq!(
            role(&all, "postgres").superuser_attributes(),
            ["SUPERUSER", "REPLICATION", "BYPASSRLS"]
        );
        assert_eq!(
            role(&all, "repl").superuser_attributes(),
            ["REPLICATION", "BYPASSRLS"]
        );
        let roles = all
            .iter()
            .filter(|s| matches!(s, Statement::Role(_)))
            .count();
        assert_eq!(roles, 7, "one Role per CREATE ROLE");
        let settings: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|s| match s {
                Statement::Setting {
                    role, parameter, ..
                } => Some((role.as_str(), parameter.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            settings,
            [
                ("analyst", "statement_timeout"),
                ("readers", "search_path"),
                ("semi;colon", "search_path")
            ]
        );
        let members: Vec<(&str, &str, bool)> = all
            .iter()
            .filter_map(|s| match s {
                Statement::Membership(m) => Some((m.role.as_str(), m.member.as_str(), m.admin)),
                _ => None,
            })
            .collect();
        assert_eq!(
            members,
            [
                ("app_owner", "analyst", true),
                ("pg_read_all_data", "readers", false),
                ("readers", "Odd Role", false),
                ("readers", "analyst", false),
            ]
        );
        let spaces: Vec<(&str, bool)> = all
            .iter()
            .filter_map(|s| match s {
                Statement::Tablespace { name, create, .. } => Some((name.as_str(), *create)),
                _ => None,
            })
            .collect();
        assert_eq!(spaces, [("ts1", true), ("ts1", false), ("ts1", false)]);
        assert!(all.iter().any(
            |s| matches!(s, Statement::RoleComment { role, sql } if role == "readers" && sql.contains("it''s fine"))
        ));
        assert_eq!(
            all.iter()
                .filter(|s| matches!(s, Statement::Session { .. }))
                .count(),
            3
        );
        assert!(
            !all.iter().any(|s| matches!(s, Statement::Other { .. })),
            "{all:#?}"
        );
    }

    #[test]
    fn passwords_are_kept_apart_and_never_printed() {
        let text = "CREATE ROLE a;\nALTER ROLE a WITH NOSUPERUSER INHERIT LOGIN PASSWORD \
                    'SCRAM-SHA-256$4096:abc==$x:y' CONNECTION LIMIT -1;\n";
        let all = parse(text).expect("parses");
        let r = role(&all, "a");
        assert_eq!(r.attributes, ["LOGIN", "CONNECTION LIMIT - 1"]);
        assert_eq!(
            r.password.as_ref().map(Secret::expose),
            Some("'SCRAM-SHA-256$4096:abc==$x:y'")
        );
        assert!(!format!("{all:?}").contains("SCRAM"), "{all:?}");
    }

    #[test]
    fn other_statements_and_bad_ones() {
        let all = parse("GRANT SET ON PARAMETER work_mem TO a;\n").expect("parses");
        assert!(matches!(&all[0], Statement::Other { line: 1, .. }));
        let e = parse("\n\nGRANT a, b TO c;\n").expect_err("two roles in one GRANT");
        assert_eq!(e.line, 3, "{e}");
        assert!(parse("CREATE ROLE;").is_err());
    }
}
