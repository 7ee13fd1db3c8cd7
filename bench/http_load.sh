#!/usr/bin/env bash
# Load benchmark of the request pipeline (issue 3). Provisions TENANTS tenants through the API,
# then drives authenticated, tenant-scoped GET /tasks/{id} and POST /tasks with wrk, at a fixed
# rate and at full speed, beside the reference endpoint (one transaction with set_config and a
# primary-key SELECT through the pool; no actor, no token), and measures server RSS and
# database connections. Finally it activates ACTORS tenant actors and measures RSS again.
# Between the GET and POST runs, the rate limiter's cost on the GET path: GET /tasks/{id} at full
# speed with the tenants' plan limited and with TENANT_RATE_LIMITS=off (see limiter_pair below),
# and OFREP single-flag evaluations beside GET /healthz (ofrep_pair).
#
#   bench/http_load.sh                    # 1,000 tenants, 10,000 actors, 20 s a run
#   TENANTS=200 ACTORS=2000 DURATION=10s bench/http_load.sh
#   RUNS="reference_full get_full" TENANTS=100 bench/http_load.sh   # a quick look, not recorded
#   REUSE=1 RUNS=get_full bench/http_load.sh   # same, keeping the previous run's tenants
#   RUNS=limits TENANTS=100 bench/http_load.sh  # the rate limiter's pair alone
#   RUNS=ofrep TENANTS=100 bench/http_load.sh   # OFREP single-flag evaluations beside GET /healthz
#   WRK_PACE=after_response RUNS=post_fixed bench/http_load.sh  # paced as before 2026-12-07
#     (each connection waits after its own response: waves; bench/http_load/common.lua)
#   NO_SETTLE=1 RUNS=writes bench/http_load.sh  # without the outbox drain and VACUUM (ANALYZE)
#     before each run that follows writes (see settle below)
#   TENANTRY_BIN=target/debug/tenantry BENCH_DB=scratch RUNS=limits TENANTS=20 DURATION=2s \
#     bench/http_load.sh   # checks the script works (a debug build: its figures mean nothing)
#
# Prints its figures and writes bench/results/http_load.json and http_load.md
# (http_load_workers1.* with WORKERS=1).
set -euo pipefail
cd "$(dirname "$0")/.."

TENANTS=${TENANTS:-1000}
ACTORS=${ACTORS:-10000}
DURATION=${DURATION:-20s}
RATE=${RATE:-1000}
CONNS=${CONNS:-64}
PORT=${PORT:-18080}
DB=${BENCH_DB:-tenantry_bench_http}
OUT=bench/results
mkdir -p "$OUT"
ENTRIES=$OUT/.http_load_entries.txt

[ -x "$(command -v wrk)" ] || { echo "installing wrk"; apt-get install -y wrk >/dev/null; }
[ -x scripts/services.sh ] && scripts/services.sh
# The server reaches PostgreSQL over its Unix socket when it may log in there (the usual setup
# when both run on one machine, and faster than loopback TCP: docs/benchmarks.md), else over
# TCP. PG_URL forces a base URL.
SOCKET_PG=postgres://postgres@%2Fvar%2Frun%2Fpostgresql
if [ -n "${PG_URL:-}" ]; then
  PG=$PG_URL
elif [ -S /var/run/postgresql/.s.PGSQL.5432 ] && psql -XAtq "$SOCKET_PG/postgres" -c 'select 1' >/dev/null 2>&1; then
  PG=$SOCKET_PG
else
  PG=postgres://postgres@127.0.0.1:5432
fi
case $PG in *%2F*) DB_LINK="unix socket" ;; *) DB_LINK=tcp ;; esac
echo "server to PostgreSQL over $DB_LINK ($PG)"
if [ -n "${TENANTRY_BIN:-}" ]; then
  BIN=$TENANTRY_BIN
else
  cargo build --release --quiet
  BIN=target/release/tenantry
fi

export DATABASE_URL=$PG/$DB
export PLATFORM_ADMIN_TOKEN=bench-operator-token
export JWT_SECRET=bench-jwt-secret-0123456789abcdefghijklmnop
export JWT_TTL_SECONDS=7200
# The benchmark provisions its tenants through POST /tenants and drives every request from one
# address: the per-address limits of the public endpoints would refuse it.
export PUBLIC_REQUESTS_PER_MINUTE=${PUBLIC_REQUESTS_PER_MINUTE:-1000000}
export LOGIN_ATTEMPTS_PER_MINUTE=${LOGIN_ATTEMPTS_PER_MINUTE:-10000}
export BIND=127.0.0.1:$PORT
# One log line per request at full speed would measure the logger; warnings still show.
export RUST_LOG=${RUST_LOG:-warn}
export ACTOR_IDLE_SECONDS=${ACTOR_IDLE_SECONDS:-900}
BASE=http://127.0.0.1:$PORT

# REUSE=1 keeps the database and tenants of the previous run (quick looks while iterating).
reuse=
if [ -n "${REUSE:-}" ] && [ -s "$ENTRIES" ] && [ "$(wc -l <"$ENTRIES")" -ge "$TENANTS" ] \
  && psql -tA "$PG/postgres" -c "select 1 from pg_database where datname = '$DB'" | grep -q 1; then
  reuse=1
  # A full run's actor measurement bulk-inserts tenants without schemas, which `migrate` would
  # then refuse; they are not part of the reused set.
  psql -q "$PG/$DB" -c "delete from app.users where tenant_id in
      (select id from app.tenants where slug like 'actor-%');
    delete from app.tenants where slug like 'actor-%'" >/dev/null
elif [ -z "${KEEP_DB:-}" ]; then
  psql -q "$PG/postgres" -c "drop database if exists $DB with (force)" >/dev/null
fi
# On Citus (docs/scale-out.md): PG_URL names the coordinator, the database was prepared on every
# node beforehand (KEEP_DB=1) and MIGRATE_FLAGS=--citus.
$BIN migrate --no-progress ${MIGRATE_FLAGS:-} >/dev/null
[ -z "${STATEMENTS:-}" ] || psql -XAtq "$PG/$DB" -c "create extension if not exists pg_stat_statements" >/dev/null

# WORKERS=1 runs one HTTP worker (which then hosts every tenant actor): with PostgreSQL and
# wrk on the same 2 cores, fewer server threads means fewer thread switches.
start_server() { # extra environment of the server, e.g. TENANT_RATE_LIMITS=off
  env "$@" "$BIN" serve --enable-bench-routes ${WORKERS:+--workers "$WORKERS"} \
    2>>"$OUT/.http_load_server.log" &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.1; done
}
stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
: >"$OUT/.http_load_server.log"
start_server
trap 'kill $SERVER 2>/dev/null || true' EXIT

if [ -z "$reuse" ]; then
  echo "provisioning $TENANTS tenants through the API"
  python3 bench/http_load/setup.py --base "$BASE" --operator "$PLATFORM_ADMIN_TOKEN" \
    --tenants "$TENANTS" --out "$ENTRIES"
else
  echo "reusing the $TENANTS tenants of the previous run"
  # A server that starts beside existing tenants runs its analytics retention pass over all of
  # them first (seven short transactions each, at most 50 ms apart: 50 s for 1,000 tenants);
  # a fresh database has no tenants at start-up and meets the next pass an hour later. Let it
  # finish before measuring, or the reused runs measure it too.
  sleep $((TENANTS * 50 / 1000 + 5))
fi

# What autovacuum would have done by the time a real server met this load: the PostgreSQL here
# may run without it (this machine's does), and the dead rows a previous run left behind (the
# actor measurement's tenants and users, the POST runs' settled outbox) would make a reused
# run's GET cost PostgreSQL more than after a VACUUM.
psql -XAtq "$PG/$DB" >/dev/null <<'SQL'
select format('vacuum (analyze) app.%I', tablename) from pg_tables where schemaname = 'app' \gexec
SQL

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$SERVER/status; }
# Samples the database connections of the server while a run goes on; prints the maximum.
# Counted by PostgreSQL itself, over one psql session kept open for the whole run: a psql every
# half second would fork a backend each time, and a pgrep every half second would read every
# process's command line, on the machine being measured. The sampling session is
# connected to another database, so it is not counted.
sample_connections() {
  local max
  max=$(while kill -0 "$1" 2>/dev/null; do
      echo "select count(*) from pg_stat_activity where datname = '$DB' and backend_type = 'client backend';"
      sleep 0.5
    done | psql -XAtq "$PG/postgres" | sort -n | tail -1)
  echo "${max:-0}"
}

# CPU time (clock ticks) of the server, of each PostgreSQL process, and of the whole machine
# (busy, idle), so each run says where its CPU went. PostgreSQL backends come and go (the
# connection sampler's own), so only processes alive at both samples count.
cpu_sample() {
  local p pg=""
  for p in $(pgrep -u postgres); do
    [ -r "/proc/$p/stat" ] && pg="$pg $p:$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null)"
  done
  echo "$(awk '{print $14+$15}' "/proc/$SERVER/stat") $(awk '/^cpu / {print $2+$3+$4+$6+$7+$8, $5}' /proc/stat)$pg"
}
cpu_json() { # before after requests
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import sys
def parse(sample):
    f = sample.split()
    # "pid:ticks"; a process that exited while sampled left "pid:" and is skipped.
    pg = {p: int(t) for p, t in (x.split(":") for x in f[3:]) if t}
    return int(f[0]), int(f[1]), int(f[2]), pg
bs, bb, bi, bpg = parse(sys.argv[1]); as_, ab, ai, apg = parse(sys.argv[2])
n = max(int(sys.argv[3]), 1); hz = int(sys.argv[4])
per = lambda ticks: round(ticks / hz / n * 1e6, 1)
pg = sum(apg[p] - bpg[p] for p in apg if p in bpg)
print(f'{{"server_cpu_us_per_request": {per(as_ - bs)}, "postgres_cpu_us_per_request": {per(pg)}, '
      f'"machine_cpu_us_per_request": {per(ab - bb)}, "machine_idle_share": {round((ai - bi) / max(ab - bb + ai - bi, 1), 3)}}}')
PY
}

# Before a measured run, when anything was written since the last VACUUM (by an earlier run or
# this run's warm-up): what a server's autovacuum would have done by then. This machine's
# PostgreSQL runs without autovacuum, so the statistics would stay those of the ANALYZE above,
# taken when every tenant had one task and two outbox events: the GET by id keeps the sequential
# scan planned while tasks had six pages, and since tenant_id looks unique in both tables the
# worker's settling UPDATE reads a tenant's whole outbox by tenant_id alone, filtering on id.
# Each POST run makes those scans longer, and the runs after it would measure plans no
# autovacuumed server keeps (docs/benchmarks.md, "Session 11"). So the outbox is first left to
# drain (its events are earlier requests' work, not this run's), then the app tables are
# vacuumed and analyzed. Neither is hidden: each run's JSON says, under "settled_before", how
# long both took and the CPU they used. NO_SETTLE=1 leaves this out (the figures without
# autovacuum's work).
WROTE=
SETTLED=null
pending_events() {
  psql -XAtq "$DATABASE_URL" -c "select count(*) from app.outbox
    where processed_at is null and failed_at is null and deleted_at is null"
}
cpu_seconds() { # before after: the server's, PostgreSQL's (processes alive at both) and the machine's busy CPU
  python3 - "$1" "$2" "$(getconf CLK_TCK)" <<'PY'
import sys
def parse(sample):
    f = sample.split()
    return int(f[0]), int(f[1]), {p: int(t) for p, t in (x.split(":") for x in f[3:]) if t}
bs, bb, bpg = parse(sys.argv[1]); as_, ab, apg = parse(sys.argv[2]); hz = int(sys.argv[3])
pg = sum(apg[p] - bpg[p] for p in apg if p in bpg)
print(round((as_ - bs) / hz, 2), round(pg / hz, 2), round((ab - bb) / hz, 2))
PY
}
settle() {
  SETTLED=null
  [ -n "$WROTE" ] && [ -z "${NO_SETTLE:-}" ] || return 0
  WROTE=
  local t0 t1 t2 c0 c1 c2 left waited=0 drain vacuum
  t0=$(date +%s.%N); c0=$(cpu_sample)
  while left=$(pending_events) && [ "$left" -gt 0 ] && [ $waited -lt 1200 ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  t1=$(date +%s.%N); c1=$(cpu_sample)
  psql -XAtq "$DATABASE_URL" >/dev/null <<'SQL'
select format('vacuum (analyze) app.%I', tablename) from pg_tables where schemaname = 'app' \gexec
SQL
  t2=$(date +%s.%N); c2=$(cpu_sample)
  read -r ds dp dm <<<"$(cpu_seconds "$c0" "$c1")"
  read -r _ _ vm <<<"$(cpu_seconds "$c1" "$c2")"
  drain=$(python3 -c "print(round($t1 - $t0, 2))")
  vacuum=$(python3 -c "print(round($t2 - $t1, 2))")
  SETTLED="{\"outbox_drain_s\": $drain, \"outbox_left\": $left, \"drain_server_cpu_s\": $ds, \"drain_postgres_cpu_s\": $dp, \"drain_machine_cpu_s\": $dm, \"vacuum_analyze_s\": $vacuum, \"vacuum_machine_cpu_s\": $vm}"
  echo "settled: $SETTLED"
}

# STATEMENTS=1: the statements that took PostgreSQL's time in each measured run, from
# pg_stat_statements (which must be preloaded: the scratch cluster of bench/scratch_pg.sh, never
# the product's configuration): the eight largest by execution time, with calls, ms and shared
# buffers a call, into the run's JSON ("statements") and printed.
statements_snapshot() {
  [ -n "${STATEMENTS:-}" ] || return 0
  psql -XAtq -F $'\t' "$DATABASE_URL" -c "select queryid, calls, total_exec_time,
      shared_blks_hit + shared_blks_read, regexp_replace(left(query, 140), '\s+', ' ', 'g')
    from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
      and query not like '%pg_stat_statements%'"
}
statements_json() { # files of the snapshots before and after
  python3 - "$1" "$2" <<'PY'
import json, sys
def parse(path):
    rows = {}
    for line in open(path).read().splitlines():
        qid, calls, ms, blocks, query = line.split("\t", 4)
        rows[qid] = (int(calls), float(ms), int(blocks), query)
    return rows
before, after = parse(sys.argv[1]), parse(sys.argv[2])
out = []
for qid, (calls, ms, blocks, query) in after.items():
    c0, m0, b0, _ = before.get(qid, (0, 0.0, 0, ""))
    if calls > c0:
        n = calls - c0
        out.append({"query": query, "calls": n, "ms": round(ms - m0, 1),
                    "ms_per_call": round((ms - m0) / n, 4), "buffers_per_call": round((blocks - b0) / n, 1)})
out.sort(key=lambda x: -x["ms"])
print(json.dumps(out[:8]))
PY
}

declare -A RESULTS
run() { # name script rate
  local name=$1 script=$2 rate=$3 conns=$CONNS
  local writes=
  case $script in post_task.lua | mixed.lua | analytics_events.lua) writes=1 WROTE=1 ;; esac
  # Paced runs: requests leave one 1000/rate ms apart (common.lua, WRK_PACE), so enough
  # connections must be free to take each slot; a missed slot shows as a lower measured rate.
  [ "$rate" -gt 0 ] && conns=$((rate / 20))
  # warm-up, not recorded
  WRK_RATE=$rate WRK_CONNS=$conns wrk -t1 -c"$conns" -d3s -s "bench/http_load/$script" "$BASE" \
    -- "$ENTRIES" >/dev/null
  settle
  local pending
  pending=$(pending_events)
  WRK_RATE=$rate WRK_CONNS=$conns wrk -t1 -c"$conns" -d"$DURATION" -s "bench/http_load/$script" \
    "$BASE" -- "$ENTRIES" >"$OUT/.wrk_$name.txt" &
  local wrk_pid=$!
  local cpu_before cpu_after
  statements_snapshot >"$OUT/.statements_before.txt"
  cpu_before=$(cpu_sample)
  local max_conns
  max_conns=$(sample_connections $wrk_pid)
  wait $wrk_pid
  cpu_after=$(cpu_sample)
  statements_snapshot >"$OUT/.statements_after.txt"
  WROTE=${writes:-$WROTE}
  local json requests cpu
  json=$(grep '^RESULT ' "$OUT/.wrk_$name.txt" | sed 's/^RESULT //')
  requests=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests"])' "$json")
  cpu=$(cpu_json "$cpu_before" "$cpu_after" "$requests")
  json=${json%\}}", \"max_db_connections\": $max_conns, \"server_rss_mb\": $(rss_mb), \"cpu\": $cpu, \"load_1min\": $(cut -d' ' -f1 /proc/loadavg), \"settled_before\": $SETTLED, \"outbox_pending_at_start\": $pending"
  [ -n "${STATEMENTS:-}" ] && json="$json, \"statements\": $(statements_json "$OUT/.statements_before.txt" "$OUT/.statements_after.txt")"
  [ "$rate" -gt 0 ] && json="$json, \"pace\": \"${WRK_PACE:-even}\""
  json="$json}"
  RESULTS[$name]=$json
  echo "$name: $json"
  if [ -n "${STATEMENTS:-}" ]; then
    python3 -c 'import json, sys
for x in json.loads(sys.argv[1])["statements"]:
    print("  {ms:>9} ms {calls:>7} calls {ms_per_call:>8} ms/call {buffers_per_call:>7} buffers/call  {query:.90}".format(**x))' "$json"
  fi
}

# The rate limiter's cost on the GET path: GET /tasks/{id} at full speed with the tenants' plan
# (pro) limited to RATE_LIMIT_PER_MINUTE, and with the limiter off (TENANT_RATE_LIMITS=off), each
# on a freshly started server, in the order on, off, off, on, so that a drift of the machine
# during the four runs weighs on both sides alike. The default limit is never reached (non_2xx
# stays 0) and its slices are large (a tenth of it): about one Redis lease per tenant a
# minute, the limiter's steady state below its limit. A lower RATE_LIMIT_PER_MINUTE leases more
# often, and once reached answers 429s, which are cheaper and no longer the same comparison.
RATE_LIMIT_PER_MINUTE=${RATE_LIMIT_PER_MINUTE:-600000}
# Waits until the first tenant's GET shows the limiter on (RateLimit-Limit is the limit) or off
# (no such header): a plan cached outside this server's memory may take a moment to change.
expect_limiter() { # on|off
  local token task got
  read -r token _ _ task <"$ENTRIES"
  for _ in $(seq 1 60); do
    got=$(curl -s -o /dev/null -D - -H "Authorization: Bearer $token" "$BASE/tasks/$task" \
      | tr -d '\r' | awk -F': ' 'tolower($1) == "ratelimit-limit" {print $2}' || true)
    [ "$1" = on ] && [ "$got" = "$RATE_LIMIT_PER_MINUTE" ] && return 0
    [ "$1" = off ] && [ -z "$got" ] && return 0
    sleep 1
  done
  echo "the rate limiter is not $1 (RateLimit-Limit: '$got')" >&2
  exit 1
}
# The pro plan's request limit raised to RATE_LIMIT_PER_MINUTE for the runs in between, and put
# back as it was.
lift_pro_limit() {
  PRO_LIMIT_BEFORE=$(psql -XAtq "$DATABASE_URL" -c \
    "select limits -> 'rate_limit_per_minute' from app.plans where name = 'pro'")
  psql -XAtq "$DATABASE_URL" -c "update app.plans set limits = jsonb_set(limits,
    '{rate_limit_per_minute}', '$RATE_LIMIT_PER_MINUTE') where name = 'pro'" >/dev/null
}
restore_pro_limit() {
  if [ -z "$PRO_LIMIT_BEFORE" ]; then
    psql -XAtq "$DATABASE_URL" -c "update app.plans set limits = limits - 'rate_limit_per_minute'
      where name = 'pro'" >/dev/null
  else
    psql -XAtq "$DATABASE_URL" -c "update app.plans set limits = jsonb_set(limits,
      '{rate_limit_per_minute}', '$PRO_LIMIT_BEFORE') where name = 'pro'" >/dev/null
  fi
}
limiter_pair() {
  local mode i=0
  lift_pro_limit
  for mode in on off off on; do
    i=$((i + 1))
    stop_server
    if [ "$mode" = on ]; then start_server; else start_server TENANT_RATE_LIMITS=off; fi
    expect_limiter "$mode"
    run "get_limits_${mode}_$i" get_task.lua 0
  done
  restore_pro_limit
  stop_server
  start_server
  LIMITER=$(python3 - "${RESULTS[get_limits_on_1]}" "${RESULTS[get_limits_off_2]}" \
    "${RESULTS[get_limits_off_3]}" "${RESULTS[get_limits_on_4]}" "$RATE_LIMIT_PER_MINUTE" <<'PY'
import json, sys
on1, off2, off3, on4 = (json.loads(a) for a in sys.argv[1:5])
on = (on1["rps"] + on4["rps"]) / 2
off = (off2["rps"] + off3["rps"]) / 2
p99 = lambda a, b: round((a["p99_ms"] + b["p99_ms"]) / 2, 3)
print(json.dumps({
    "rate_limit_per_minute": int(sys.argv[5]),
    "rps_on": round(on, 1), "rps_off": round(off, 1),
    "p99_ms_on": p99(on1, on4), "p99_ms_off": p99(off2, off3),
    "non_2xx_on": on1["non_2xx"] + on4["non_2xx"],
    "on_below_off": round((off - on) / off, 4),
    "runs": {"on_1": on1, "off_2": off2, "off_3": off3, "on_4": on4},
}))
PY
)
  echo "limiter: $LIMITER"
}

# OFREP single-flag evaluations (POST /ofrep/v1/evaluate/flags/{key}: token, tenant, the flag
# from memory, a murmur3 rollout bucket, JSON in and out) at full speed beside GET /healthz (no
# tenant, no token: the server's floor), in the order healthz, ofrep, ofrep, healthz on one
# server, with the pro plan's limit lifted as in limiter_pair (the limiter stays on).
ofrep_pair() {
  lift_pro_limit
  stop_server
  start_server
  curl -sf -X PUT -H "Authorization: Bearer $PLATFORM_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d '{"description": "bench", "default": "control", "plans": {"pro": "treatment"}, "rollout_percent": 50}' \
    "$BASE/admin/flags/bench-flag" >/dev/null
  expect_limiter on
  run ofrep_healthz_1 healthz.lua 0
  run ofrep_ofrep_2 ofrep.lua 0
  run ofrep_ofrep_3 ofrep.lua 0
  run ofrep_healthz_4 healthz.lua 0
  # Which answers were not 2xx, by status, as the server counted them (the warm-ups
  # included): wrk only counts them.
  OFREP_STATUSES=$(curl -sf "$BASE/metrics" | python3 -c '
import json, re, sys
counts = {}
for line in sys.stdin:
    m = re.search(r"http_request_duration_seconds_count\{(.*)\} (\d+)", line)
    if m and "route=\"/ofrep/v1/evaluate/flags/{key}\"" in m.group(1):
        status = re.search(r"status=\"(\d+)\"", m.group(1)).group(1)
        counts[status] = counts.get(status, 0) + int(m.group(2))
print(json.dumps(counts))' || echo '{}')
  restore_pro_limit
  OFREP=$(python3 - "${RESULTS[ofrep_healthz_1]}" "${RESULTS[ofrep_ofrep_2]}" \
    "${RESULTS[ofrep_ofrep_3]}" "${RESULTS[ofrep_healthz_4]}" "$OFREP_STATUSES" <<'PY'
import json, sys
h1, o2, o3, h4 = (json.loads(a) for a in sys.argv[1:5])
healthz = (h1["rps"] + h4["rps"]) / 2
ofrep = (o2["rps"] + o3["rps"]) / 2
print(json.dumps({
    "rps_healthz": round(healthz, 1), "rps_ofrep": round(ofrep, 1),
    "ofrep_over_healthz": round(ofrep / healthz, 3),
    "p99_ms_ofrep": round((o2["p99_ms"] + o3["p99_ms"]) / 2, 3),
    "non_2xx_ofrep": o2["non_2xx"] + o3["non_2xx"],
    "ofrep_statuses_with_warmups": json.loads(sys.argv[5]),
    "runs": {"healthz_1": h1, "ofrep_2": o2, "ofrep_3": o3, "healthz_4": h4},
}))
PY
)
  echo "ofrep: $OFREP"
}

writes_set() {
  local k i
  # Full-speed writes last: each POST leaves an outbox event for the job worker, and the
  # ~19,000 of a full-speed run kept the machine busy for the next two runs (2026-12-07).
  run get_full get_task.lua 0
  for i in 1 2 3; do
    run "get_fixed_$i" get_task.lua "$RATE"
    run "mixed_fixed_$i" mixed.lua "$RATE"
    run "post_fixed_$i" post_task.lua "$RATE"
  done
  run mixed_full mixed.lua 0
  run post_full post_task.lua 0
  # Analytics ingest with UUID and with string user ids, alternated (uuid, strings, strings,
  # uuid) so a drift of the machine weighs on both; 8 connections, 1,000 events a request.
  python3 bench/http_load/analytics_bodies.py "$OUT"
  local kind
  for kind in uuid strings strings uuid; do
    i=$((${i:-0} + 1))
    CONNS=8 ANALYTICS_BODIES="$OUT/.analytics_$kind.txt" run "analytics_${kind}_$i" analytics_events.lua 0
  done
  stop_server
  local ceiling="" paced_p99=""
  if [ -z "${NO_CEILING:-}" ]; then
    # The same binary migrates the ceiling's own cluster, so its schema is this server's.
    DURATION=${DURATION%s} TENANTRY_BIN=$BIN bench/write_breakdown.sh >"$OUT/.write_breakdown.txt" 2>&1 || true
    ceiling=$(python3 -c 'import json; r = json.load(open("bench/results/write_breakdown.json")); print(max(x["tps"] for x in r["runs"] if x["name"] in ("one_trip", "one_trip_again")))' 2>/dev/null || true)
    # The same transaction paced at RATE in PostgreSQL alone: its p99, run by run.
    paced_p99=$(python3 -c 'import json; r = json.load(open("bench/results/write_breakdown.json")); print(json.dumps([x["p99_ms"] for x in r["runs"] if "paced_rate" in x]))' 2>/dev/null || true)
  fi
  {
    echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"tenants\": $TENANTS, \"duration\": \"$DURATION\", \"rate\": $RATE,"
    echo " \"pgbench_ceiling_tps\": ${ceiling:-null}, \"pgbench_paced_p99_ms\": ${paced_p99:-null}, \"runs\": {"
    local first=1
    for k in get_full post_full mixed_full get_fixed_1 get_fixed_2 get_fixed_3 post_fixed_1 post_fixed_2 post_fixed_3 mixed_fixed_1 mixed_fixed_2 mixed_fixed_3 analytics_uuid_4 analytics_strings_5 analytics_strings_6 analytics_uuid_7; do
      [ $first = 1 ] || echo ","
      first=0
      echo "\"$k\": ${RESULTS[$k]}"
    done
    echo "}}"
  } >"$OUT/http_load_writes.json"
  python3 - "$OUT/http_load_writes.json" >"$OUT/http_load_writes.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
runs = r["runs"]
print(f"# Writes beside reads ({r['date']}, {r['tenants']} tenants, {r['duration']} a run; busy machine, load beside each run)\n")
pace = runs["post_fixed_1"].get("pace", "after_response")
print(f"Generated by `RUNS=writes bench/http_load.sh` (issue 18). Paced runs: `WRK_PACE={pace}` (bench/http_load/common.lua).\n")
print("| run | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req | PostgreSQL CPU µs/req | machine idle | load (1 min) | before it: outbox drain s / vacuum s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k, x in runs.items():
    c = x["cpu"]
    s = x.get("settled_before")
    settled = f"{s['outbox_drain_s']} / {s['vacuum_analyze_s']}" if s else ""
    print(f"| {k} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['non_2xx']} | {c['server_cpu_us_per_request']} | {c['postgres_cpu_us_per_request']} | {c['machine_idle_share']:.0%} | {x.get('load_1min', '')} | {settled} |")
post, get = runs["post_full"]["rps"], max(runs["get_full"]["rps"], 1)
print(f"\nPOST / GET at full speed: **{post / get:.3f}** (goal >= 0.2)")
if r["pgbench_ceiling_tps"]:
    print(f"POST / its pgbench ceiling ({r['pgbench_ceiling_tps']:.0f} tx/s, bench/results/write_breakdown.md): **{post / r['pgbench_ceiling_tps']:.3f}** (goal >= 0.7)")
print(f"PostgreSQL CPU per POST: **{runs['post_full']['cpu']['postgres_cpu_us_per_request']} µs** (goal < 100)")
u = (runs["analytics_uuid_4"]["rps"] + runs["analytics_uuid_7"]["rps"]) / 2 * 1000
st = (runs["analytics_strings_5"]["rps"] + runs["analytics_strings_6"]["rps"]) / 2 * 1000
print(f"Analytics ingest, 1,000-event batches: {u:.0f} events/s with UUID user ids, {st:.0f} with string ids: **{st / max(u, 1):.3f}** (goal >= 0.9)")
for kind in ("get", "post", "mixed"):
    p99 = [runs[f"{kind}_fixed_{i}"]["p99_ms"] for i in (1, 2, 3)]
    print(f"{kind} paced at {r['rate']} req/s, p99 of three runs: {', '.join(f'{p:.2f}' for p in p99)} ms (goal: all < 10)")
if r.get("pgbench_paced_p99_ms"):
    print(f"The POST's transaction alone in pgbench, Poisson arrivals at {r['rate']} a second, p99: {', '.join(f'{p:.2f}' for p in r['pgbench_paced_p99_ms'])} ms (bench/results/write_breakdown.md)")
PY
  cat "$OUT/http_load_writes.md"
}

if [ -n "${RUNS:-}" ]; then
  # A quick look at some runs only (e.g. RUNS="reference_full get_full"): printed, not recorded.
  for name in $RUNS; do
    case $name in
      reference_full) run reference_full reference.lua 0 ;;
      get_full) run get_full get_task.lua 0 ;;
      post_full) run post_full post_task.lua 0 ;;
      get_fixed) run get_fixed get_task.lua "$RATE" ;;
      post_fixed) run post_fixed post_task.lua "$RATE" ;;
      mixed_full) run mixed_full mixed.lua 0 ;;
      mixed_fixed) run mixed_fixed mixed.lua "$RATE" ;;
      # Issue 18's set, recorded: each paced run three times, the write's pgbench ceiling
      # (bench/write_breakdown.sh, its own cluster) and the ratios its goals are stated in.
      writes) writes_set ;;
      limits) limiter_pair ;;
      ofrep) ofrep_pair ;;
      *) echo "unknown run $name" >&2; exit 2 ;;
    esac
  done
  exit 0
fi
# Reads before writes: every POST leaves an outbox event that the job worker processes in the
# background, which would otherwise land in the read runs' figures.
run reference_full reference.lua 0
run get_full get_task.lua 0
limiter_pair
ofrep_pair
run get_fixed get_task.lua "$RATE"
run post_fixed post_task.lua "$RATE"
run post_full post_task.lua 0

echo "activating $ACTORS tenant actors"
extra=$((ACTORS - TENANTS))
if [ "$extra" -gt 0 ]; then
  # Tenants and admins inserted in bulk: this run measures actor memory, not provisioning.
  # As the superuser (RLS does not apply to it), like a data import would.
  psql -q "$DATABASE_URL" <<SQL
insert into app.tenants (id, name, slug, subdomain, plan)
  select gen_random_uuid(), 'Actor ' || g, 'actor-' || g, 'actor-' || g, 'pro'
  from generate_series(1, $extra) g;
insert into app.users (tenant_id, id, email, role)
  select id, gen_random_uuid(), 'admin@' || slug || '.example.com', 'admin'
  from app.tenants where slug like 'actor-%';
SQL
fi
psql -tA -F' ' "$DATABASE_URL" -c "select u.tenant_id, u.id from app.users u
    join app.tenants t on t.id = u.tenant_id where u.role = 'admin'" \
  | python3 bench/http_load/mint.py "$JWT_SECRET" >"$OUT/.http_load_actor_tokens.txt"
rss_before=$(rss_mb)
n_tokens=$(wc -l <"$OUT/.http_load_actor_tokens.txt")
# Enough requests to touch every tenant once or more.
wrk -t1 -c32 -d"${ACTOR_DURATION:-30s}" -s bench/http_load/get_tenant.lua "$BASE" -- \
  "$OUT/.http_load_actor_tokens.txt" >"$OUT/.wrk_actors.txt"
active=$(curl -s -H "Authorization: Bearer $PLATFORM_ADMIN_TOKEN" "$BASE/admin/actors" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["active"])')
rss_after=$(rss_mb)
actors_json="{\"tenants\": $n_tokens, \"active_actors\": $active, \"rss_mb_before\": $rss_before, \"rss_mb_after\": $rss_after, \"wrk\": $(grep '^RESULT ' "$OUT/.wrk_actors.txt" | sed 's/^RESULT //')}"
echo "actors: $actors_json"

ratio=$(python3 -c "import json; a=json.loads('''${RESULTS[get_full]}'''); b=json.loads('''${RESULTS[reference_full]}'''); print(round(a['rps']/b['rps'], 3))")
RESULT_NAME=http_load${WORKERS:+_workers$WORKERS}
cat >"$OUT/$RESULT_NAME.json" <<JSON
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "machine": {"nproc": $(nproc), "postgres": "$(psql -tA "$PG/postgres" -c 'show server_version')"},
  "tenants": $TENANTS, "duration": "$DURATION", "connections_full_speed": $CONNS,
  "http_workers": "${WORKERS:-default (one per core)}",
  "database_connection": "$DB_LINK",
  "reference_full_speed": ${RESULTS[reference_full]},
  "get_task_full_speed": ${RESULTS[get_full]},
  "post_task_full_speed": ${RESULTS[post_full]},
  "get_task_fixed_rate": ${RESULTS[get_fixed]},
  "post_task_fixed_rate": ${RESULTS[post_fixed]},
  "get_over_reference": $ratio,
  "rate_limiter": $LIMITER,
  "ofrep": $OFREP,
  "actors": $actors_json
}
JSON
python3 - "$OUT/$RESULT_NAME.json" >"$OUT/$RESULT_NAME.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"# Request pipeline load ({r['date']}, {r['machine']['nproc']} cores, PostgreSQL {r['machine']['postgres']} over {r.get('database_connection', 'tcp')}, {r['tenants']} tenants, HTTP workers: {r.get('http_workers')})\n")
print("| run | req/s | p50 ms | p95 ms | p99 ms | non-2xx | max DB conns | server RSS MB | server CPU µs/req | PostgreSQL CPU µs/req | machine CPU µs/req | machine idle |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k in ["reference_full_speed", "get_task_full_speed", "post_task_full_speed", "get_task_fixed_rate", "post_task_fixed_rate"]:
    x = r[k]
    c = x["cpu"]
    print(f"| {k} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p95_ms']:.2f} | {x['p99_ms']:.2f} | {x['non_2xx']} | {x['max_db_connections']} | {x['server_rss_mb']} | {c['server_cpu_us_per_request']} | {c['postgres_cpu_us_per_request']} | {c['machine_cpu_us_per_request']} | {c['machine_idle_share']:.0%} |")
l = r["rate_limiter"]
print(f"\nRate limiter on the GET path (plan limit {l['rate_limit_per_minute']}/min, runs on, off, off, on): "
      f"{l['rps_on']:.0f} req/s on, {l['rps_off']:.0f} req/s off: **{l['on_below_off']:.1%}** below "
      f"(p99 {l['p99_ms_on']} ms on, {l['p99_ms_off']} ms off; non-2xx with it on: {l['non_2xx_on']}).")
o = r["ofrep"]
print(f"\nOFREP single-flag evaluations at full speed: {o['rps_ofrep']:.0f} req/s beside GET /healthz {o['rps_healthz']:.0f} req/s: "
      f"**{o['ofrep_over_healthz']}** of healthz (p99 {o['p99_ms_ofrep']} ms, non-2xx {o['non_2xx_ofrep']}).")
a = r["actors"]
print(f"\nGET /tasks/{{id}} at full speed / reference: **{r['get_over_reference']}**\n")
print(f"Tenant actors: {a['active_actors']} active after requests for {a['tenants']} tenants; server RSS {a['rss_mb_before']} MB before, {a['rss_mb_after']} MB after.")
PY
cat "$OUT/$RESULT_NAME.md"
