#!/usr/bin/env bash
# tenantry on an existing Citus cluster (docs/scale-out.md): `tenantry migrate --citus` on a
# fresh database of every node, what it built (distributed and reference tables, RLS on the
# shards, tenant schemas on the workers), then the isolation, domain, analytics and
# provisioning tests against the cluster, and a summary. Builds nothing of Citus: the cluster
# must be running, with trust or .pgpass access for the roles of `tenantry migrate` on every
# node (Citus connects to the workers as the current role).
#
# Usage: scripts/citus-check.sh COORDINATOR_URL WORKER_URL [WORKER_URL...]
#   e.g. scripts/citus-check.sh postgres://postgres@127.0.0.1:9700/postgres \
#          postgres://postgres@127.0.0.1:9701/postgres postgres://postgres@127.0.0.1:9702/postgres
# Maintenance URLs of superusers. RUST_TEST_THREADS (default 2) and CITUS_CHECK_GROUPS (default
# "isolation domain analytics provisioning"; "all" for every group of tests/api) tune the test
# run; CITUS_CHECK_SKIP_TESTS=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ $# -lt 2 ]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
coordinator=$1
shift
workers=("$@")
check_db=tenantry_citus_check
groups=${CITUS_CHECK_GROUPS:-isolation domain analytics provisioning}
if [ "$groups" = all ]; then
    # Every module of tests/api with tests of its own.
    groups=$(grep -lE '#\[(tokio::)?test\]' tests/api/*.rs | xargs -n1 basename | sed 's/\.rs$//' | tr '\n' ' ')
fi

# The URL with its database replaced (query string kept).
with_db() {
    local url=$1 db=$2 base query=""
    if [[ $url == *\?* ]]; then
        query="?${url#*\?}"
        url=${url%%\?*}
    fi
    base=${url%/*}
    if [[ $base == *:/ ]]; then base=$url; fi
    printf '%s/%s%s' "$base" "$db" "$query"
}
host_of() { local h=${1#*://}; h=${h#*@}; h=${h%%/*}; printf '%s' "${h%%:*}"; }
port_of() { local h=${1#*://}; h=${h#*@}; h=${h%%/*}; [[ $h == *:* ]] && printf '%s' "${h##*:}" || printf 5432; }
sql() { psql -X -w -q -v ON_ERROR_STOP=1 -At "$1" -c "$2"; }

require_cargo
echo "== building tenantry"
cargo build --locked --quiet --bin tenantry
tenantry="$(target_dir)/debug/tenantry"

echo "== a fresh '$check_db' database on the coordinator and ${#workers[@]} worker(s)"
sql "$coordinator" "drop database if exists $check_db with (force)" >/dev/null
for w in "${workers[@]}"; do
    sql "$w" "drop database if exists $check_db with (force)" >/dev/null
    sql "$w" "create database $check_db" >/dev/null
    sql "$(with_db "$w" $check_db)" "create extension citus" >/dev/null
done
sql "$coordinator" "create database $check_db" >/dev/null
coord_db=$(with_db "$coordinator" $check_db)
sql "$coord_db" "create extension citus" >/dev/null
sql "$coord_db" "select citus_set_coordinator_host('$(host_of "$coordinator")', $(port_of "$coordinator"))" >/dev/null
for w in "${workers[@]}"; do
    sql "$coord_db" "select citus_add_node('$(host_of "$w")', $(port_of "$w"))" >/dev/null
done
sql "$coord_db" "select 'nodes: ' || string_agg(nodename || ':' || nodeport || case when groupid = 0 then ' (coordinator)' else '' end, ', ' order by nodeport) from pg_dist_node"

export DATABASE_URL=$coord_db
unset APP_DATABASE_URL ADMIN_DATABASE_URL
failures=()

echo "== tenantry migrate (without --citus) must refuse"
if out=$("$tenantry" migrate --no-progress 2>&1); then
    echo "$out"
    failures+=("plain migrate accepted a Citus database")
else
    echo "refused: $(tail -n 1 <<<"$out")"
fi

echo "== tenantry migrate --citus (twice: the second run changes nothing)"
"$tenantry" migrate --citus --no-progress
"$tenantry" migrate --citus --no-progress

echo "== what it built"
sql "$coord_db" "select citus_table_type || ': ' || count(*) || ' (' || string_agg(table_name::text, ' ' order by table_name::text) || ')' from citus_tables where table_name::text like 'app.%' group by citus_table_type order by 1"
local_tables=$(sql "$coord_db" "select coalesce(string_agg(c.relname, ' '), '') from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'app' and c.relkind = 'r' and c.relname <> 'refinery_schema_history' and not exists (select 1 from pg_dist_partition p where p.logicalrelid = c.oid)")
if [ -n "$local_tables" ]; then failures+=("tables left local: $local_tables"); fi
subselect=$(sql "$coord_db" "select count(*) from pg_policies where schemaname = 'app' and (qual like '%SELECT%' or with_check like '%SELECT%')")
echo "policies with a sub-select on the coordinator: $subselect"
[ "$subselect" = 0 ] || failures+=("$subselect policies keep a sub-select")
sql "$coord_db" "select 'foreign keys: ' || count(*) from pg_constraint where contype = 'f' and connamespace = 'app'::regnamespace"

echo "== two tenants provisioned through the CLI: distributed schemas on the workers"
for slug in citus-check-a citus-check-b; do
    "$tenantry" tenants create --name "$slug" --slug "$slug" --admin-email "admin@$slug.example.com" \
        --admin-password correct-horse-battery >/dev/null
done
sql "$coord_db" "select s.schema_name::text || ' on ' || string_agg(distinct sh.nodename || ':' || sh.nodeport, ',') from citus_schemas s join citus_shards sh on sh.table_name::text like s.schema_name::text || '.%' group by s.schema_name order by 1"
nodes=$(sql "$coord_db" "select count(distinct sh.nodeport) from citus_schemas s join citus_shards sh on sh.table_name::text like s.schema_name::text || '.%'")
[ "$nodes" -ge 2 ] || failures+=("tenant schemas all on one node")

echo "== RLS on the shards (every worker)"
for w in "${workers[@]}"; do
    wdb=$(with_db "$w" $check_db)
    # Citus hides shards from the catalog of a worker unless asked.
    export PGOPTIONS="-c citus.override_table_visibility=off"
    sql "$wdb" "select '$(host_of "$w"):$(port_of "$w"): ' || count(*) || ' shard(s) of tenant tables, ' || count(*) filter (where c.relrowsecurity and c.relforcerowsecurity) || ' with RLS forced, ' || (select count(*) from pg_policies p where p.tablename ~ '_[0-9]+\$') || ' shard policies' from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and c.relname ~ '_[0-9]+\$' and ((n.nspname like 't\\_%' and c.relname !~ '^refinery_schema_history_') or exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id') and n.nspname = 'app' and c.relname !~ '^(tenants|plans|platform_audit_logs|flags|flag_versions|plan_prices)_')"
    unforced=$(sql "$wdb" "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and c.relname ~ '_[0-9]+\$' and ((n.nspname like 't\\_%' and c.relname !~ '^refinery_schema_history_') or (n.nspname = 'app' and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'))) and not (c.relrowsecurity and c.relforcerowsecurity)")
    [ "$unforced" = 0 ] || failures+=("$unforced shard(s) without forced RLS on $w")
    # The app role reading the users shards directly on the worker, without a tenant
    # context, sees no row of those the superuser sees.
    all=0 seen=0
    for shard in $(sql "$wdb" "select relname from pg_class where relname ~ '^users_[0-9]+\$'"); do
        all=$((all + $(sql "$wdb" "select count(*) from app.$shard")))
        seen=$((seen + $(sql "$wdb" "set role tenantry_app; select count(*) from app.$shard")))
    done
    echo "  users shards: $all row(s) for the superuser, $seen for the app role without a context"
    [ "$seen" = 0 ] || failures+=("the app role read $seen row(s) of users shards on $w without a context")
    unset PGOPTIONS
done

if [ "${CITUS_CHECK_SKIP_TESTS:-0}" != 1 ]; then
    echo "== tests against the cluster: $groups"
    export TEST_DATABASE_URL=$coordinator
    TEST_CITUS_WORKERS=$(IFS=,; printf '%s' "${workers[*]}")
    export TEST_CITUS_WORKERS
    export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
    unset DATABASE_URL
    results=()
    for group in $groups; do
        log=$(mktemp)
        if cargo test --locked --quiet --test api "$group::" >"$log" 2>&1; then
            results+=("$group: $(grep -m1 '^test result' "$log")")
        else
            results+=("$group: $(grep -m1 '^test result' "$log" || echo 'did not run')")
            grep -E '^test .* FAILED$|^    [a-z_:]+$' "$log" | head -20 || true
            grep -A3 'panicked at' "$log" | head -40 || true
            failures+=("tests of $group")
        fi
        rm -f "$log"
    done
fi

echo
echo "== summary (coordinator $(host_of "$coordinator"):$(port_of "$coordinator"), ${#workers[@]} worker(s))"
for r in "${results[@]:-}"; do [ -n "$r" ] && echo "  $r"; done
if [ ${#failures[@]} -gt 0 ]; then
    for f in "${failures[@]}"; do echo "  FAILED: $f"; done
    exit 1
fi
echo "  all checks passed"
