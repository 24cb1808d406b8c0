//! `atprectl run --wait` follows a backup through its phases, and every run's record carries
//! its size, duration and throughput.

use crate::backup_support::{Fixture, ctl, ctl_json, manifest};

#[test]
fn backup_run_wait_shows_progress_and_the_record_carries_bytes_and_throughput() {
    let fx = Fixture::new();
    fx.create_bulk_table(150_000);
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\ncompress = \"none\"\nverify = \"full\"")
        .spawn();
    let out = ctl(&daemon, &["run", "nightly", "--wait"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let position = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{}", out.stdout))
    };
    let (dump, verify, publish) = (position("dump:"), position("verify:"), position("publish"));
    assert!(
        dump < verify && verify < publish,
        "phases in order:\n{}",
        out.stdout
    );
    assert!(lines[dump].contains("as of snapshot"), "{}", lines[dump]);
    let last = lines.last().expect("a last line");
    assert!(last.contains("succeeded"), "{last}");

    let history = ctl_json(&daemon, &["history"]);
    let run = &history["runs"][0];
    assert_eq!(run["job"], "nightly");
    assert_eq!(run["outcome"], "succeeded");
    let d = &run["details"];
    let id = d["id"].as_str().expect("id");
    let m = manifest(&daemon, id);
    let bytes = d["bytes"].as_u64().expect("bytes");
    assert_eq!(bytes, m["bytes"].as_u64().expect("manifest bytes"), "{d}");
    assert!(bytes > 10 << 20, "a 150,000-row dump: {bytes}");
    let duration = d["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        duration > 0 && run["duration_ms"].as_u64() >= Some(duration),
        "{run}"
    );
    let throughput = d["throughput_bytes_per_s"].as_u64().expect("throughput");
    // Bytes over the whole run so far (dump and verify): at most bytes / dump time.
    assert!(throughput > 0, "{d}");
    assert!(
        throughput <= bytes * 1000 / duration,
        "{throughput} B/s cannot beat {bytes} B in {duration} ms"
    );

    // A dump that streams for more than a second reports its rate while it runs.
    if duration >= 2000 {
        let rate = lines
            .iter()
            .filter(|l| l.starts_with("dump:") && l.contains("MiB at") && l.contains("/s"))
            .count();
        assert!(
            rate >= 1,
            "the dump took {duration} ms and showed no rate:\n{}",
            out.stdout
        );
    }
    assert_eq!(d["verify"]["outcome"], "passed", "{d}");
}
