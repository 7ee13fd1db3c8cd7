#!/usr/bin/env bash
# About what this machine can do for one authenticated GET /tasks/{id}, measured in its two
# halves with nothing else running, so the request pipeline's figures in http_load.md can be
# read against a ceiling rather than against a number from another machine:
#   1. HTTP alone: wrk against GET /healthz of the release server (actix, the request-id and
#      tracing middleware, the latency histogram; no tenant, no token, no database);
#   2. database alone: pgbench, as the app role under RLS over the Unix socket, running exactly
#      the database work of a GET: set_config and the primary-key SELECT of the task's columns
#      in one pipeline under one Sync, prepared, 16 clients; once for one tenant's task, and
#      once for 100 tenants' tasks picked at random, as the load test's requests are (pgbench
#      takes at most 128 scripts; the load test spreads over 1,000 tenants, wider still). One
#      row stays in the CPU's caches; rows spread over tenants do not, and cost the database
#      more (docs/benchmarks.md).
# Each half has both cores to itself. A GET needs both halves on the same two cores, so
# 1 / (1/http + 1/db), with db the spread rows' rate, is about what the cores allow before the
# pipeline's own work (JWT, tenant and user checks, the actor, JSON). A guide, not a hard limit:
# each pgbench client waits for its own answer, one read per round trip, where the server's
# reads by id share a connection and its round trips (so the server can do better than the
# guide), and the database half's CPU is everything the machine did beside pgbench, kernel
# included.
#
#   bench/ceiling.sh        # after bench/http_load.sh (it reads that run's database and tenants)
#
# Prints its figures and writes bench/results/ceiling.json and ceiling.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
PORT=${PORT:-18081}
DB=${BENCH_DB:-tenantry_bench_http}
OUT=bench/results
ENTRIES=$OUT/.http_load_entries.txt
SOCKET_PG=postgres://postgres@%2Fvar%2Frun%2Fpostgresql
[ -s "$ENTRIES" ] || { echo "run bench/http_load.sh first (it provisions the tenants)" >&2; exit 2; }
psql -XAtq "$SOCKET_PG/$DB" -c 'select 1' >/dev/null 2>&1 \
  || { echo "no database $DB reachable over the socket: run bench/http_load.sh first" >&2; exit 2; }
[ -x "$(command -v wrk)" ] || { echo "installing wrk"; apt-get install -y wrk >/dev/null; }
cargo build --release --quiet
BIN=target/release/tenantry

# 1. HTTP alone.
export DATABASE_URL=$SOCKET_PG/$DB BIND=127.0.0.1:$PORT RUST_LOG=warn JOB_WORKER=false
export PLATFORM_ADMIN_TOKEN=bench-operator-token JWT_SECRET=bench-jwt-secret-0123456789abcdefghijklmnop
$BIN serve 2>"$OUT/.ceiling_server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
# CPU seconds the whole machine has been busy (user, system, interrupts), to say what one
# request or transaction costs beside how many went through.
busy_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz}' /proc/stat
}
per_us() { # seconds count
  python3 -c "import sys; print(round(float(sys.argv[1]) / max(float(sys.argv[2]), 1) * 1e6, 1))" "$1" "$2"
}
wrk -t1 -c64 -d3s "http://127.0.0.1:$PORT/healthz" >/dev/null
before=$(busy_seconds)
wrk_out=$(wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/healthz")
after=$(busy_seconds)
http_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$wrk_out")
# wrk itself included: it runs beside the server in the load test too.
http_cpu_us=$(per_us "$(python3 -c "print($after - $before)")" "$(awk '/requests in/ {print $1}' <<<"$wrk_out")")
kill $SERVER; wait $SERVER 2>/dev/null || true
echo "HTTP alone (GET /healthz): $http_rps req/s, $http_cpu_us µs of machine CPU each (wrk included)"

# 2. Database alone, as the app role (RLS applies): one tenant's task, then 100 tenants' tasks.
app_role=$(psql -XAtq "$SOCKET_PG/$DB" -c "select rolname from pg_roles where rolname like '%app' and rolcanlogin order by rolname limit 1")
scripts=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$scripts"' EXIT
columns="id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at"
# One script per pick: pgbench picks one of the -f scripts at random for each transaction.
# Both runs have 100 scripts, with 100 statement texts (a comment tells them apart), so they
# differ in the rows they read and in nothing else.
write_script() { # file tenant task n
  cat >"$1" <<SQL
\startpipeline
select set_config('app.current_tenant', '$2', true);
select /* $4 */ $columns from app.tasks where tenant_id = '$2' and id = '$3' and deleted_at is null;
\endpipeline
SQL
}
read -r _ tenant _ task < "$ENTRIES"
rows=$(psql -XAtq "postgres://$app_role@%2Fvar%2Frun%2Fpostgresql/$DB" -c "begin; select set_config('app.current_tenant', '$tenant', true); select count(*) from app.tasks where tenant_id = '$tenant' and id = '$task'; commit;" | sed -n 2p)
[ "$rows" = 1 ] || { echo "the app role does not see the task under RLS ($rows rows): not measuring an empty read" >&2; exit 1; }
one=()
spread=()
i=0
while read -r _ spread_tenant _ spread_task; do
  i=$((i + 1))
  write_script "$scripts/one_$i.sql" "$tenant" "$task" "$i"
  write_script "$scripts/spread_$i.sql" "$spread_tenant" "$spread_task" "$i"
  one+=(-f "$scripts/one_$i.sql")
  spread+=(-f "$scripts/spread_$i.sql")
done < <(shuf -n 100 "$ENTRIES")
# Prints "tps µs": transactions a second, and machine CPU per transaction without pgbench's own
# (bash's `time` reports the client's user and system seconds), so PostgreSQL's and the
# kernel's share only.
pgbench_run() { # pgbench script arguments
  pgbench -n -M prepared -c 16 -j 2 -T 3 "$@" -U "$app_role" -h /var/run/postgresql "$DB" >/dev/null 2>&1 || true
  local out client before after
  before=$(busy_seconds)
  client=$( { TIMEFORMAT='%U %S'; time pgbench -n -M prepared -c 16 -j 2 -T "$DURATION" "$@" \
      -U "$app_role" -h /var/run/postgresql "$DB" >"$scripts/out" 2>&1; } 2>&1)
  after=$(busy_seconds)
  out=$(cat "$scripts/out")
  python3 - "$before" "$after" "$client" "$(awk '/^tps =/ {print $3}' <<<"$out")" \
    "$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out")" <<'PY'
import sys
before, after, client, tps, n = sys.argv[1:]
user, system = map(float, client.split())
print(tps, round((float(after) - float(before) - user - system) / max(float(n), 1) * 1e6, 1))
PY
}
read -r db_one_tps db_one_cpu_us <<<"$(pgbench_run "${one[@]}")"
echo "database alone, one tenant's task (set_config + primary-key SELECT, one Sync, pgbench -c16): $db_one_tps transactions/s, $db_one_cpu_us µs of machine CPU each (pgbench not included)"
read -r db_tps db_cpu_us <<<"$(pgbench_run "${spread[@]}")"
echo "database alone, 100 tenants' tasks at random: $db_tps transactions/s, $db_cpu_us µs each"

bound=$(python3 -c "import sys; h, d = float(sys.argv[1]), float(sys.argv[2]); print(round(1 / (1 / h + 1 / d)))" "$http_rps" "$db_tps")
echo "both halves on the same cores: about $bound req/s"
# What the cores can do if a GET cost only the HTTP half (wrk included) and PostgreSQL's share
# of the spread read: the server's database client and all the pipeline's work for free.
cpu_bound=$(python3 -c "import sys; print(round(int(sys.argv[1]) * 1e6 / (float(sys.argv[2]) + float(sys.argv[3]))))" "$(nproc)" "$http_cpu_us" "$db_cpu_us")
echo "by CPU, with the database client and the pipeline free, at pgbench's database cost: $cpu_bound req/s"
cat >"$OUT/ceiling.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "nproc": $(nproc), "load_before": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "http_healthz_rps": $http_rps, "http_machine_cpu_us_per_request": $http_cpu_us,
 "db_one_row_tps": $db_one_tps, "db_one_row_cpu_us_per_tx": $db_one_cpu_us,
 "db_spread_rows_tps": $db_tps, "db_spread_rows_cpu_us_per_tx": $db_cpu_us,
 "combined_bound_rps": $bound, "cpu_bound_rps": $cpu_bound}
JSON
cat >"$OUT/ceiling.md" <<MD
# Ceiling of one GET /tasks/{id} on this machine ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores)

Generated by \`bench/ceiling.sh\`: each half alone with both cores to itself.

| half | rate | machine CPU µs each |
|---|---|---|
| HTTP alone: wrk, 64 connections, GET /healthz of the release server | $http_rps req/s | $http_cpu_us (wrk included) |
| database alone: pgbench -M prepared -c 16, app role under RLS over the socket, set_config + primary-key SELECT under one Sync, one tenant's task | $db_one_tps tx/s | $db_one_cpu_us (pgbench not included) |
| database alone, the same for 100 tenants' tasks picked at random (as the load test's requests) | $db_tps tx/s | $db_cpu_us (pgbench not included) |
| both on the same cores, 1 / (1/http + 1/db) with the spread rows' rate, before any work of the pipeline itself | **$bound req/s** | |
| by CPU: $(nproc) cores / (HTTP µs + spread rows' µs), the database client and the pipeline free, at pgbench's database cost | **$cpu_bound req/s** | |
MD
cat "$OUT/ceiling.md"
