//! Case tables for configuration loading: each bad file must name its key and position.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

const BASE: &str = r#"
[daemon]
state-dir = "/tmp/atpred-test/state"
socket = "/tmp/atpred-test/atpred.sock"

[jobs.vacuum]
kind = "command"
schedule = "0 5 * * 0"
command = ["vacuumdb", "--all"]
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("atpred.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, text);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    Config::load_with_env(&path, &env)
}

#[test]
fn the_base_config_loads_with_defaults() {
    let c = load(BASE, &[]).unwrap();
    assert_eq!(c.daemon.stop_timeout, Duration::from_secs(30));
    assert_eq!(c.daemon.max_concurrent_jobs, 2);
    assert_eq!(c.daemon.timezone, chrono_tz::UTC);
    assert_eq!(c.postgres.dbname, "atp_re");
    let job = &c.jobs[&"vacuum".parse().unwrap()];
    assert_eq!(job.timeout, Duration::from_secs(3600));
    assert!(matches!(&job.spec, JobSpec::Command(c) if c.argv == ["vacuumdb", "--all"]));
}

#[test]
fn the_reference_config_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("etc/atpred.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = load(
        &text,
        &[("CREDENTIALS_DIRECTORY", "/run/credentials/atpred.service")],
    )
    .unwrap();
    assert_eq!(c.daemon.socket_group.as_deref(), Some("atpred"));
    assert!(c.jobs.contains_key(&"vacuum".parse().unwrap()));
    let logs = &c.jobs[&"api-logs".parse().unwrap()];
    assert!(matches!(&logs.spec, JobSpec::Rotate(r) if r.keep == 14));
    assert_eq!(
        c.offsite["s3"].credentials_file,
        PathBuf::from("/run/credentials/atpred.service/s3")
    );
    assert!(matches!(
        c.jobs[&"health".parse().unwrap()].spec,
        JobSpec::Health(_)
    ));
    assert!(matches!(
        &c.jobs[&"cache".parse().unwrap()].spec,
        JobSpec::Backup(b) if b.source == super::BackupSource::Redis
    ));
    let JobSpec::Backup(files) = &c.jobs[&"app-files".parse().unwrap()].spec else {
        panic!("app-files is a backup job");
    };
    let spec = files.files.as_ref().expect("files settings");
    assert_eq!(spec.paths[0], PathBuf::from("/opt/atpre/app/.env"));
    assert!(spec.one_file_system && !spec.ignore_unreadable);
    assert!(spec.excluded(std::path::Path::new("/etc/atpre/x/app.log")));
    assert!(matches!(
        &c.jobs[&"base".parse().unwrap()].spec,
        JobSpec::Backup(b) if b.method == super::BackupMethod::Physical
    ));
}

/// (what is wrong, file text appended to or replacing BASE, the key the error must name,
/// the line it must point at (0: no position expected))
const BAD: &[(&str, &str, &str, usize)] = &[
    ("unknown section", "[deamon]\nx = 1\n", "deamon", 0),
    (
        "typo in a daemon key",
        "[daemon]\nstop-timout = \"5s\"\n",
        "daemon",
        0,
    ),
    (
        "duration in parsecs",
        "[daemon]\nstop-timeout = \"30 parsecs\"\n",
        "daemon.stop-timeout",
        2,
    ),
    (
        "zero duration",
        "[daemon]\nstop-timeout = \"0s\"\n",
        "daemon.stop-timeout",
        2,
    ),
    (
        "unknown time zone",
        "[daemon]\ntimezone = \"Mars/Olympus\"\n",
        "daemon.timezone",
        2,
    ),
    (
        "no concurrency",
        "[daemon]\nmax-concurrent-jobs = 0\n",
        "daemon.max-concurrent-jobs",
        2,
    ),
    (
        "concurrency as text",
        "[daemon]\nmax-concurrent-jobs = \"two\"\n",
        "daemon.max-concurrent-jobs",
        2,
    ),
    (
        "relative state dir",
        "[daemon]\nstate-dir = \"state\"\n",
        "daemon.state-dir",
        2,
    ),
    (
        "unknown log target",
        "[daemon]\nlog = \"syslog\"\n",
        "daemon.log",
        2,
    ),
    (
        "port out of range",
        "[postgres]\nport = 70000\n",
        "postgres.port",
        2,
    ),
    (
        "a relative fetch dir",
        "[daemon]\nfetch-dirs = [\"restores\"]\n",
        "daemon.fetch-dirs",
        2,
    ),
    (
        "a fetch dir inside backup-dir",
        "[daemon]\nbackup-dir = \"/srv/b\"\nfetch-dirs = [\"/srv/b/restores\"]\n",
        "daemon.fetch-dirs",
        3,
    ),
    (
        "a fetch dir with ..",
        "[daemon]\nfetch-dirs = [\"/srv/restores/../..\"]\n",
        "daemon.fetch-dirs",
        2,
    ),
    (
        "redis over http",
        "[redis]\nurl = \"http://cache:6379\"\n",
        "redis.url",
        2,
    ),
    (
        "job without kind",
        "[jobs.a]\ncommand = [\"true\"]\n",
        "jobs.a.kind",
        1,
    ),
    (
        "unknown kind",
        "[jobs.a]\nkind = \"backupp\"\n",
        "jobs.a.kind",
        2,
    ),
    (
        "bad cron minute",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"61 * * * *\"\n",
        "jobs.a.schedule",
        4,
    ),
    (
        "cron with a year",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"0 0 0 1 1 * 2030\"\n",
        "jobs.a.schedule",
        4,
    ),
    (
        "interval of zero",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"every 0s\"\n",
        "jobs.a.schedule",
        4,
    ),
    (
        "empty command",
        "[jobs.a]\nkind = \"command\"\ncommand = []\n",
        "jobs.a.command",
        3,
    ),
    (
        "command as a string",
        "[jobs.a]\nkind = \"command\"\ncommand = \"vacuumdb --all\"\n",
        "jobs.a.command",
        3,
    ),
    (
        "typo in a job key",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\ntimout = \"1h\"\n",
        "jobs.a",
        0,
    ),
    (
        "catch-up without schedule",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\ncatch-up = true\n",
        "jobs.a.catch-up",
        4,
    ),
    (
        "too many retries",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nretries = 99\n",
        "jobs.a.retries",
        4,
    ),
    (
        "a job named restore (reserved for restore runs)",
        "[jobs.restore]\nkind = \"command\"\ncommand = [\"true\"]\n",
        "jobs.restore",
        1,
    ),
    (
        "upper-case job name",
        "[jobs.Nightly]\nkind = \"command\"\ncommand = [\"true\"]\n",
        "jobs.Nightly",
        1,
    ),
    (
        "relative working dir",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nworking-dir = \"tmp\"\n",
        "jobs.a.working-dir",
        4,
    ),
    (
        "bad timeout",
        "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\ntimeout = \"forever\"\n",
        "jobs.a.timeout",
        4,
    ),
    (
        "unknown health check",
        "[jobs.h]\nkind = \"health\"\nchecks = [\"postgres\", \"mysql\"]\n",
        "jobs.h.checks",
        3,
    ),
    (
        "check listed twice",
        "[jobs.h]\nkind = \"health\"\nchecks = [\"disk\", \"disk\"]\n",
        "jobs.h.checks",
        3,
    ),
    (
        "http url without scheme",
        "[jobs.h]\nkind = \"health\"\nhttp-url = \"localhost:8000/health\"\n",
        "jobs.h.http-url",
        3,
    ),
    (
        "status out of range",
        "[jobs.h]\nkind = \"health\"\nhttp-expect-status = 700\n",
        "jobs.h.http-expect-status",
        3,
    ),
    (
        "relative disk path",
        "[jobs.h]\nkind = \"health\"\ndisk-paths = [\"var/log\"]\n",
        "jobs.h.disk-paths",
        3,
    ),
    (
        "disk floor in parsecs",
        "[jobs.h]\nkind = \"health\"\ndisk-min-free = \"5 parsecs\"\n",
        "jobs.h.disk-min-free",
        3,
    ),
    (
        "disk floor over 100%",
        "[jobs.h]\nkind = \"health\"\ndisk-min-free = \"120%\"\n",
        "jobs.h.disk-min-free",
        3,
    ),
    (
        "inode floor in bytes",
        "[jobs.h]\nkind = \"health\"\ndisk-min-free-inodes = \"5GiB\"\n",
        "jobs.h.disk-min-free-inodes",
        3,
    ),
    (
        "bad backup max age",
        "[jobs.h]\nkind = \"health\"\nbackup-max-age = \"a while\"\n",
        "jobs.h.backup-max-age",
        3,
    ),
    (
        "no failing runs",
        "[jobs.h]\nkind = \"health\"\nfailing-runs = 0\n",
        "jobs.h.failing-runs",
        3,
    ),
    (
        "zero check timeout",
        "[jobs.h]\nkind = \"health\"\ncheck-timeout = \"0s\"\n",
        "jobs.h.check-timeout",
        3,
    ),
    (
        "empty on-change",
        "[jobs.h]\nkind = \"health\"\non-change = []\n",
        "jobs.h.on-change",
        3,
    ),
    (
        "webhook over ftp",
        "[jobs.h]\nkind = \"health\"\nwebhook = \"ftp://hooks/x\"\n",
        "jobs.h.webhook",
        3,
    ),
    (
        "ping-url over ftp",
        "[jobs.h]\nkind = \"health\"\nping-url = \"ftp://hc/x\"\n",
        "jobs.h.ping-url",
        3,
    ),
    (
        "ping-url with user-info",
        "[jobs.c]\nkind = \"command\"\ncommand = [\"true\"]\nping-url = \"https://u:p@hc/x\"\n",
        "jobs.c.ping-url",
        4,
    ),
    (
        "offsite-fail-after of 0",
        "[daemon]\noffsite-fail-after = 0\n",
        "daemon.offsite-fail-after",
        2,
    ),
    (
        "heartbeat-every under a second",
        "[daemon]\nheartbeat-every = \"500ms\"\n",
        "daemon.heartbeat-every",
        2,
    ),
    (
        "backup key in a health job",
        "[jobs.h]\nkind = \"health\"\nkeep-last = 3\n",
        "jobs.h.keep-last",
        3,
    ),
    (
        "two jobs run one check",
        "[jobs.h]\nkind = \"health\"\nchecks = [\"redis\"]\n[jobs.i]\nkind = \"health\"\nchecks = [\"redis\"]\n",
        "jobs.i.checks",
        6,
    ),
    (
        "metrics on all interfaces",
        "[metrics]\nlisten = \"0.0.0.0:9187\"\n",
        "metrics.listen",
        2,
    ),
    (
        "metrics listen without port",
        "[metrics]\nlisten = \"127.0.0.1\"\n",
        "metrics.listen",
        2,
    ),
    (
        "unknown coordination backend",
        "[coordination]\nbackend = \"etcd\"\n",
        "coordination.backend",
        2,
    ),
    (
        "coordination ttl in parsecs",
        "[coordination]\nbackend = \"redis\"\nttl = \"5 parsecs\"\n",
        "coordination.ttl",
        3,
    ),
    (
        "coordination ttl too short",
        "[coordination]\nbackend = \"redis\"\nttl = \"500ms\"\n",
        "coordination.ttl",
        3,
    ),
    (
        "host with a space",
        "[coordination]\nbackend = \"postgres\"\nhost = \"db a\"\n",
        "coordination.host",
        3,
    ),
    (
        "empty key prefix",
        "[coordination]\nkey-prefix = \"\"\n",
        "coordination.key-prefix",
        2,
    ),
    (
        "unknown coordination key",
        "[coordination]\nlease = \"30s\"\n",
        "coordination",
        0,
    ),
    (
        "coordinate on a rotate job",
        "[jobs.r]\nkind = \"rotate\"\npaths = [\"/var/log/atpre/*.log\"]\ncoordinate = false\n",
        "jobs.r.coordinate",
        4,
    ),
    (
        "coordinate on a health job",
        "[jobs.h]\nkind = \"health\"\ncoordinate = true\n",
        "jobs.h.coordinate",
        3,
    ),
    (
        "run-on a standby",
        "[jobs.b]\nkind = \"backup\"\nrun-on = \"standby\"\n",
        "jobs.b.run-on",
        3,
    ),
    (
        "run-on in a prune job",
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 3\nrun-on = \"replica\"\n",
        "jobs.p.run-on",
        4,
    ),
    (
        "an unknown backup source",
        "[jobs.b]\nkind = \"backup\"\nsource = \"mysql\"\n",
        "jobs.b.source",
        3,
    ),
    (
        "a pg_dump setting on a redis backup",
        "[jobs.b]\nkind = \"backup\"\nsource = \"redis\"\nformat = \"directory\"\n",
        "jobs.b.format",
        4,
    ),
    (
        "gzip on a redis backup",
        "[jobs.b]\nkind = \"backup\"\nsource = \"redis\"\ncompress = \"gzip\"\n",
        "jobs.b.compress",
        4,
    ),
    (
        "an unknown backup method",
        "[jobs.b]\nkind = \"backup\"\nmethod = \"snapshot\"\n",
        "jobs.b.method",
        3,
    ),
    (
        "a physical redis backup",
        "[jobs.b]\nkind = \"backup\"\nsource = \"redis\"\nmethod = \"physical\"\n",
        "jobs.b.method",
        4,
    ),
    (
        "a pg_dump setting on a physical backup",
        "[jobs.b]\nkind = \"backup\"\nmethod = \"physical\"\nparallel = 2\n",
        "jobs.b.parallel",
        4,
    ),
    (
        "a restore drill of a physical backup",
        "[jobs.b]\nkind = \"backup\"\nmethod = \"physical\"\nverify = \"restore\"\n",
        "jobs.b.verify",
        4,
    ),
    (
        "verify-every on a physical backup whose drill is off",
        "[jobs.b]\nkind = \"backup\"\nmethod = \"physical\"\npitr-drill = false\nverify-every = \"7d\"\n",
        "jobs.b.verify-every",
        5,
    ),
    (
        "gzip on a physical backup",
        "[jobs.b]\nkind = \"backup\"\nmethod = \"physical\"\ncompress = \"gzip\"\n",
        "jobs.b.compress",
        4,
    ),
    (
        "relative textfile",
        "[metrics]\ntextfile = \"atpred.prom\"\n",
        "metrics.textfile",
        2,
    ),
    (
        "a files setting on a postgres backup",
        "[jobs.b]\nkind = \"backup\"\npaths = [\"/etc/atpre\"]\n",
        "jobs.b.paths",
        0,
    ),
    (
        "a files backup without paths",
        "[jobs.b]\nkind = \"backup\"\nsource = \"files\"\n",
        "jobs.b.paths",
        0,
    ),
    (
        "a relative path",
        "[jobs.b]\nkind = \"backup\"\nsource = \"files\"\npaths = [\"etc/atpre\"]\n",
        "jobs.b.paths",
        0,
    ),
    (
        "paths inside each other",
        "[jobs.b]\nkind = \"backup\"\nsource = \"files\"\npaths = [\"/etc\", \"/etc/atpre\"]\n",
        "jobs.b.paths",
        0,
    ),
    (
        "a bad exclude glob",
        "[jobs.b]\nkind = \"backup\"\nsource = \"files\"\npaths = [\"/etc\"]\nexclude = [\"[\"]\n",
        "jobs.b.exclude",
        0,
    ),
    (
        "verify-every on files",
        "[jobs.b]\nkind = \"backup\"\nsource = \"files\"\npaths = [\"/etc\"]\nverify-every = \"7d\"\n",
        "jobs.b.verify-every",
        0,
    ),
    (
        "a wal-archive job with a schedule",
        "[jobs.wal]\nkind = \"wal-archive\"\nschedule = \"@daily\"\n",
        "jobs.wal.schedule",
        3,
    ),
    (
        "a slot name PostgreSQL refuses",
        "[jobs.wal]\nkind = \"wal-archive\"\nslot = \"My-Slot\"\n",
        "jobs.wal.slot",
        3,
    ),
    (
        "a wal archive inside backup-dir",
        "[daemon]\nbackup-dir = \"/tmp/b\"\n[jobs.wal]\nkind = \"wal-archive\"\narchive-dir = \"/tmp/b/wal\"\n",
        "jobs.wal.archive-dir",
        5,
    ),
    (
        "retention thresholds upside down",
        "[jobs.wal]\nkind = \"wal-archive\"\nslot-retained-warn = \"5GiB\"\nslot-retained-fail = \"1GiB\"\n",
        "jobs.wal.slot-retained-warn",
        3,
    ),
    (
        "a ping URL on a wal-archive job",
        "[jobs.wal]\nkind = \"wal-archive\"\nping-url = \"https://hc-ping.com/x\"\n",
        "jobs.wal.ping-url",
        3,
    ),
    (
        "a backup key in a wal-archive job",
        "[jobs.wal]\nkind = \"wal-archive\"\nverify = \"full\"\n",
        "jobs.wal.verify",
        3,
    ),
    (
        "base-backups naming no job",
        "[jobs.wal]\nkind = \"wal-archive\"\nbase-backups = [\"nope\"]\n",
        "jobs.wal.base-backups",
        3,
    ),
    (
        "base-backups naming a logical backup job",
        "[jobs.dump]\nkind = \"backup\"\n[jobs.wal]\nkind = \"wal-archive\"\nbase-backups = [\"dump\"]\n",
        "jobs.wal.base-backups",
        5,
    ),
    (
        "base-backups naming a prune job",
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 1\n[jobs.wal]\nkind = \"wal-archive\"\nbase-backups = [\"p\"]\n",
        "jobs.wal.base-backups",
        6,
    ),
];

#[test]
fn verify_every_on_a_physical_backup_schedules_its_pitr_drill() {
    let c = load(
        &format!(
            "{BASE}\n[jobs.base]\nkind = \"backup\"\nmethod = \"physical\"\nverify-every = \"7d\"\n"
        ),
        &[],
    )
    .unwrap();
    let job = &c.jobs[&"base".parse().unwrap()];
    let JobSpec::Backup(b) = &job.spec else {
        panic!("{job:?}")
    };
    assert_eq!(
        b.verify_every,
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert_eq!(b.pitr_drill.enabled, None, "on unless pitr-drill = false");
}

#[test]
fn wal_archive_jobs_have_defaults() {
    let c = load(
        &format!("{BASE}\n[jobs.wal-main]\nkind = \"wal-archive\"\n"),
        &[],
    )
    .unwrap();
    let job = &c.jobs[&"wal-main".parse().unwrap()];
    let JobSpec::WalArchive(w) = &job.spec else {
        panic!("{job:?}")
    };
    assert_eq!(w.slot, "atpred_wal_main");
    assert!(!w.synchronous && w.encrypt_to.is_empty());
    assert_eq!(
        w.archive_dir,
        PathBuf::from("/tmp/atpred-test/state/wal-archive/wal-main")
    );
    assert_eq!(
        w.spool_dir,
        PathBuf::from("/tmp/atpred-test/state/wal-spool/wal-main")
    );
    assert_eq!(w.replication.user, c.postgres.user);
    assert_eq!((w.retained_warn, w.retained_fail), (1 << 30, 4 << 30));
    assert!(job.schedule.is_none() && !job.coordinate);
    let described = crate::scheduler::describe_jobs(&c, chrono::Utc::now());
    assert!(
        described.contains("wal-main (wal-archive): continuous"),
        "{described}"
    );
}

#[test]
fn bad_configs_name_their_key_and_line() {
    for (what, text, key, line) in BAD {
        let err = load(text, &[]).expect_err(what);
        let shown = err.to_string();
        assert!(shown.contains(key), "{what}: {shown:?} does not name {key}");
        assert_eq!(
            err.key().map(|k| k.starts_with(key)),
            Some(true),
            "{what}: {shown}"
        );
        if *line > 0 {
            let ConfigError::Invalid(inv) = &err else {
                panic!("{what}: {err:?}")
            };
            assert_eq!(inv.position.map(|p| p.0), Some(*line), "{what}: {shown}");
            assert!(
                shown.contains(&format!("atpred.toml:{line}:")),
                "{what}: {shown}"
            );
        }
    }
}

#[test]
fn syntax_errors_point_at_the_line() {
    let err = load("[daemon]\nstop-timeout = \n", &[]).unwrap_err();
    assert!(err.to_string().contains("atpred.toml:2:"), "{err}");
}

#[test]
fn environment_overrides_are_typed_by_the_target_and_named_in_errors() {
    let env = [
        ("ATPRED__DAEMON__STOP_TIMEOUT", "10s"),
        ("ATPRED__DAEMON__MAX_CONCURRENT_JOBS", "5"),
        ("ATPRED__POSTGRES__USER", "0123"),
        ("ATPRED__JOBS__VACUUM__TIMEOUT", "2h"),
        ("UNRELATED", "x"),
    ];
    let c = load(BASE, &env).unwrap();
    assert_eq!(c.daemon.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.daemon.max_concurrent_jobs, 5);
    assert_eq!(
        c.postgres.user, "0123",
        "a numeric-looking string stays a string"
    );
    assert_eq!(
        c.jobs[&"vacuum".parse().unwrap()].timeout,
        Duration::from_secs(7200)
    );

    let err = load(BASE, &[("ATPRED__DAEMON__MAX_CONCURRENT_JOBS", "many")]).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("daemon.max-concurrent-jobs"), "{shown}");
    assert!(
        shown.contains("ATPRED__DAEMON__MAX_CONCURRENT_JOBS"),
        "{shown}"
    );

    let err = load(BASE, &[("ATPRED__DAEMON__TYPO", "1")]).unwrap_err();
    assert!(err.to_string().contains("typo"), "{err}");
}

#[test]
fn world_writable_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, BASE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = Config::load_with_env(&path, &[]).unwrap_err();
    assert!(matches!(err, ConfigError::WorldWritable { .. }), "{err}");
    assert!(err.to_string().contains("chmod o-w"), "{err}");
}

#[test]
fn a_restore_scratch_dir_others_may_write_to_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = format!(
        "[daemon]\nstate-dir = {:?}\nrestore-scratch-dir = {:?}\n",
        dir.path().join("state"),
        scratch
    );
    let path = write(&dir, &text);
    let err = Config::load_with_env(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains("daemon.restore-scratch-dir") && err.contains("writable by all users"),
        "{err}"
    );
    // Private (a drill's postgres only needs to pass through: o+x), it is accepted.
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o711)).unwrap();
    Config::load_with_env(&path, &[]).unwrap();
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let text = format!("{BASE}\n[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n");
    let c = load(&text, &[]).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(c.redis.url.expose(), "redis://:hunter2@127.0.0.1:6379/0");
    let err = load("[redis]\nurl = \"http://:hunter2@cache\"\n", &[]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn a_credential_names_a_file_in_the_credentials_directory() {
    let text = format!("{BASE}\n[postgres]\npassfile = \"credential:pgpass\"\n");
    let c = load(
        &text,
        &[("CREDENTIALS_DIRECTORY", "/run/credentials/atpred.service")],
    )
    .unwrap();
    assert_eq!(
        c.postgres.passfile.as_deref(),
        Some(Path::new("/run/credentials/atpred.service/pgpass"))
    );
}

#[test]
fn a_credential_outside_systemd_is_a_clear_error() {
    let text = format!("{BASE}\n[postgres]\npassfile = \"credential:pgpass\"\n");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("postgres.passfile"), "{err}");
    assert!(err.contains("LoadCredential=pgpass"), "{err}");
    let text = format!("{BASE}\n[redis]\npassword-file = \"credential:../etc/shadow\"\n");
    let err = load(&text, &[("CREDENTIALS_DIRECTORY", "/run/c")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis.password-file"), "{err}");
    assert!(err.contains("not a credential name"), "{err}");
}

#[test]
fn health_jobs_and_metrics_have_defaults() {
    let text = format!("{BASE}\n[jobs.health]\nkind = \"health\"\nschedule = \"every 1m\"\n");
    let c = load(&text, &[]).unwrap();
    let JobSpec::Health(h) = &c.jobs[&"health".parse().unwrap()].spec else {
        panic!("not a health job")
    };
    assert_eq!(h.checks, CheckKind::ALL.to_vec());
    assert_eq!(h.http_url.expose(), "http://127.0.0.1:8000/health");
    assert_eq!(
        h.disk_paths,
        [c.daemon.backup_dir.clone(), PathBuf::from("/var/log/atpre")]
    );
    assert_eq!(h.disk_min_free, Threshold::Percent(10.0));
    assert_eq!(h.check_timeout, Duration::from_secs(10));
    assert_eq!(c.metrics, MetricsConfig::default());
    let text = format!(
        "{BASE}\n[metrics]\nlisten = \"[::]:9187\"\nallow-remote = true\n[jobs.h]\nkind = \"health\"\ndisk-min-free = \"2GiB\"\ndisk-min-free-inodes = \"1000\"\nwebhook = \"https://hooks.example/T0/B0/s3cr3t-t0ken\"\nhttp-url = \"https://u:pw-s3cr3t@app.example/health\"\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9187));
    let JobSpec::Health(h) = &c.jobs[&"h".parse().unwrap()].spec else {
        panic!("not a health job")
    };
    assert_eq!(h.disk_min_free, Threshold::Absolute(2 * 1024 * 1024 * 1024));
    assert_eq!(h.disk_min_free_inodes, Threshold::Absolute(1000));
    let shown = format!("{h:?}");
    assert!(
        !shown.contains("s3cr3t"),
        "webhook token or URL password in Debug: {shown}"
    );
}

#[test]
fn coordination_defaults_and_opt_out() {
    let c = load(
        "[jobs.b]\nkind = \"backup\"\n[jobs.c]\nkind = \"command\"\ncommand = [\"true\"]\ncoordinate = false\n[jobs.h]\nkind = \"health\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.coordination.backend, crate::config::Backend::None);
    assert_eq!(c.coordination.ttl, std::time::Duration::from_secs(30));
    assert_eq!(c.coordination.key_prefix, "atpred");
    let job = |n: &str| &c.jobs[&n.parse().unwrap()];
    assert!(job("b").coordinate && !job("c").coordinate && !job("h").coordinate);
    assert!(
        !job("b").coordinated(&c.coordination),
        "backend none coordinates nothing"
    );
    assert!(matches!(&job("b").spec, JobSpec::Backup(b) if b.run_on == crate::config::RunOn::Any));
    let r = load("[coordination]\nbackend = \"redis\"\nttl = \"9s\"\n", &[]).unwrap();
    assert!(
        !r.coordination.host.is_empty(),
        "the host name defaults to this host's"
    );
    assert_eq!(
        r.coordination.renew_every(),
        std::time::Duration::from_secs(3)
    );
}

#[test]
fn ping_urls_load_and_never_print_their_key() {
    const KEY: &str = "5b7e0c9e-ping-key";
    let text = format!(
        "[daemon]\nheartbeat-url = \"https://hc-ping.com/{KEY}-d\"\n[jobs.c]\nkind = \"command\"\ncommand = [\"true\"]\nping-url = \"https://hc-ping.com/{KEY}\"\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.daemon.heartbeat_every, Duration::from_secs(60));
    assert_eq!(c.daemon.offsite_fail_after, 3);
    let job = &c.jobs[&"c".parse().unwrap()];
    let url = job.ping_url.as_ref().unwrap();
    assert_eq!(url.expose(), format!("https://hc-ping.com/{KEY}"));
    let shown = format!("{c:?}");
    assert!(!shown.contains(KEY), "ping key in Debug: {shown}");
    assert!(shown.contains("https://hc-ping.com"), "{shown}");
    for bad in [
        format!("https://user:{KEY}@hc-ping.com/x"),
        format!("ftp://hc-ping.com/{KEY}"),
        format!("https://hc-ping.com/{KEY}#x"),
    ] {
        let text =
            format!("[jobs.c]\nkind = \"command\"\ncommand = [\"true\"]\nping-url = \"{bad}\"\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("jobs.c.ping-url"), "{err}");
        assert!(!err.contains(KEY), "the error quotes the key: {err}");
    }
}
