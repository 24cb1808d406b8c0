# Group "pitr" of benches/run (sourced by it, after the database is loaded): a restore to a point
# in time, side by side on the same cluster and the same stretch of WAL:
#   - atpred: a `kind = "wal-archive"` job (pg_receivewal on a slot, each segment zstd) and a
#     `method = "physical"` base backup; timed: `atprectl restore --pitr --time T --to-dir DIR
#     --start --port P`, which unpacks the base, stages the segments up to T, starts the server
#     and returns once it has left recovery and accepts queries;
#   - pgBackRest 2.45: `archive_command = pgbackrest archive-push` (compress zst 3) and a full
#     backup; timed: `pgbackrest restore --type=time --target=T --target-action=promote`, then
#     `pg_ctl start` and a wait until `pg_is_in_recovery()` is false.
# The WAL: after both base backups, `pgbench -T $pitr_secs` writes, T is taken, `pgbench` writes
# as long again (replayed by neither), and the segment holding T is closed and archived by
# both. Medians of $runs rounds after a warm-up, the order alternated. Writes benches/PITR.md.
# Uses from benches/run: work, pg_bin, as_pg, su_psql, runs, write_results, args, phase, commit.

pitr_bench() {
    source benches/physical.sh
    pgbackrest_setup
    local p="$work/physical" a="$work/atpred-pitr" r="$work/pitr-restore"
    local secs=${pitr_secs:-20}
    mkdir -p "$a" "$r"
    chmod 0711 "$r"
    # The primary archives through pgBackRest: on its command line, not in postgresql.conf, so
    # neither tool's restored copy starts pushing WAL into the bench's repository.
    local opts="-c listen_addresses='' -c unix_socket_directories='$work/pg' -c fsync=on"
    opts+=" -c archive_mode=on -c archive_command='pgbackrest --config=$p/pgbackrest.conf --stanza=bench archive-push %p'"
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o "$opts" restart >/dev/null
    local daemon
    start_bench_daemon "$a" "$a/atpred.sock" <<TOML
[jobs.wal]
kind = "wal-archive"
archive-dir = "$a/wal"

[jobs.base]
kind = "backup"
method = "physical"
verify = "checksum"
pitr-drill = false
TOML
    ctl() { "$work/bin/atprectl" --socket "$a/atpred.sock" "$@"; }
    now() { date +%s.%N; }
    # Both base backups, then the WAL both replay.
    phase "pitr: base backups (atpred, pgBackRest)"
    ctl run base --wait >/dev/null || { cat "$a/atpred.log" >&2; return 1; }
    pgbr backup --type=full --archive-check >/dev/null
    phase "pitr: pgbench -T $secs, the target time, pgbench -T $secs"
    local from
    from=$("${su_psql[@]}" -Atc "SELECT pg_current_wal_lsn()")
    "$pg_bin/pgbench" -n -c 2 -j 2 -T "$secs" -h "$work/pg" -U atp_user atp_re >/dev/null
    # One instant, as each tool reads it: RFC 3339 for atprectl, "YYYY-MM-DD HH:MM:SS.US+00"
    # for pgBackRest.
    local target target_pg replayed
    target=$("${su_psql[@]}" -Atc "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    target_pg="${target/T/ }"
    target_pg="${target_pg%Z}+00"
    replayed=$("${su_psql[@]}" -Atc "SELECT pg_size_pretty(pg_current_wal_lsn() - '$from')")
    sleep 1
    "$pg_bin/pgbench" -n -c 2 -j 2 -T "$secs" -h "$work/pg" -U atp_user atp_re >/dev/null
    local last
    last=$("${su_psql[@]}" -Atc "SELECT pg_walfile_name(pg_switch_wal())")
    phase "pitr: waiting until both archives hold $last"
    for _ in $(seq 600); do
        if grep -q "\"name\":\"$last\"" "$a/wal/index.jsonl" 2>/dev/null &&
            [ "$("${su_psql[@]}" -Atc "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver")" = t ]; then
            break
        fi
        sleep 0.5
    done
    grep -q "\"name\":\"$last\"" "$a/wal/index.jsonl" || { echo "benches/run: atpred did not archive $last" >&2; return 1; }
    : >"$p/pitr-rows"
    local port=5433
    for round in $(seq 0 "$runs"); do
        local order=(atpred pgbackrest)
        [ $((round % 2)) -eq 1 ] && order=(pgbackrest atpred)
        for tool in "${order[@]}"; do
            local dir="$r/$tool" t0 t1
            rm -rf "$dir"
            mkdir -m 0700 "$dir"
            [ ${#as_pg[@]} -gt 0 ] && chown postgres "$dir"
            sync
            t0=$(now)
            case $tool in
                atpred)
                    ctl restore --pitr --time "$target" --to-dir "$dir" --owner postgres \
                        --start --port "$port" >"$r/out" 2>&1 || { cat "$r/out" "$a/atpred.log" >&2; return 1; }
                    t1=$(now)
                    ;;
                pgbackrest)
                    pgbr restore --type=time "--target=$target_pg" --target-action=promote \
                        --pg1-path="$dir" >/dev/null
                    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir" -l "$dir/start.log" -w -o \
                        "-c listen_addresses='' -c unix_socket_directories='$dir' -p $port" start >/dev/null
                    until [ "$("$pg_bin/psql" -h "$dir" -p "$port" -U postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
                        sleep 0.05
                    done
                    t1=$(now)
                    ;;
            esac
            "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
            [ "$round" -eq 0 ] && continue # warm-up, not counted
            local took
            took=$(awk "BEGIN { print $t1 - $t0 }")
            printf '%s %s %s\n' "$round" "$tool" "$took" >>"$p/pitr-rows"
            phase "pitr round $round: $tool $took s"
        done
    done
    rm -rf "$r"
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    local table
    table=$(python3 - "$p/pitr-rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for rnd, tool, secs in rows:
    by.setdefault(tool, {})[rnd] = float(secs)
a, b = by["atpred"], by["pgbackrest"]
ma, mb = statistics.median(a.values()), statistics.median(b.values())
print("| tool | wall s (median) | vs pgBackRest |")
print("| --- | ---: | ---: |")
print(f"| atpred: restore --pitr --start (base unpacked, segments staged, promoted) | {ma:.2f} | {ma / mb:.2f}x |")
print(f"| pgbackrest restore --type=time, pg_ctl start, promoted | {mb:.2f} | 1.00x |")
pairs = ", ".join(f"{a[r] / b[r]:.2f}" for r in sorted(a, key=int) if r in b)
print(f"\nPer-round ratios (atpred / pgBackRest): {pairs}.")
PY
)
    local report="# Restore to a point in time

Written by \`bash benches/run${args[*]:+ ${args[*]}}\` on $(date -u +%Y-%m-%d) (commit $commit), medians of
$runs rounds after a warm-up, the order alternated; load average at the end
$(cut -d' ' -f1-3 /proc/loadavg). Machine: $(nproc) CPUs, PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), fsync on,
pgBackRest $(pgbackrest version | awk '{print $2}'). Each restore replays the WAL of \`pgbench -T $secs\` ($replayed of WAL
between the base backups and T) after a full base backup of the same cluster; timed from the command to a
promoted server accepting queries. Aim: atpred <= 1.0x pgBackRest's time.

$table"
    printf '%s\n' "$report"
    if [ "$write_results" -eq 1 ]; then printf '%s\n' "$report" >benches/PITR.md; fi
}
