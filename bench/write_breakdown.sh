#!/usr/bin/env bash
# Where the time of one POST /tasks goes in PostgreSQL (issue 18 item 1), and the write's
# ceiling on this machine: pgbench running the transaction of POST /tasks by hand, as the app
# role under RLS, prepared, over the Unix socket, 16 clients, 100 tenants picked at random.
#
# It runs its own PostgreSQL 15 cluster (initdb in $PGDIR, port $PGPORT, socket in $PGDIR),
# with pg_stat_statements preloaded (the benchmark's set-up only: tests and CI never load it)
# and the settings of the shared server that matter for a write (fsync on, synchronous_commit
# on, wal_sync_method, shared_buffers). The schema is the real one (`tenantry migrate`), the
# seed 100 tenants with a user, a project and 200 tasks each, through SQL as the superuser.
#
# Transactions measured (each statement exactly as the server sends it):
#   five_trips  the POST before issue 18: BEGIN + set_config + the project check (FOR SHARE)
#               under one Sync, then the task INSERT .. RETURNING, the audit INSERT, the outbox
#               INSERT and COMMIT, each answered before the next goes out (5 round trips).
#   one_trip    the POST after it (domain::tasks::create): BEGIN, set_config, one statement
#               (checks, task, audit row, outbox event) and COMMIT under one Sync.
#   one_trip without each secondary index of tasks/audit_logs/outbox in turn, without the
#               tenants foreign keys of audit_logs and outbox, and with commit_delay/
#               commit_siblings set (WAL flush sharing).
#   group4      group commit across tenants: four tenants' POSTs in one transaction on one
#               connection, each under its own savepoint and tenant context (figures per POST).
#   one_trip_paced  one_trip at RATE (1,000) a second (pgbench -R), every transaction's latency
#               logged: the p99 PostgreSQL alone gives the paced POST on this machine.
#   settle_*    what the outbox worker then does with each POST's event (src/jobs/worker.rs):
#               today's lock and UPDATE, batched and one event a transaction, and two leaner
#               forms (one UPDATE .. FROM the locked rows; a DELETE), per settled event.
# For each: transactions a second, PostgreSQL CPU per transaction (every postgres process of the
# cluster), WAL bytes, records and fsyncs per transaction (pg_stat_wal), and pg_stat_statements
# (track = all, so the foreign-key checks of the triggers show as their own statements). Then
# EXPLAIN (ANALYZE, BUFFERS) of every statement of both shapes. CPU and statement times depend
# on the machine's load (printed beside each run); WAL bytes and records do not.
#
#   bench/write_breakdown.sh                     # 10 s a run
#   DURATION=4 bench/write_breakdown.sh          # a quick look
#   TENANTRY_BIN=target/release/tenantry bench/write_breakdown.sh
#
# Writes bench/results/write_breakdown.md and .json. Run it under `flock /work/bench.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
PGPORT=${PGPORT:-5499}
PGDIR=${PGDIR:-/tmp/tenantry_write_breakdown}
source bench/write_env.sh

# The private cluster, the schema and the seed (shared with bench/write_callgrind.sh).
source bench/write_cluster.sh

SCRIPTS=$(mktemp -d)
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null 2>&1 || true; rm -rf "$SCRIPTS"' EXIT
write_scripts
args() { for f in "$SCRIPTS/$1"_*.sql; do printf -- '-f\n%s\n' "$f"; done; }
mapfile -t FIVE < <(args five)
mapfile -t ONE < <(args one)
mapfile -t GROUP4 < <(args group4)

# CPU ticks of the private cluster's processes alive now (the postmaster and its children).
pg_ticks() { # "pid:ticks ..."
  local pid master
  master=$(head -1 "$PGDIR/postmaster.pid")
  for pid in $master $(pgrep -P "$master"); do
    printf '%s:%s ' "$pid" "$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null)"
  done
}
APP="postgres://tenantry_app@$SOCK:$PGPORT/tenantry_write"
declare -A R
# WAL, statements and CPU are counted over the whole run, per transaction pgbench counted
# (backends report their WAL and statement figures when they exit).
measure() { # name pgbench-script-arguments...
  local name=$1; shift
  pgbench -n -M prepared -c "$CLIENTS" -j 2 -T 2 "$@" "$APP" >/dev/null 2>&1 || true
  psql -XAtq "$DB" -c "select pg_stat_statements_reset(), pg_stat_reset_shared('wal')" >/dev/null
  local lsn0 lsn1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  lsn0=$(psql -XAtq "$DB" -c "select pg_current_wal_lsn()")
  pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" "$@" "$APP" >"$SCRIPTS/out" 2>&1 &
  local bench=$!
  while kill -0 $bench 2>/dev/null; do pg_ticks; echo; sleep 0.2; done >"$SCRIPTS/cpu_$name"
  wait $bench || true
  lsn1=$(psql -XAtq "$DB" -c "select pg_current_wal_lsn()")
  local out n tps failed wal
  out=$(cat "$SCRIPTS/out")
  n=$(awk '/^number of transactions actually processed/ {print $NF; exit}' <<<"$out")
  n=${n%%/*}
  tps=$(awk '/^tps =/ {print $3; exit}' <<<"$out")
  failed=$(awk '/^number of failed transactions/ {print $5; exit}' <<<"$out")
  wal=$(psql -XAtq -F' ' "$DB" -c "select wal_records, wal_sync, wal_write, pg_wal_lsn_diff('$lsn1', '$lsn0') from pg_stat_wal")
  psql -XAtq "$DB" -c "select coalesce(json_agg(s), '[]') from (select left(regexp_replace(query, '\s+', ' ', 'g'), 90) as query, calls, round(mean_exec_time::numeric * 1000, 1) as mean_us, round(total_exec_time::numeric / greatest(${n:-0}, 1) * 1000, 1) as us_per_tx, shared_blks_hit + shared_blks_read as blocks, wal_records, wal_bytes from pg_stat_statements where dbid = (select oid from pg_database where datname = 'tenantry_write') and calls >= ${n:-0} / 2 order by total_exec_time desc limit 12) s" >"$SCRIPTS/stmts_$name.json"
  R[$name]=$(python3 - "$name" "${n:-0}" "${tps:-0}" "${failed:-0}" "$SCRIPTS/cpu_$name" "$(getconf CLK_TCK)" "$wal" "$load" "$SCRIPTS/stmts_$name.json" "${POSTS_PER_TX:-1}" <<'PY'
import json, sys
name, n, tps, failed, samples, hz, wal, load, stmts, posts = sys.argv[1:]
n = max(int(n), 1)
# Every process of the cluster, sampled every 0.2 s while pgbench ran: each one's CPU from its
# first sample to its last (a backend's ticks are only readable while it exists; at most the
# last 0.2 s of pgbench's backends is lost, and their connection start-up before the first).
first, last = {}, {}
for line in open(samples):
    for x in line.split():
        p, _, t = x.partition(":")
        if t:
            first.setdefault(p, int(t))
            last[p] = int(t)
ticks = sum(last[p] - first[p] for p in last)
records, syncs, writes, wal_bytes = wal.split()
print(json.dumps({"name": name, "tps": round(float(tps), 1), "transactions": n, "failed": failed,
  "postgres_cpu_us_per_tx": round(ticks / int(hz) / n * 1e6, 1),
  "wal_bytes_per_tx": round(float(wal_bytes) / n), "wal_records_per_tx": round(int(records) / n, 2),
  "wal_fsyncs_per_tx": round(int(syncs) / n, 3), "wal_writes_per_tx": round(int(writes) / n, 3),
  "posts_per_tx": int(posts), "load_1min": float(load), "statements": json.load(open(stmts))}))
PY
)
  echo "${R[$name]}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["name"], r["tps"], "tx/s", r["postgres_cpu_us_per_tx"], "µs PG CPU/tx", r["wal_bytes_per_tx"], "WAL B/tx", r["wal_fsyncs_per_tx"], "fsyncs/tx", "load", r["load_1min"])'
}

# The outbox worker's share of a POST (bench/write_cluster.sh, `settle_prelude`): a fresh
# backlog of one-trip POSTs drained by one psql session as the app role, one transaction per
# tenant batch of at most `limit` events. Per settled event: WAL bytes and records,
# PostgreSQL CPU and statement time.
drain() { # name variant limit
  local name=$1 variant=$2 limit=$3
  psql -XAtq "$DB" -c "truncate app.outbox" >/dev/null
  pgbench -n -M prepared -c "$CLIENTS" -j 2 -t "$BACKLOG_TX" "${ONE[@]}" "$APP" >/dev/null 2>&1 || true
  local backlog file="$SCRIPTS/drain_$name.sql"
  backlog=$(psql -XAtq "$DB" -c "select count(*) from app.outbox where processed_at is null")
  settle_prelude >"$file"
  while read -r tenant n; do
    [ -n "$tenant" ] || continue
    for _ in $(seq 1 $(( (n + limit - 1) / limit ))); do settle_tx "$variant" "$tenant" "$limit" >>"$file"; done
  done < <(psql -XAtq -F' ' "$DB" -c "select tenant_id, count(*) from app.outbox where processed_at is null group by 1")
  # Idle at both ends, so the CPU sampler sees the session's backend before and after its work.
  echo "select pg_sleep(0.3);" >>"$file"
  psql -XAtq "$DB" -c "select pg_stat_statements_reset(), pg_stat_reset_shared('wal')" >/dev/null
  local lsn0 lsn1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  lsn0=$(psql -XAtq "$DB" -c "select pg_current_wal_lsn()")
  psql -XAq -v ON_ERROR_STOP=1 -f "$file" "$APP" >/dev/null 2>"$SCRIPTS/drain_err" &
  local p=$!
  while kill -0 $p 2>/dev/null; do pg_ticks; echo; sleep 0.1; done >"$SCRIPTS/cpu_$name"
  wait $p || { echo "drain $name failed: $(head -3 "$SCRIPTS/drain_err")" >&2; return 0; }
  lsn1=$(psql -XAtq "$DB" -c "select pg_current_wal_lsn()")
  local left settled wal
  left=$(psql -XAtq "$DB" -c "select count(*) from app.outbox where processed_at is null")
  settled=$((backlog - left))
  wal=$(psql -XAtq -F' ' "$DB" -c "select wal_records, wal_sync, wal_write, pg_wal_lsn_diff('$lsn1', '$lsn0') from pg_stat_wal")
  psql -XAtq "$DB" -c "select coalesce(json_agg(s), '[]') from (select left(regexp_replace(query, '\s+', ' ', 'g'), 90) as query, calls, round(mean_exec_time::numeric * 1000, 1) as mean_us, round(total_exec_time::numeric / greatest($settled, 1) * 1000, 1) as us_per_event, shared_blks_hit + shared_blks_read as blocks, wal_records, wal_bytes from pg_stat_statements where dbid = (select oid from pg_database where datname = 'tenantry_write') and toplevel and query !~* 'pg_stat|pg_current_wal|count\\(\\*\\) from app.outbox|pg_sleep' order by total_exec_time desc limit 8) s" >"$SCRIPTS/stmts_$name.json"
  R[$name]=$(python3 - "$name" "$settled" "$limit" "$SCRIPTS/cpu_$name" "$(getconf CLK_TCK)" "$wal" "$load" "$SCRIPTS/stmts_$name.json" <<'PY'
import json, sys
name, n, limit, samples, hz, wal, load, stmts = sys.argv[1:]
n = max(int(n), 1)
first, last = {}, {}
for line in open(samples):
    for x in line.split():
        p, _, t = x.partition(":")
        if t:
            first.setdefault(p, int(t))
            last[p] = int(t)
ticks = sum(last[p] - first[p] for p in last)
records, syncs, writes, wal_bytes = wal.split()
stm = json.load(open(stmts))
print(json.dumps({"name": name, "events": n, "batch_limit": int(limit),
  "postgres_cpu_us_per_event": round(ticks / int(hz) / n * 1e6, 1),
  "statement_us_per_event": round(sum(s["us_per_event"] for s in stm), 1),
  "wal_bytes_per_event": round(float(wal_bytes) / n), "wal_records_per_event": round(int(records) / n, 2),
  "load_1min": float(load), "statements": stm}))
PY
)
  echo "${R[$name]}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["name"], r["events"], "events", r["postgres_cpu_us_per_event"], "µs PG CPU/event", r["statement_us_per_event"], "µs statements/event", r["wal_bytes_per_event"], "WAL B/event", r["wal_records_per_event"], "WAL records/event", "load", r["load_1min"])'
}

# The transaction's latency at the paced runs' rate (bench/http_load.sh, RATE): pgbench -R
# starts transactions at Poisson-distributed times averaging RATE a second and measures each
# from its scheduled start (so a wait for a free client counts), every transaction logged (-l).
# What PostgreSQL alone gives the paced POST's p99 to work with on this machine.
paced() { # name pgbench-script-arguments...
  local name=$1; shift
  local logdir load
  logdir=$(mktemp -d "$SCRIPTS/paced.XXXX")
  load=$(cut -d' ' -f1 /proc/loadavg)
  (cd "$logdir" && pgbench -n -M prepared -c "$CLIENTS" -j 2 -R "$PACED_RATE" -T "$DURATION" -l \
    --log-prefix=tx "$@" "$APP" >/dev/null 2>&1) || true
  R[$name]=$(python3 - "$name" "$logdir" "$PACED_RATE" "$DURATION" "$load" <<'PY'
import glob, json, sys
name, logdir, rate, duration, load = sys.argv[1:]
# A log line: client, transaction number, latency in µs (or "failed"/"skipped"), script, epoch
# s, µs, schedule lag in µs.
lat, failed = [], 0
for f in glob.glob(logdir + "/tx*"):
    for line in open(f):
        t = line.split()[2]
        if t.isdigit():
            lat.append(int(t))
        else:
            failed += 1
lat.sort()
def pct(p):
    return round(lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000, 2) if lat else None
print(json.dumps({"name": name, "paced_rate": int(rate), "transactions": len(lat), "failed": failed,
  "tx_per_s": round(len(lat) / float(duration), 1), "p50_ms": pct(50), "p99_ms": pct(99),
  "max_ms": round(lat[-1] / 1000, 2) if lat else None, "load_1min": float(load)}))
PY
)
  echo "${R[$name]}"
}
PACED_RATE=${RATE:-1000}

measure five_trips "${FIVE[@]}"
measure one_trip "${ONE[@]}"
measure five_trips_again "${FIVE[@]}"
measure one_trip_again "${ONE[@]}"
paced one_trip_paced "${ONE[@]}"
paced one_trip_paced_again "${ONE[@]}"

# Each secondary index's share: the one-trip transaction without it (dropped in a transaction
# that is rolled back afterwards would hold its lock; dropped and recreated instead).
INDEXES=$(psql -XAtq "$DB" -c "select indexrelid::regclass from pg_index i join pg_class c on c.oid = i.indrelid
  where c.relname in ('tasks', 'audit_logs', 'outbox') and c.relnamespace = 'app'::regnamespace
  and not i.indisprimary order by 1")
for idx in $INDEXES; do
  def=$(psql -XAtq "$DB" -c "select pg_get_indexdef('$idx'::regclass)")
  psql -XAtq "$DB" -c "drop index $idx" >/dev/null
  measure "without_${idx#app.}" "${ONE[@]}"
  psql -XAtq "$DB" -c "$def" >/dev/null
done


# The tenants foreign keys of audit_logs and outbox: each inserted row's trigger locks the
# tenant's row (FOR KEY SHARE). The one-trip transaction without them.
FKS=$(psql -XAtq -F'|' "$DB" -c "select conrelid::regclass, conname, pg_get_constraintdef(oid) from pg_constraint
  where conrelid in ('app.audit_logs'::regclass, 'app.outbox'::regclass) and contype = 'f' and confrelid = 'app.tenants'::regclass")
while IFS='|' read -r tbl con _; do
  [ -n "$con" ] && psql -XAtq "$DB" -c "alter table $tbl drop constraint $con" >/dev/null
done <<<"$FKS"
[ -n "$FKS" ] && measure one_trip_without_tenant_fks "${ONE[@]}"
while IFS='|' read -r tbl con def; do
  [ -n "$con" ] && psql -XAtq "$DB" -c "alter table $tbl add constraint $con $def" >/dev/null
done <<<"$FKS"

# What the outbox worker then does with each POST's event.
BACKLOG_TX=${BACKLOG_TX:-1000}
drain settle_update_batched update 200
drain settle_update_one_by_one update 1
drain settle_claim_batched claim 200
psql -XAtq "$DB" -c "grant delete on app.outbox to tenantry_app" >/dev/null
drain settle_delete_batched delete 200
drain settle_delete_one_by_one delete 1
psql -XAtq "$DB" -c "revoke delete on app.outbox from tenantry_app" >/dev/null

POSTS_PER_TX=4 measure group4 "${GROUP4[@]}"

# WAL flush sharing: a committing backend waits commit_delay µs for others when at least
# commit_siblings transactions are open, so one fsync covers several commits.
psql -XAtq "$DB" -c "alter system set commit_delay = 200" -c "alter system set commit_siblings = 4" \
  -c "select pg_reload_conf()" >/dev/null
measure one_trip_commit_delay_200 "${ONE[@]}"
psql -XAtq "$DB" -c "alter system set commit_delay = 1000" -c "select pg_reload_conf()" >/dev/null
measure one_trip_commit_delay_1000 "${ONE[@]}"
psql -XAtq "$DB" -c "alter system reset commit_delay" -c "alter system reset commit_siblings" \
  -c "select pg_reload_conf()" >/dev/null

# EXPLAIN (ANALYZE, BUFFERS) of every statement, as the app role under RLS, rolled back.
read -r tenant user project <<<"${IDS[0]}"
json=$(task_json "$tenant" "$project")
explain=$(psql -XAq "$APP" 2>&1 <<SQL
begin;
select set_config('app.current_tenant', '$tenant', true) \g /dev/null
\echo '-- five_trips: the project check'
explain (analyze, buffers, costs off, timing on) select 1 from app.projects where tenant_id = '$tenant' and id = '$project' and deleted_at is null for share;
\echo '-- five_trips: the task'
explain (analyze, buffers, costs off, timing on) insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date) values ('$tenant', public.bench_uuid7(), '$project', 'explain 1', '', 'todo', null, null) returning $COLS;
\echo '-- five_trips: the audit row'
explain (analyze, buffers, costs off, timing on) insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) values ('$tenant', public.bench_uuid7(), '$user', 'user', 'create', 'task', 'r1', '{"before": null, "after": $json}', 'bench-request-id-0123456789');
\echo '-- five_trips: the outbox event'
explain (analyze, buffers, costs off, timing on) insert into app.outbox (tenant_id, id, event_type, payload) values ('$tenant', public.bench_uuid7(), 'task.created', '$json');
\echo '-- one_trip: the one statement'
explain (analyze, buffers, costs off, timing on) with p as (select 1 from app.projects where tenant_id = '$tenant' and id = '$project' and deleted_at is null for share), u as (select 1 where false), t as (insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at) select '$tenant', public.bench_uuid7(), '$project', 'explain 2', '', 'todo', null::uuid, null::date, now(), now() from p returning 1), a as (insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) select '$tenant', public.bench_uuid7(), '$user', 'user', 'create', 'task', 'r2', jsonb_build_object('before', null, 'after', '$json'::jsonb), 'bench-request-id-0123456789' from t), o as (insert into app.outbox (tenant_id, id, event_type, payload) select '$tenant', public.bench_uuid7(), 'task.created', '$json' from t) select (select count(*) from p), (select count(*) from u), (select count(*) from t);
rollback;
SQL
)
indexes=$(psql -XAtq -F' | ' "$DB" -c "select c.relname, i.relname, pg_get_indexdef(i.oid) from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class c on c.oid = x.indrelid where c.relname in ('tasks', 'audit_logs', 'outbox') and c.relnamespace = 'app'::regnamespace order by 1, 2")
fks=$(psql -XAtq -F' | ' "$DB" -c "select conrelid::regclass, conname, pg_get_constraintdef(oid) from pg_constraint where conrelid in ('app.tasks'::regclass, 'app.audit_logs'::regclass, 'app.outbox'::regclass) and contype in ('f', 'c') order by 1, 2")

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"nproc\": $(nproc), \"clients\": $CLIENTS, \"duration_s\": $DURATION, \"runs\": ["
  first=1
  for k in five_trips one_trip five_trips_again one_trip_again one_trip_paced one_trip_paced_again $(for i in $INDEXES; do echo "without_${i#app.}"; done) one_trip_without_tenant_fks group4 one_trip_commit_delay_200 one_trip_commit_delay_1000 settle_update_batched settle_update_one_by_one settle_claim_batched settle_delete_batched settle_delete_one_by_one; do
    [ -n "${R[$k]:-}" ] || continue
    [ $first = 1 ] || echo ","
    first=0
    echo "${R[$k]}"
  done
  echo "]}"
} >"$OUT/write_breakdown.json"
python3 - "$OUT/write_breakdown.json" "$explain" "$indexes" "$fks" >"$OUT/write_breakdown.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"# The write of POST /tasks in PostgreSQL ({r['date']}, {r['nproc']} cores, shared machine: load beside each run)\n")
print(f"Generated by `bench/write_breakdown.sh`: pgbench -M prepared -c {r['clients']} -j 2 -T {r['duration_s']}, "
      "app role under RLS over the Unix socket, 100 tenants at random, a private PostgreSQL 15 cluster "
      "with pg_stat_statements (fsync and synchronous_commit on, no checkpoint inside the runs).\n")
tx_runs = [x for x in r["runs"] if "tps" in x]
print("| run | tx/s | POSTs/s | PostgreSQL CPU µs/POST | WAL bytes/POST | WAL records/POST | WAL fsyncs/POST | failed | load (1 min) |")
print("|---|---|---|---|---|---|---|---|---|")
for x in tx_runs:
    k = x.get("posts_per_tx", 1)
    print(f"| {x['name']} | {x['tps']:.0f} | {x['tps'] * k:.0f} | {x['postgres_cpu_us_per_tx'] / k:.1f} | {x['wal_bytes_per_tx'] / k:.0f} | "
          f"{x['wal_records_per_tx'] / k:.2f} | {x['wal_fsyncs_per_tx'] / k:.3f} | {x['failed']} | {x['load_1min']} |")
def section(title, heads, rows):
    """A headed table of the runs that have figures of its kind; nothing when none has."""
    if not rows:
        return
    print(f"\n## {title}\n")
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
section("The same transaction paced (pgbench -R: Poisson arrivals, latency from each scheduled start)",
        ["run", "target tx/s", "tx/s", "p50 ms", "p99 ms", "max ms", "failed", "load (1 min)"],
        [[x["name"], x["paced_rate"], f"{x['tx_per_s']:.0f}", x["p50_ms"], x["p99_ms"], x["max_ms"],
          x["failed"], x["load_1min"]] for x in r["runs"] if "paced_rate" in x])
section("The outbox worker's settling of each POST's event (one psql session, prepared statements)",
        ["run", "events", "batch limit", "PostgreSQL CPU µs/event", "statements µs/event",
         "WAL bytes/event", "WAL records/event", "load (1 min)"],
        [[x["name"], x["events"], x["batch_limit"], x["postgres_cpu_us_per_event"],
          x["statement_us_per_event"], x["wal_bytes_per_event"], x["wal_records_per_event"],
          x["load_1min"]] for x in r["runs"] if "events" in x])
for x in r["runs"]:
    if x["name"] not in ("five_trips", "one_trip", "settle_update_batched", "settle_delete_batched"):
        continue
    per = "event" if "events" in x else "tx"
    print(f"\n## pg_stat_statements, {x['name']} (per {per}; track = all, the triggers' foreign-key checks included)\n")
    print(f"| statement | calls | mean µs | µs per {per} | blocks | WAL records | WAL bytes |")
    print("|---|---|---|---|---|---|---|")
    for s in x["statements"]:
        q = s["query"].replace("|", "\\|")
        print(f"| `{q}` | {s['calls']} | {s['mean_us']} | {s.get('us_per_tx', s.get('us_per_event'))} | {s['blocks']} | {s['wal_records']} | {s['wal_bytes']} |")
print("\n## Indexes\n\n| table | index | definition |\n|---|---|---|")
for line in sys.argv[3].splitlines():
    print("| " + line.replace("|", "\\|").replace(" \\| ", " | ") + " |")
print("\n## Foreign keys and checks (each foreign key is a trigger per inserted row)\n\n| table | constraint | definition |\n|---|---|---|")
for line in sys.argv[4].splitlines():
    print("| " + line.replace("|", "\\|").replace(" \\| ", " | ") + " |")
print("\n## EXPLAIN (ANALYZE, BUFFERS), one tenant, app role\n\n```")
print(sys.argv[2])
print("```")
PY
cat "$OUT/write_breakdown.md" | head -40
