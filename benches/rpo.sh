# Group "rpo" of benches/run (sourced by it, after the database is loaded): the recovery point
# after the primary dies by kill -9 under load, with `synchronous = true` (the primary waits
# for the receiver: `synchronous_standby_names = 'atpred_wal'`) and with `synchronous = false`.
#
# Each round: the wal-archive job streams; `pgbench -c 2 -T $rpo_secs` loads the server while a
# counter client (psql, autocommit, one `INSERT INTO rpo_acks … RETURNING n, epoch` per
# commit) prints every commit the server acknowledged; mid-load every process of the primary
# gets SIGKILL at once; the daemon archives the in-flight segment when its receiver loses the
# server; `atprectl restore --pitr --latest --start` brings up a copy, and the acknowledged
# counter rows it lacks are counted. Lost commits are acknowledged ones missing from the
# restore; their span is the time (server clock at the insert) from the first lost to the last
# acknowledged. The primary is then started again (crash recovery) and a new base backup taken.
# Writes benches/RPO.md. Uses from benches/run: work, pg_bin, as_pg, su_psql, runs,
# write_results, args, phase, commit.

rpo_bench() {
    local a="$work/atpred-rpo" r="$work/rpo-restore" secs=${rpo_secs:-10}
    mkdir -p "$a" "$r"
    chmod 0711 "$r"
    printf 'local replication all scram-sha-256\n' >>"$work/pg/data/pg_hba.conf"
    "${su_psql[@]}" -c "ALTER ROLE atp_user REPLICATION" -c "SELECT pg_reload_conf()" >/dev/null
    "$pg_bin/psql" -q -h "$work/pg" -U atp_user -v ON_ERROR_STOP=1 atp_re \
        -c "CREATE TABLE IF NOT EXISTS rpo_acks (n bigint PRIMARY KEY, at float8 NOT NULL)"
    : >"$a/rows"
    ctl() { "$work/bin/atprectl" --socket "$a/atpred.sock" "$@"; }
    local mode round
    for mode in true false; do
        for round in $(seq 1 "$runs"); do
            rpo_round "$mode" "$round" || return 1
        done
    done
    local table
    table=$(python3 - "$a/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| synchronous | round | acknowledged commits | lost | span of the lost (s) | counter commits/s |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
by = {}
for mode, rnd, acked, lost, span, rate in rows:
    by.setdefault(mode, []).append((int(lost), float(span)))
    print(f"| {mode} | {rnd} | {acked} | {lost} | {float(span):.3f} | {float(rate):.0f} |")
print()
for mode, v in by.items():
    print(f"- synchronous = {mode}: lost {max(l for l, _ in v)} acknowledged commit(s) at most, "
          f"span at most {max(s for _, s in v):.3f} s over {len(v)} round(s).")
PY
)
    local report="# Recovery point after kill -9 of the primary

Written by \`bash benches/run${args[*]:+ ${args[*]}}\` on $(date -u +%Y-%m-%d) (commit $commit); load average at the end
$(cut -d' ' -f1-3 /proc/loadavg). Machine: $(nproc) CPUs, PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), fsync on.
Each round: \`pgbench -n -c 2 -j 2\` plus a counter client (psql, one autocommit \`INSERT … RETURNING\`
per commit; a printed row is an acknowledged commit) for about $secs s, then SIGKILL to every process of
the primary at once, then \`atprectl restore --pitr --latest --start\` and a count of the acknowledged
counter rows the restored server lacks. The span is from the first lost commit to the last
acknowledged one (server clock at the insert). Aim: RPO <= 1 s with synchronous = true.

$table"
    printf '%s\n' "$report"
    if [ "$write_results" -eq 1 ]; then printf '%s\n' "$report" >benches/RPO.md; fi
}

# One round in mode $1 (synchronous true/false), number $2.
rpo_round() {
    local mode=$1 round=$2 d="$a/$1-$2" dir="$r/restored" port=5434
    mkdir -p "$d"
    local names=""
    [ "$mode" = true ] && names="atpred_wal"
    "${su_psql[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = '$names'" \
        -c "SELECT pg_reload_conf()" >/dev/null
    local daemon
    start_bench_daemon "$d" "$a/atpred.sock" <<TOML
[jobs.wal]
kind = "wal-archive"
archive-dir = "$d/wal"
synchronous = $mode

[jobs.base]
kind = "backup"
method = "physical"
verify = "checksum"
pitr-drill = false
TOML
    phase "rpo synchronous=$mode round $round: base backup"
    ctl run base --wait >/dev/null || { cat "$d/atpred.log" >&2; return 1; }
    if [ "$mode" = true ]; then
        for _ in $(seq 100); do
            [ "$("${su_psql[@]}" -Atc "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'atpred_wal' AND sync_state = 'sync'")" = 1 ] && break
            sleep 0.1
        done
    fi
    local start
    start=$("$pg_bin/psql" -h "$work/pg" -U atp_user -Atc "SELECT coalesce(max(n), 0) FROM rpo_acks" atp_re)
    seq $((start + 1)) $((start + 10000000)) |
        awk '{ printf "INSERT INTO rpo_acks VALUES (%d, extract(epoch FROM clock_timestamp())) RETURNING n, at;\n", $1 }' |
        "$pg_bin/psql" -X -A -t -F ' ' -h "$work/pg" -U atp_user atp_re >"$d/acks" 2>/dev/null &
    local counter=$!
    "$pg_bin/pgbench" -n -c 2 -j 2 -T $((secs + 5)) -h "$work/pg" -U atp_user atp_re >/dev/null 2>&1 &
    local load=$!
    sleep "$secs"
    phase "rpo synchronous=$mode round $round: kill -9 of the primary"
    local pm
    pm=$(head -n 1 "$work/pg/data/postmaster.pid")
    kill -9 $(pgrep -P "$pm") "$pm"
    wait "$counter" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
    # The in-flight copy: an index line with "holds", archived once the receiver lost the
    # server (this round's archive is new: any such line is from this kill).
    for _ in $(seq 300); do
        grep -q '"holds"' "$d/wal/index.jsonl" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '"holds"' "$d/wal/index.jsonl" || { echo "benches/run: no in-flight copy archived" >&2; cat "$d/atpred.log" >&2; return 1; }
    rm -rf "$dir"
    mkdir -m 0700 "$dir"
    [ ${#as_pg[@]} -gt 0 ] && chown postgres "$dir"
    phase "rpo synchronous=$mode round $round: restore --pitr --latest"
    ctl restore --pitr --latest --to-dir "$dir" --owner postgres --start --port "$port" \
        >"$d/restore.out" 2>&1 || { cat "$d/restore.out" "$d/atpred.log" >&2; return 1; }
    # The restored server listens where its postmaster.pid says (line 5: the socket folder).
    local sock
    sock=$(sed -n 5p "$dir/postmaster.pid")
    "$pg_bin/psql" -X -A -t -h "$sock" -p "$port" -U postgres -v ON_ERROR_STOP=1 \
        -c "SELECT n FROM rpo_acks WHERE n > $start" atp_re >"$d/restored"
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    python3 - "$d/acks" "$d/restored" "$mode" "$round" "$secs" >>"$a/rows" <<'PY'
import sys
acks = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 2]
have = {int(l) for l in open(sys.argv[2]) if l.strip()}
acked = [(int(n), float(t)) for n, t in acks]
lost = [(n, t) for n, t in acked if n not in have]
span = (acked[-1][1] - lost[0][1]) if lost else 0.0
rate = len(acked) / float(sys.argv[5])
print(sys.argv[3], sys.argv[4], len(acked), len(lost), f"{span:.3f}", f"{rate:.0f}")
PY
    phase "rpo synchronous=$mode round $round: $(tail -n 1 "$a/rows")"
    kill -TERM "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    # The primary again, after crash recovery; synchronous_standby_names cleared first so the
    # next round's base backup is not waiting for a receiver that is not there yet.
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -o \
        "-c listen_addresses='' -c unix_socket_directories='$work/pg' -c fsync=on" start >/dev/null
    "${su_psql[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = ''" -c "SELECT pg_reload_conf()" >/dev/null
}
