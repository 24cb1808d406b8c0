# Group "physical" of benches/run (sourced by it, after the database is loaded): a full base
# backup of the bench cluster, time and size, side by side on the same cluster:
#   - atpred: `atprectl run base --wait` of method = "physical", zstd level 3, verify =
#     "checksum" (pg_basebackup -Ft -X none -D - streamed through zstd -T2 and SHA-256, fsync,
#     re-read, publish); verify = "full" (also unpacked and checked by pg_verifybackup) is a row;
#   - pgBackRest 2.45: `pgbackrest backup --type=full`, compress-type=zst, compress-level=3,
#     process-max=2 (both tools use both cores), start-fast, archive-check=n (no WAL archive);
#   - bare `pg_basebackup -Ft -X none -c fast -Z client-zstd:3 -D DIR`, then sync.
# Each is timed wall-clock, CHECKPOINT before each, medians of $runs rounds, the order rotated
# every round. Installs pgbackrest with apt-get when missing (here only, never in CI). Writes
# benches/PHYSICAL.md.
# Uses from benches/run: work, pg_bin, as_pg, su_psql, runs, write_results, args, phase, commit.

# pgBackRest's repository, configuration and stanza "bench" under $work/physical (shared with
# benches/pitr.sh); defines pgbr (pgbackrest as the server's user with that configuration) and
# gives atp_user REPLICATION with a pg_hba line for "replication" (atpred's base backups stream).
pgbackrest_setup() {
    if ! command -v pgbackrest >/dev/null; then
        [ "$(id -u)" -eq 0 ] || { echo "benches/run: pgbackrest missing: apt-get install pgbackrest" >&2; return 1; }
        phase "installing pgbackrest (apt-get; the bench only)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null
    fi
    # pgBackRest's folders belong to the server's user; atpred's to root (it refuses a folder
    # another user can write).
    local p="$work/physical"
    mkdir -p "$p/repo" "$p/log" "$p/lock" "$p/bare"
    [ ${#as_pg[@]} -gt 0 ] && chown -R postgres "$p/repo" "$p/log" "$p/lock"
    # The role streams a base backup: REPLICATION and a pg_hba line for "replication".
    printf 'local replication all scram-sha-256\n' >>"$work/pg/data/pg_hba.conf"
    "${su_psql[@]}" -c "ALTER ROLE atp_user REPLICATION" -c "SELECT pg_reload_conf()" >/dev/null
    cat >"$p/pgbackrest.conf" <<CONF
[global]
repo1-path=$p/repo
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=n
repo1-retention-full=100
log-level-console=warn
log-level-file=off
lock-path=$p/lock
log-path=$p/log

[bench]
pg1-path=$work/pg/data
pg1-socket-path=$work/pg
pg1-port=5432
pg1-user=postgres
CONF
    chmod 644 "$p/pgbackrest.conf"
    pgbr() { "${as_pg[@]}" pgbackrest --config="$work/physical/pgbackrest.conf" --stanza=bench "$@"; }
    pgbr stanza-create >/dev/null
}

physical_bench() {
    pgbackrest_setup
    local p="$work/physical" a="$work/atpred-physical"
    mkdir -p "$a"
    local daemon
    start_bench_daemon "$a" "$a/atpred.sock" <<TOML
[jobs.base]
kind = "backup"
method = "physical"
verify = "checksum"

[jobs.base-full]
kind = "backup"
method = "physical"
verify = "full"
TOML
    ctl() { "$work/bin/atprectl" --socket "$a/atpred.sock" "$@"; }
    now() { date +%s.%N; }
    local cluster
    cluster=$("${su_psql[@]}" -Atc "SELECT sum(pg_database_size(oid)) FROM pg_database")
    : >"$p/rows"
    for round in $(seq 0 "$runs"); do
        local order=(atpred pgbackrest bare full)
        local shift=$((round % 4))
        order=("${order[@]:$shift}" "${order[@]:0:$shift}")
        for tool in "${order[@]}"; do
            "${su_psql[@]}" -c CHECKPOINT >/dev/null
            local t0 t1 size
            t0=$(now)
            case $tool in
                atpred | full)
                    local job=base
                    [ "$tool" = full ] && job=base-full
                    ctl --json run "$job" --wait >"$p/run.json" || { cat "$p/run.json" "$a/atpred.log" >&2; return 1; }
                    t1=$(now)
                    size=$(python3 -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["run"]["details"]["bytes"])' <"$p/run.json")
                    rm -rf "$a/backups"/2*
                    ;;
                pgbackrest)
                    pgbr backup --type=full
                    t1=$(now)
                    # The newest backup set alone (older ones stay: pgBackRest keeps an index).
                    size=$(du -sb "$(ls -d "$p/repo/backup/bench/"2*F | tail -n 1)" | cut -f1)
                    ;;
                bare)
                    rm -rf "$p/bare/out"
                    "$pg_bin/pg_basebackup" -h "$work/pg" -p 5432 -U atp_user -w -Ft -X none -c fast \
                        -Z client-zstd:3 -D "$p/bare/out" 2>/dev/null
                    sync -f "$p/bare/out/base.tar.zst"
                    t1=$(now)
                    size=$(du -sb "$p/bare/out" | cut -f1)
                    ;;
            esac
            [ "$round" -eq 0 ] && continue # warm-up, not counted
            local secs
            secs=$(awk "BEGIN { print $t1 - $t0 }")
            printf '%s %s %s\n' "$tool" "$secs" "$size" >>"$p/rows"
            phase "physical round $round: $tool $secs s, $size bytes"
        done
    done
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    local table
    table=$(python3 - "$p/rows" "$cluster" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cluster = int(sys.argv[2])
def med(tool, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == tool)
names = {"atpred": "atpred (zstd 3, verify = \"checksum\")",
         "full": "atpred (zstd 3, verify = \"full\": + unpack + pg_verifybackup)",
         "pgbackrest": "pgbackrest backup --type=full (zst 3, process-max=2)",
         "bare": "pg_basebackup -Ft -Z client-zstd:3"}
ref = med("pgbackrest", 1)
print("| tool | wall s (median) | size MiB | time vs pgBackRest |")
print("| --- | ---: | ---: | ---: |")
for t in ["atpred", "full", "pgbackrest", "bare"]:
    print(f"| {names[t]} | {med(t, 1):.2f} | {med(t, 2) / 2**20:.1f} | {med(t, 1) / ref:.2f}x |")
print(f"\nCluster size: {cluster / 2**20:.0f} MiB.")
PY
)
    local report="# Physical base backups

Written by \`bash benches/run${args[*]:+ ${args[*]}}\` on $(date -u +%Y-%m-%d) (commit $commit), medians of
$runs rounds after a warm-up, order rotated every round, CHECKPOINT before each; load average
at the end $(cut -d' ' -f1-3 /proc/loadavg). Machine: $(nproc) CPUs, PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'),
fsync on, pgBackRest $(pgbackrest version | awk '{print $2}'). Aim: atpred <= 1.0x pgBackRest's time.

$table"
    printf '%s\n' "$report"
    if [ "$write_results" -eq 1 ]; then printf '%s\n' "$report" >benches/PHYSICAL.md; fi
}
