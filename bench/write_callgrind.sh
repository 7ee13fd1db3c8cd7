#!/usr/bin/env bash
# Instructions PostgreSQL executes per POST /tasks and per outbox event the worker settles,
# counted by valgrind's callgrind: independent of the machine's load (perf's hardware counters
# are not available in this VM), so a change to the write path can be weighed on a busy machine.
#
# The private cluster of bench/write_breakdown.sh (bench/write_cluster.sh: the real schema,
# 100 seeded tenants), its postmaster run under callgrind so every backend it forks is counted
# and writes its own profile when it exits. Each case runs twice in a fresh session as the app
# role (prepared statements, one client): a short session and one with STEPS more steps; the
# difference divided by STEPS is the cost of one step, without the connection's start-up, the
# catalog caches' warm-up or the statements' preparation. The same difference of each
# function's inclusive cost (callgrind_annotate) splits a step into its parts.
#
# Cases:
#   post               the POST's transaction (domain::tasks::create): BEGIN, set_config, the one
#                      statement (project check, task, audit row, outbox event), COMMIT
#   post_no_audit      the same without the audit row's CTE   } the difference is that insert's
#   post_no_outbox     the same without the outbox event's    } cost, FK trigger and indexes in
#   post_without_<index>  without one secondary index of tasks, audit_logs, outbox
#   post_without_tenant_fks  without the tenants foreign keys of audit_logs and outbox
#   settle_1           the worker's transaction for one tenant with one event due
#                      (src/jobs/worker.rs `batch_together`: BEGIN, tenant context,
#                      synchronous_commit off, the lock of the due rows, the webhooks read, the
#                      settle UPDATE, COMMIT)
#   settle_group16     one shared transaction over 16 tenants with one event each
#                      (`batch_group_together`), per event
#   settle_200         one tenant's full batch of 200 events, per event
#   *_hook             the same with one endpoint subscribed to every event (the fan-out's
#                      insert of one webhook message per event)
#   settle_delete_*    the settle as a DELETE of the locked rows instead of the UPDATE
#   settle_claim_*     (CASES=settle_claim) the lock and the settle in one UPDATE .. RETURNING
#
#   bench/write_callgrind.sh                # every case but settle_claim, STEPS=200: about 25 minutes
#   STEPS=100 CASES="post settle_1" bench/write_callgrind.sh
#
# Writes bench/results/write_callgrind.{md,json}. Run it under `flock /work/bench.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-200}
PGPORT=${PGPORT:-5497}
PGDIR=${PGDIR:-/tmp/tenantry_write_callgrind}
CGDIR=${CGDIR:-/tmp/tenantry_write_callgrind_out}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
source bench/write_env.sh

rm -rf "$CGDIR"
mkdir -p "$CGDIR"
[ "$(id -u)" = 0 ] && chown postgres "$CGDIR"
POSTGRES_WRAPPER=$CGDIR/postgres
cat >"$POSTGRES_WRAPPER" <<SH
#!/bin/sh
exec valgrind -q --tool=callgrind --callgrind-out-file=$CGDIR/cg.%p $PGBIN/postgres "\$@"
SH
chmod 755 "$POSTGRES_WRAPPER"
# Autovacuum off: what it would do depends on time, not on the steps counted here.
PG_CONF_EXTRA="log_connections = on"
source bench/write_cluster.sh
APP="postgres://tenantry_app@$SOCK:$PGPORT/tenantry_write"

SCRIPTS=$(mktemp -d)
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null 2>&1 || true; rm -rf "$SCRIPTS"' EXIT
write_scripts
read -r T1 U1 P1 <<<"${IDS[0]}"

# The profile a session's backend wrote when it ended: the app role's last connection in the
# server log (log_connections) names the backend; callgrind writes cg.<pid> as it exits.
session_profile() {
  local pid f
  pid=$(grep 'connection authorized: user=tenantry_app' "$PGDIR/log" | tail -1 | sed -E 's/^[^[]*\[([0-9]+)\].*/\1/')
  f=$CGDIR/cg.$pid
  for _ in $(seq 1 600); do
    if grep -q '^totals:' "$f" 2>/dev/null; then echo "$f"; return; fi
    sleep 0.2
  done
  echo "no profile of backend $pid appeared" >&2
  exit 1
}
# Each function's inclusive instructions in a profile, "Ir function" per line.
inclusive() { callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$1" 2>/dev/null |
  awk '/^ *[0-9,]+ +\( *[0-9.]+%\) +/ {sub(/\( *[0-9.]+%\)/, ""); ir = $1; gsub(",", "", ir); n = split($2, a, ":"); print ir, a[n]}'; }
declare -A R
# Runs `session COUNT` (a shell function that runs one app-role session doing COUNT steps)
# with 10 and 10 + steps steps and records the difference per step. `SETUP COUNT`, when set,
# runs before each session (outside the counted backend).
count() { # name session-function [steps]
  local name=$1 fn=$2 steps=${3:-$STEPS} before small big
  "${SETUP:-true}" 10; "$fn" 10; small=$(session_profile)
  "${SETUP:-true}" $((10 + steps)); "$fn" $((10 + steps)); big=$(session_profile)
  R[$name]=$(python3 - "$name" "$steps" <(inclusive "$small") <(inclusive "$big") <<'PY'
import json, sys
name, steps, small, big = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def read(p):
    d = {}
    for line in open(p):
        ir, _, fn = line.strip().partition(" ")
        if fn and ir.isdigit():
            d[fn] = max(d.get(fn, 0), int(ir))
    return d
a, b = read(small), read(big)
total = (b.get("PostgresMain", 0) - a.get("PostgresMain", 0)) / steps
# PostgreSQL's exported functions (the package's binary is stripped of the static ones).
PARTS = ["PortalRun", "PortalStart", "GetCachedPlan", "pg_plan_queries", "CommitTransactionCommand",
  "StartTransactionCommand", "XLogFlush", "XLogInsert", "ExecutorStart", "ExecutorRun", "ExecutorFinish",
  "ExecutorEnd", "ExecSetParamPlan", "ExecInsertIndexTuples", "heap_insert", "ExecConstraints",
  "stringToNode", "ExecWithCheckOptions", "RI_FKey_check_ins", "heap_lock_tuple", "heap_update",
  "heap_delete", "jsonb_recv", "jsonb_build_object", "set_config_by_name", "pg_proc_aclcheck",
  "index_getnext_slot", "_bt_doinsert", "MultiXactIdCreate", "GetSnapshotData", "secure_read",
  "secure_write", "ExecScan", "md5_text", "uuid_in", "exec_simple_query", "ProcessUtility",
  "pgstat_report_stat", "pq_getbyte"]
parts = {fn: round((b.get(fn, 0) - a.get(fn, 0)) / steps) for fn in PARTS if fn in b}
print(json.dumps({"name": name, "steps": steps, "instructions_per_step": round(total),
  "parts": parts}))
PY
)
  echo "${R[$name]}" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["name"], r["instructions_per_step"], "instructions per step")'
}

# One client, one tenant's script: the statements are prepared once, in the short session.
# The server makes its ids in Rust; bench_uuid7() (SQL: md5, random, to_hex) would cost more
# than the POST's inserts here, so the ids are gen_random_uuid()'s.
sed -i 's/public\.bench_uuid7()/gen_random_uuid()/g' "$SCRIPTS/one_1.sql"
bench_session() { # transactions script
  pgbench -n -M prepared -c 1 -j 1 -t "$1" -f "$2" "$APP" >"$SCRIPTS/pgbench.out" 2>&1 || true
  grep -q "^number of transactions actually processed: $1/$1\$" "$SCRIPTS/pgbench.out" ||
    { echo "pgbench failed:" >&2; cat "$SCRIPTS/pgbench.out" >&2; exit 1; }
}
post_session() { bench_session "$1" "$SCRIPTS/one_1.sql"; }
# The server's own statement (domain::tasks::CREATE_TASK_SQL), its 14 parameters bound as the
# server binds them (pgbench sends them as text, typed by PostgreSQL's inference as for
# tokio-postgres), the ids fresh UUIDs each transaction from a statement before it (the case
# `ids` counts that statement alone, to subtract).
cat >"$SCRIPTS/ids.sql" <<SQL
select gen_random_uuid() as tid, gen_random_uuid() as aid, gen_random_uuid() as oid \\gset
SQL
ids_session() { bench_session "$1" "$SCRIPTS/ids.sql"; }
cat >"$SCRIPTS/server.sql" <<SQL
select gen_random_uuid() as tid, gen_random_uuid() as aid, gen_random_uuid() as oid \gset
\startpipeline
begin;
select set_config('app.current_tenant', :tenant, true);
with p as (select 1 from app.projects where tenant_id = :tenant and id = :project and deleted_at is null for share), u as (select 1 where false), t as (insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at) select :tenant, :tid::uuid, :project, :tid::text, ''::text, 'todo'::text, null::uuid, null::date, :now::timestamptz, :now from p returning 1), a as (insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) select :tenant, :aid::uuid, :user::uuid, 'user', 'create', 'task', :tid::uuid::text, jsonb_build_object('before', null, 'after', :json::jsonb), :req::text from t), o as (insert into app.outbox (tenant_id, id, event_type, payload) select :tenant, :oid::uuid, 'task.created', :json::jsonb from t) select (select count(*) from p), (select count(*) from u), (select count(*) from t);
commit;
\endpipeline
SQL
server_session() {
  local json
  json=$(task_json "$T1" "$P1")
  pgbench -n -M prepared -c 1 -j 1 -t "$1" -f "$SCRIPTS/server.sql" -D tenant="$T1" -D project="$P1" \
    -D user="$U1" -D now="2026-12-07T09:00:00.123456Z" -D json="$json" \
    -D req="bench-request-id-0123456789" "$APP" >"$SCRIPTS/pgbench.out" 2>&1 || true
  grep -q "^number of transactions actually processed: $1/$1\$" "$SCRIPTS/pgbench.out" ||
    { echo "pgbench failed:" >&2; cat "$SCRIPTS/pgbench.out" >&2; exit 1; }
}
variant_session() { bench_session "$1" "$SCRIPTS/variant.sql"; }
post_variant() { # name python-regex-to-remove
  python3 - "$SCRIPTS/one_1.sql" "$2" >"$SCRIPTS/variant.sql" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
t = re.sub(sys.argv[2], "", s)
assert t != s, "the variant removed nothing"
print(t, end="")
PY
  count "$1" variant_session
}

# The worker's statements as it sends them (bench/write_cluster.sh `settle_prelude`), one
# session: `$1` transactions of the shape in SETTLE (tenants per transaction, limit, variant).
# The backlog is written first by the superuser (outside the counted backend): SETTLE_EVENTS
# due events for each tenant the transactions take.
backlog() { # tenants-count events-per-tenant
  psql -XAtq "$DB" -c "truncate app.outbox" -c "insert into app.outbox (tenant_id, id, event_type, payload)
    select t.id, public.bench_uuid7(), 'task.created', o.payload
    from (select id from app.tenants order by slug limit $1) t, generate_series(1, $2) g,
      (select '$(task_json "$T1" "$P1")'::jsonb as payload) o" >/dev/null
}
# Both sessions of a case start from the same backlog (the longer one's), so the rows the
# claim reads past are the same.
settle_backlog() {
  local n=$SETTLE_N tenants=$SETTLE_TENANTS limit=$SETTLE_LIMIT
  backlog "$((n * tenants > TENANTS ? TENANTS : n * tenants))" "$(( (n * tenants + TENANTS - 1) / TENANTS * limit ))"
}
settle_session() { # transactions
  local n=$1 tenants=$SETTLE_TENANTS limit=$SETTLE_LIMIT variant=$SETTLE_VARIANT i k file="$SCRIPTS/settle.sql"
  settle_prelude >"$file"
  for ((i = 0; i < n; i++)); do
    if [ "$tenants" = 1 ]; then
      read -r t _ <<<"${IDS[$((i % TENANTS))]}"
      settle_tx "$variant" "$t" "$limit" >>"$file"
    else
      # batch_group_together: one transaction, the context set to each tenant in turn.
      echo "begin;" >>"$file"
      echo "set local synchronous_commit = off;" >>"$file"
      for ((k = 0; k < tenants; k++)); do
        read -r t _ <<<"${IDS[$(((i * tenants + k) % TENANTS))]}"
        settle_tx "$variant" "$t" "$limit" | grep -v '^begin;\|^commit;\|synchronous_commit' >>"$file"
      done
      echo "commit;" >>"$file"
    fi
  done
  psql -XAq -v ON_ERROR_STOP=1 -f "$file" "$APP" >/dev/null
}
# Events per step: the difference counts STEPS transactions of SETTLE_TENANTS x events each.
settle_case() { # name tenants limit variant [steps]
  SETTLE_TENANTS=$2 SETTLE_LIMIT=$3 SETTLE_VARIANT=$4 SETTLE_N=$((10 + ${5:-$STEPS}))
  SETUP=settle_backlog count "$1" settle_session "${5:-$STEPS}"
  R[$1]=$(echo "${R[$1]}" | python3 -c "import json,sys; r=json.load(sys.stdin); k=$2*$3; r['events_per_step']=k; r['instructions_per_event']=round(r['instructions_per_step']/k); r['parts']={f: round(v/k) for f, v in r['parts'].items()}; print(json.dumps(r))")
}
hook_on() {
  psql -XAtq "$DB" -c "insert into app.webhooks (tenant_id, id, url, events, secret_ciphertext, secret_key_id)
    select id, gen_random_uuid(), 'https://example.com/hook', '{*}', '\\x00', 'bench' from app.tenants" >/dev/null
}
hook_off() { psql -XAtq "$DB" -c "delete from app.webhook_messages" -c "delete from app.webhooks" >/dev/null; }

CASES=${CASES:-post post_no_audit post_no_outbox post_without_indexes post_without_tenant_fks settle}
for case in $CASES; do
  case $case in
    post) count post post_session ;;
    server) count server server_session; count ids ids_session ;;
    post_no_audit) post_variant post_no_audit ', a as \(insert into app\.audit_logs .*? from t\)' ;;
    post_no_outbox) post_variant post_no_outbox ', o as \(insert into app\.outbox .*? from t\)' ;;
    post_without_indexes)
      for idx in $(psql -XAtq "$DB" -c "select indexrelid::regclass from pg_index i join pg_class c on c.oid = i.indrelid
          where c.relname in ('tasks', 'audit_logs', 'outbox') and c.relnamespace = 'app'::regnamespace
          and not i.indisprimary order by 1"); do
        def=$(psql -XAtq "$DB" -c "select pg_get_indexdef('$idx'::regclass)")
        psql -XAtq "$DB" -c "drop index $idx" >/dev/null
        count "post_without_${idx#app.}" post_session
        psql -XAtq "$DB" -c "$def" >/dev/null
      done ;;
    post_without_tenant_fks)
      FKS=$(psql -XAtq -F'|' "$DB" -c "select conrelid::regclass, conname, pg_get_constraintdef(oid) from pg_constraint
        where conrelid in ('app.audit_logs'::regclass, 'app.outbox'::regclass) and contype = 'f' and confrelid = 'app.tenants'::regclass")
      while IFS='|' read -r tbl con _; do
        [ -n "$con" ] && psql -XAtq "$DB" -c "alter table $tbl drop constraint $con" >/dev/null
      done <<<"$FKS"
      count post_without_tenant_fks post_session
      while IFS='|' read -r tbl con def; do
        [ -n "$con" ] && psql -XAtq "$DB" -c "alter table $tbl add constraint $con $def" >/dev/null
      done <<<"$FKS" ;;
    settle)
      settle_case settle_1 1 1 update
      settle_case settle_group16 16 1 update 10
      settle_case settle_200 1 200 update 20
      hook_on
      settle_case settle_1_hook 1 1 update_hook
      settle_case settle_group16_hook 16 1 update_hook 10
      settle_case settle_200_hook 1 200 update_hook 20
      hook_off
      psql -XAtq "$DB" -c "grant delete on app.outbox to tenantry_app" >/dev/null
      settle_case settle_delete_1 1 1 delete
      settle_case settle_delete_group16 16 1 delete 10
      settle_case settle_delete_200 1 200 delete 20
      psql -XAtq "$DB" -c "revoke delete on app.outbox from tenantry_app" >/dev/null ;;
    settle_claim)
      # The lock of the due rows and their settle in one UPDATE .. FROM .. RETURNING.
      settle_case settle_claim_1 1 1 claim
      settle_case settle_claim_group16 16 1 claim 10
      settle_case settle_claim_200 1 200 claim 20 ;;
  esac
done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"steps\": $STEPS, \"git\": \"$(git rev-parse --short HEAD)\", \"cases\": ["
  first=1
  for k in "${!R[@]}"; do
    [ $first = 1 ] || echo ","
    first=0
    echo "${R[$k]}"
  done
  echo "]}"
} >"$OUT/write_callgrind.json"
python3 - "$OUT/write_callgrind.json" >"$OUT/write_callgrind.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
order = lambda c: (not c["name"].startswith("post"), c["name"] != "post", c["name"])
cases = sorted(r["cases"], key=order)
print(f"# Instructions per POST and per settled outbox event in PostgreSQL ({r['date']}, {r['git']})\n")
print(f"Generated by `bench/write_callgrind.sh`: callgrind on the private cluster's backends, the "
      f"difference between a session of 10 steps and one of {10 + r['steps']}, per step. "
      "Load-independent.\n")
print("| case | instructions per POST / per event |\n|---|---|")
for c in cases:
    print(f"| {c['name']} | {c.get('instructions_per_event', c['instructions_per_step']):,} |")
print("\n## Parts (inclusive instructions of PostgreSQL's functions, per POST / per event)\n")
names = sorted({f for c in cases for f in c["parts"]})
print("| function | " + " | ".join(c["name"] for c in cases) + " |")
print("|---|" + "---|" * len(cases))
for f in names:
    print(f"| {f} | " + " | ".join(f"{c['parts'].get(f, 0):,}" for c in cases) + " |")
PY
cat "$OUT/write_callgrind.md"
