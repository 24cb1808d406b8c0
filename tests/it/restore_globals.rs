//! `restore --globals` onto a fresh second cluster: the backup's roles, memberships, role
//! settings, owners and grants as on the source; a role the target already has is skipped,
//! reported and left as it was; without `--globals` the restore still works (everything owned
//! by the restoring role). The source-database refusal holds on the source cluster only. With
//! CREATEROLE but no superuser, what cannot be done is reported, and a restore that cannot keep
//! owners fails cleanly and drops the roles it created. From an encrypted backup with kept
//! password hashes, the password works on the new cluster and the hash is in no reply or log.

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{DB, Fixture, PASSWORD, ROLE, backup_ok, manifest};
use crate::harness::{self, Daemon, PgServer};
use crate::prune_support::NIGHTLY;
use crate::restore_support::restore;

/// The roles the source cluster has beyond the application role, and a table owned by one of
/// them with a grant to another.
fn source_with_roles() -> (Fixture, Daemon, String) {
    let fx = Fixture::new();
    fx.create_small_schema();
    fx.pg.psql(
        "postgres",
        "CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_reader NOLOGIN; \
         CREATE ROLE app_login LOGIN CONNECTION LIMIT 7; GRANT app_reader TO app_login; \
         ALTER ROLE app_login SET statement_timeout = '17s'; CREATE ROLE shared_role LOGIN; \
         CREATE ROLE repl_role REPLICATION",
    );
    fx.pg.psql(
        DB,
        &format!(
            "CREATE TABLE ledger (id int PRIMARY KEY, note text); \
             INSERT INTO ledger SELECT g, 'n' || g FROM generate_series(1, 25) g; \
             ALTER TABLE ledger OWNER TO app_owner; GRANT SELECT ON ledger TO app_reader; \
             GRANT SELECT ON ledger TO {ROLE}"
        ),
    );
    let daemon = fx.daemon(NIGHTLY).spawn();
    let id = backup_ok(&daemon, "nightly");
    (fx, daemon, id)
}

/// A fresh cluster where the application role exists with `attributes`, a daemon on it
/// reading the source's backup-dir, and `shared_role` already there (NOLOGIN).
fn fresh_cluster(fx: &Fixture, attributes: &str) -> (tempfile::TempDir, PgServer, Daemon) {
    let dir = harness::tempdir();
    let pg = PgServer::start_with_password_auth();
    pg.create_role_with_password(ROLE, PASSWORD);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {ROLE} {attributes}; CREATE ROLE shared_role NOLOGIN"),
    );
    let daemon = Daemon::builder(dir.path())
        .postgres(&pg, ROLE, PASSWORD, DB)
        .backup_dir(&fx.backup_dir())
        .toml(NIGHTLY)
        .spawn();
    (dir, pg, daemon)
}

const ROLES: &str = "SELECT string_agg(rolname || ' login=' || rolcanlogin || ' limit=' || \
     rolconnlimit || ' repl=' || rolreplication, ', ' ORDER BY rolname) FROM pg_roles \
     WHERE rolname LIKE 'app%'";
const MEMBERS: &str = "SELECT string_agg(x, ', ' ORDER BY x) FROM (SELECT r.rolname || '>' || \
     m.rolname AS x FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid \
     JOIN pg_roles m ON m.oid = a.member WHERE m.rolname LIKE 'app%') s";
const SETTINGS: &str = "SELECT string_agg(x, ', ' ORDER BY x) FROM (SELECT r.rolname || ':' || \
     array_to_string(s.setconfig, ',') AS x FROM pg_db_role_setting s \
     JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname LIKE 'app%') s";
const OWNERS: &str = "SELECT string_agg(x, ', ' ORDER BY x) FROM (SELECT schemaname || '.' || \
     tablename || ':' || tableowner AS x FROM pg_tables \
     WHERE schemaname NOT IN ('pg_catalog', 'information_schema')) s";
const LEDGER_ACL: &str = "SELECT relacl::text FROM pg_class WHERE relname = 'ledger'";

fn role_count(pg: &PgServer, name: &str) -> String {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
    )
}

#[test]
fn restore_globals_onto_a_fresh_cluster_keeps_roles_owners_and_grants() {
    let (fx, source_daemon, id) = source_with_roles();
    let source_id = fx.pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert_eq!(
        manifest(&source_daemon, &id)["server"]["system_identifier"],
        source_id.as_str(),
        "the manifest names the source cluster"
    );
    // On the source cluster, its own database is still refused.
    let refused = restore(&source_daemon, &id, &["--to", DB, "--yes", "--globals"]);
    assert_eq!(refused.status, 12, "{}{}", refused.stdout, refused.stderr);

    let (_dir, fresh, daemon) = fresh_cluster(&fx, "SUPERUSER");
    // Without --globals: restored, every table owned by the restoring role.
    let plain = restore(&daemon, &id, &["--to", "plain_copy", "--yes"]);
    assert_eq!(plain.status, 0, "{}{}", plain.stdout, plain.stderr);
    assert_eq!(
        fresh.psql(
            "plain_copy",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'"
        ),
        ROLE
    );
    assert_eq!(role_count(&fresh, "app_owner"), "0", "no role created");

    // The dry run says what it would do and does nothing.
    let dry = restore(&daemon, &id, &["--to", DB, "--globals", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    for want in [
        "would create role app_owner",
        "would apply membership app_reader to app_login",
        "skipped role shared_role: exists on the target",
        "keeping owners and grants",
    ] {
        assert!(dry.stdout.contains(want), "{want:?} in {}", dry.stdout);
    }
    assert_eq!(
        role_count(&fresh, "app_owner"),
        "0",
        "a dry run creates nothing"
    );

    // The source database's name on another cluster is allowed.
    let out = restore(&daemon, &id, &["--to", DB, "--globals", "--yes"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    for want in [
        "created role app_owner",
        "created role app_login: LOGIN CONNECTION LIMIT 7",
        "applied setting app_login: statement_timeout",
        "skipped role shared_role",
        &format!("skipped role {ROLE}"),
    ] {
        assert!(out.stdout.contains(want), "{want:?} in {}", out.stdout);
    }
    for query in [ROLES, MEMBERS, SETTINGS] {
        assert_eq!(
            fresh.psql("postgres", query),
            fx.pg.psql("postgres", query),
            "{query}"
        );
    }
    assert!(
        fresh
            .psql("postgres", SETTINGS)
            .contains("statement_timeout=17s")
    );
    assert_eq!(fresh.psql(DB, OWNERS), fx.pg.psql(DB, OWNERS));
    assert!(fresh.psql(DB, OWNERS).contains("public.ledger:app_owner"));
    assert_eq!(fresh.psql(DB, LEDGER_ACL), fx.pg.psql(DB, LEDGER_ACL));
    assert_eq!(
        fresh.psql(
            DB,
            "SELECT has_table_privilege('app_login', 'ledger', 'SELECT') \
             AND NOT has_table_privilege('app_login', 'ledger', 'INSERT')"
        ),
        "t",
        "the grant reaches app_login through app_reader"
    );
    assert_eq!(
        fresh.psql(
            "postgres",
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'shared_role'"
        ),
        "f",
        "an existing role is left as it was"
    );
}

#[test]
fn restore_globals_without_superuser_reports_and_undoes() {
    let (fx, _source_daemon, id) = source_with_roles();
    let (_dir, fresh, daemon) = fresh_cluster(&fx, "CREATEDB CREATEROLE");
    let dry = restore(&daemon, &id, &["--to", "copy", "--globals", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("NOT APPLIED role repl_role: REPLICATION needs a superuser"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("would create role app_owner"),
        "{}",
        dry.stdout
    );

    // Owners cannot be kept by a role that is not a member of app_owner: pg_restore stops,
    // the restore fails saying why, and the roles it created are gone again.
    let out = restore(&daemon, &id, &["--to", "copy", "--globals", "--yes"]);
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("must be member of role")
            && out
                .stderr
                .contains("superuser or a member of every owning role"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the target database was not touched"),
        "{}",
        out.stderr
    );
    for role in ["app_owner", "app_reader", "app_login"] {
        assert_eq!(role_count(&fresh, role), "0", "{role} dropped again");
    }
    let dbs = databases_of(&fresh);
    assert!(!dbs.iter().any(|d| d.starts_with("copy")), "{dbs:?}");
}

fn databases_of(pg: &PgServer) -> Vec<String> {
    pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
    )
    .split(',')
    .map(str::to_owned)
    .collect()
}

#[test]
fn restore_globals_from_an_encrypted_backup_keeps_passwords_and_out_of_logs() {
    require_age();
    let fx = Fixture::new();
    fx.pg.psql(
        "postgres",
        &format!("ALTER ROLE {ROLE} SUPERUSER; CREATE ROLE app_login LOGIN PASSWORD 'login-pw-9x'"),
    );
    let hash = fx.pg.psql(
        "postgres",
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_login'",
    );
    assert!(hash.starts_with("SCRAM-SHA-256$"), "{hash}");
    // Encrypted: globals.sql.age, decrypted in memory with the job's verify-identity-file.
    let (key, public) = keygen(fx.dir.path());
    let job = format!(
        "[jobs.withpw]\nkind = \"backup\"\nverify = \"checksum\"\nglobals-passwords = true\n\
         encrypt-to = [\"{public}\"]\nverify-identity-file = \"{}\"\n",
        key.display()
    );
    let source = fx.daemon(&job).spawn();
    let id = backup_ok(&source, "withpw");
    assert!(fx.backup_dir().join(&id).join("globals.sql.age").is_file());

    let dir = harness::tempdir();
    let fresh = PgServer::start_with_password_auth();
    fresh.create_role_with_password(ROLE, PASSWORD);
    fresh.psql("postgres", &format!("ALTER ROLE {ROLE} SUPERUSER"));
    let daemon = Daemon::builder(dir.path())
        .postgres(&fresh, ROLE, PASSWORD, DB)
        .backup_dir(&fx.backup_dir())
        .toml(&job)
        .set("daemon", "log-level", "\"debug\"")
        .spawn();
    let out = restore(&daemon, &id, &["--to", "copy", "--globals", "--yes"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("created role app_login: LOGIN, password kept"),
        "{}",
        out.stdout
    );
    // The password works on the fresh cluster.
    let passfile = dir.path().join("app_login.pgpass");
    fresh.write_passfile(&passfile, "app_login", "login-pw-9x");
    let mut login = fresh.psql_command("app_login", "postgres");
    login.env("PGPASSFILE", &passfile);
    let who = fresh.run_psql(login, "SELECT current_user");
    assert_eq!(
        (who.status, who.stdout.trim()),
        (0, "app_login"),
        "{}",
        who.stderr
    );
    // Its hash is in no reply and no line of the daemon's debug log (tokio-postgres's debug
    // lines quote the SQL they send: without the cap in logging.rs the hash is there).
    let dry = restore(&daemon, &id, &["--to", "copy2", "--globals", "--dry-run"]);
    for (what, text) in [
        ("reply", format!("{}{}", out.stdout, out.stderr)),
        ("dry run", format!("{}{}", dry.stdout, dry.stderr)),
        ("log", daemon.log()),
    ] {
        assert!(!text.contains(&hash), "the password hash in the {what}");
        assert!(
            !text.contains("SCRAM-SHA-256$"),
            "a password hash in the {what}"
        );
    }
}
