//! Bad rotate jobs: each error names its key.

use crate::config::Config;

fn load(job: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atpred.toml");
    let text = format!(
        "[daemon]\nstate-dir = \"/tmp/atpred-test/state\"\n\n[jobs.logs]\nkind = \"rotate\"\n{job}\n"
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Config::load_with_env(&path, &[]).map_err(|e| e.to_string())
}

const OK: &str =
    "paths = [\"/var/log/atpre/*.log\"]\nmax-size = \"100MiB\"\nmethod = \"copytruncate\"";

#[test]
fn a_minimal_job_loads_with_defaults() {
    let c = load(OK).unwrap();
    let crate::config::JobSpec::Rotate(s) = &c.jobs.values().next().unwrap().spec else {
        panic!("not a rotate job");
    };
    assert_eq!(s.max_size, Some(100 << 20));
    assert_eq!(s.keep, 7);
    assert!(s.missing_ok && !s.if_empty && !s.delay_compress && !s.allow_shared_dir);
    assert_eq!(s.compress, crate::config::Compression::Zstd { level: 3 });
    assert_eq!(s.naming, crate::config::Naming::Number);
    let c = load(
        "paths = [\"/var/log/a.log\"]\nmax-age = \"1d\"\nmin-size = \"1KiB\"\nreopen = { pid-file = \"/run/a.pid\", signal = \"USR1\" }\nnaming = \"date\"\ncompress = \"gzip\"\ncompress-level = 9\ndelay-compress = true\nkeep = 30\nmax-keep-age = \"90d\"\nallow-shared-dir = true",
    )
    .unwrap();
    let crate::config::JobSpec::Rotate(s) = &c.jobs.values().next().unwrap().spec else {
        panic!("not a rotate job");
    };
    assert_eq!(
        s.method,
        crate::config::Method::Create(crate::config::Reopen::Signal {
            pid_file: "/run/a.pid".into(),
            signal: nix::sys::signal::Signal::SIGUSR1
        })
    );
}

#[test]
fn bad_rotate_jobs_name_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "max-size = \"1MiB\"\nmethod = \"copytruncate\"",
            "jobs.logs.paths",
            "needs at least one",
        ),
        (
            "paths = [\"var/log/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"",
            "jobs.logs.paths",
            "not an absolute path",
        ),
        (
            "paths = [\"/var/log/[a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"",
            "jobs.logs.paths",
            "not a valid glob",
        ),
        (
            "paths = [\"/a.log\"]\nmethod = \"copytruncate\"",
            "jobs.logs",
            "needs a trigger",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"lots\"\nmethod = \"copytruncate\"",
            "jobs.logs.max-size",
            "not a size",
        ),
        (
            "paths = [\"/a.log\"]\nmax-age = \"soon\"\nmethod = \"copytruncate\"",
            "jobs.logs.max-age",
            "invalid duration",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmin-size = \"1KiB\"\nmethod = \"copytruncate\"",
            "jobs.logs.min-size",
            "set max-age too",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"",
            "jobs.logs.method",
            "needs reopen",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"move\"",
            "jobs.logs.method",
            "not \"create\"",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\nreopen-command = [\"true\"]",
            "jobs.logs.method",
            "never asks the writer",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nreopen = { pid-file = \"run/a.pid\" }",
            "jobs.logs.reopen.pid-file",
            "absolute path",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nreopen = { pid-file = \"/run/a.pid\", signal = \"NOPE\" }",
            "jobs.logs.reopen.signal",
            "not a signal name",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nreopen = { pid-file = \"/run/a.pid\", signal = \"KILL\" }",
            "jobs.logs.reopen.signal",
            "not a signal name",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nreopen = { pid-file = \"/run/a.pid\" }\nreopen-command = [\"true\"]",
            "jobs.logs.reopen-command",
            "not both",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nreopen-command = []",
            "jobs.logs.reopen-command",
            "needs a program",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\nnaming = \"hex\"",
            "jobs.logs.naming",
            "not \"number\"",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\ncompress = \"xz\"",
            "jobs.logs.compress",
            "not \"zstd\"",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\ncompress-level = 20",
            "jobs.logs.compress-level",
            "outside 1..=19",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\ncompress = \"none\"\ncompress-level = 3",
            "jobs.logs.compress-level",
            "no effect",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\ncompress = \"none\"\ndelay-compress = true",
            "jobs.logs.delay-compress",
            "no effect",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\nkeep = 0",
            "jobs.logs.keep",
            "between 1 and 10000",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\nmax-keep-age = \"0s\"",
            "jobs.logs.max-keep-age",
            "greater than zero",
        ),
        (
            "paths = [\"/a.log\"]\nmax-size = \"1MiB\"\nmethod = \"copytruncate\"\ndbname = \"x\"",
            "jobs.logs.dbname",
            "not a setting of kind \"rotate\"",
        ),
    ];
    for (job, key, needle) in cases {
        let err = load(job).expect_err(job);
        assert!(err.contains(key), "{job}: {err} does not name {key}");
        assert!(err.contains(needle), "{job}: {err} does not say {needle}");
    }
}
