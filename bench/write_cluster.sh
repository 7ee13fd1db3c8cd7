# Sourced by bench/write_breakdown.sh, bench/write_callgrind.sh and bench/wal_stall_probe.sh (from the
# repository root, after bench/write_env.sh):
# a private PostgreSQL 15 cluster (initdb in $PGDIR, port $PGPORT, socket in $PGDIR) with
# pg_stat_statements preloaded, the real schema (`$BIN migrate`) and a seed of $TENANTS tenants
# with a user, a project and 200 tasks each; then the helpers that write the benchmark's SQL:
# `write_scripts` (the POST's transaction in each shape, into $SCRIPTS), `settle_prelude` and
# `settle_tx` (the outbox worker's statements). Expects PGBIN, PGDIR, PGPORT, TENANTS, BIN;
# POSTGRES_WRAPPER, when set, is the executable pg_ctl starts instead of postgres (a script
# running postgres under valgrind); PG_CONF_EXTRA is appended to postgresql.conf.
source bench/pg_cluster.sh
fresh_cluster <<CONF
pg_stat_statements.track = all
wal_sync_method = fdatasync
track_wal_io_timing = on
autovacuum = off
# No checkpoint inside the runs: a page's first change after one writes the whole page to
# the WAL, which would land in whichever run came next.
checkpoint_timeout = 30min
max_wal_size = 8GB
${PG_CONF_EXTRA:-}
CONF
if [ -n "${POSTGRES_WRAPPER:-}" ]; then
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/log" -p "$POSTGRES_WRAPPER" -t 900 -w start >/dev/null
else
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/log" -w start >/dev/null
fi
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null 2>&1 || true' EXIT

SOCK=$(python3 -c "import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$PGDIR")
SUPER="postgres://postgres@$SOCK:$PGPORT"
DATABASE_URL="$SUPER/tenantry_write" PLATFORM_ADMIN_TOKEN=x JWT_SECRET=bench-jwt-secret-0123456789abcdefghijklmnop \
  "$BIN" migrate --no-progress >/dev/null
DB="$SUPER/tenantry_write"
psql -XAtq "$DB" -c "create extension pg_stat_statements" >/dev/null

# 100 tenants, one admin, one project and 200 earlier tasks each, and the ids the scripts use.
# UUIDv7-like ids (time first) for the tasks, as the server makes them: appended at the right
# of each key, not scattered over it.
psql -XAtq "$DB" >/dev/null <<SQL
create function public.bench_uuid7() returns uuid language sql volatile as \$\$
  select (lpad(to_hex((extract(epoch from clock_timestamp()) * 1000)::bigint), 12, '0')
          || substr(md5(random()::text), 1, 20))::uuid \$\$;
grant execute on function public.bench_uuid7() to tenantry_app;
insert into app.tenants (id, name, slug, subdomain, plan)
  select gen_random_uuid(), 'W ' || g, 'w-' || g, 'w-' || g, 'pro' from generate_series(1, $TENANTS) g;
insert into app.users (tenant_id, id, email, role)
  select id, gen_random_uuid(), 'admin@' || slug || '.example.com', 'admin' from app.tenants;
insert into app.projects (tenant_id, id, name)
  select id, gen_random_uuid(), 'Project of ' || slug from app.tenants;
insert into app.tasks (tenant_id, id, project_id, title)
  select p.tenant_id, public.bench_uuid7(), p.id, 'seed ' || g
  from app.projects p, generate_series(1, 200) g;
vacuum analyze;
SQL
mapfile -t IDS < <(psql -XAtq -F' ' "$DB" -c "select t.id, u.id, p.id from app.tenants t
  join app.users u on u.tenant_id = t.id join app.projects p on p.tenant_id = t.id order by t.slug")

COLS="id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at"
# A task's JSON as the server writes it into the audit row and the outbox (about the same size).
task_json() { # tenant project
  echo "{\"id\": \"0190a0b0-0000-7000-8000-000000000000\", \"project_id\": \"$2\", \"title\": \"load 1-1-123456789\", \"description\": \"\", \"status\": \"todo\", \"assignee_id\": null, \"due_date\": null, \"created_at\": \"2026-12-07T00:00:00.123456Z\", \"updated_at\": \"2026-12-07T00:00:00.123456Z\"}"
}
write_scripts() {
  local i=0 tenant user project json
  for row in "${IDS[@]}"; do
    read -r tenant user project <<<"$row"
    i=$((i + 1))
    json=$(task_json "$tenant" "$project")
    cat >"$SCRIPTS/five_$i.sql" <<SQL
\set r random(1, 9000000000000000)
\startpipeline
begin;
select set_config('app.current_tenant', '$tenant', true);
select 1 from app.projects where tenant_id = '$tenant' and id = '$project' and deleted_at is null for share;
\endpipeline
insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date) values ('$tenant', public.bench_uuid7(), '$project', 'load ' || :r, '', 'todo', null, null) returning $COLS;
insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) values ('$tenant', public.bench_uuid7(), '$user', 'user', 'create', 'task', 'r' || :r, '{"before": null, "after": $json}', 'bench-request-id-0123456789');
insert into app.outbox (tenant_id, id, event_type, payload) values ('$tenant', public.bench_uuid7(), 'task.created', '$json');
commit;
SQL
    cat >"$SCRIPTS/one_$i.sql" <<SQL
\set r random(1, 9000000000000000)
\startpipeline
begin;
select set_config('app.current_tenant', '$tenant', true);
with p as (select 1 from app.projects where tenant_id = '$tenant' and id = '$project' and deleted_at is null for share), u as (select 1 where false), t as (insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at) select '$tenant', public.bench_uuid7(), '$project', 'load ' || :r, '', 'todo', null::uuid, null::date, now(), now() from p returning 1), a as (insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) select '$tenant', public.bench_uuid7(), '$user', 'user', 'create', 'task', 'r' || :r, jsonb_build_object('before', null, 'after', '$json'::jsonb), 'bench-request-id-0123456789' from t), o as (insert into app.outbox (tenant_id, id, event_type, payload) select '$tenant', public.bench_uuid7(), 'task.created', '$json' from t) select (select count(*) from p), (select count(*) from u), (select count(*) from t);
commit;
\endpipeline
SQL
  done
  # Group commit across tenants: four tenants' POSTs in one transaction on one connection, each
  # under its own savepoint (a failing one rolls back alone) and its own tenant context, one
  # COMMIT (one WAL flush) for the four. What a write combiner in the server would send.
  local n=${#IDS[@]} j k
  for ((j = 0; j < n; j++)); do
    {
      echo '\set r random(1, 9000000000000000)'
      echo '\startpipeline'
      echo 'begin;'
      for k in 0 1 2 3; do
        read -r tenant user project <<<"${IDS[$(((j + k * n / 4) % n))]}"
        json=$(task_json "$tenant" "$project")
        echo "savepoint w$k;"
        echo "select set_config('app.current_tenant', '$tenant', true);"
        echo "with p as (select 1 from app.projects where tenant_id = '$tenant' and id = '$project' and deleted_at is null for share), u as (select 1 where false), t as (insert into app.tasks (tenant_id, id, project_id, title, description, status, assignee_id, due_date, created_at, updated_at) select '$tenant', public.bench_uuid7(), '$project', 'load $k ' || :r, '', 'todo', null::uuid, null::date, now(), now() from p returning 1), a as (insert into app.audit_logs (tenant_id, id, user_id, actor, action, resource, resource_id, changes, request_id) select '$tenant', public.bench_uuid7(), '$user', 'user', 'create', 'task', 'r' || :r, jsonb_build_object('before', null, 'after', '$json'::jsonb), 'bench-request-id-0123456789' from t), o as (insert into app.outbox (tenant_id, id, event_type, payload) select '$tenant', public.bench_uuid7(), 'task.created', '$json' from t) select (select count(*) from p), (select count(*) from u), (select count(*) from t);"
        echo "release savepoint w$k;"
      done
      echo 'commit;'
      echo '\endpipeline'
    } >"$SCRIPTS/group4_$((j + 1)).sql"
  done
}
# The outbox worker's share of a POST: what settling each event costs PostgreSQL afterwards
# (src/jobs/worker.rs). A fresh backlog of one-trip POSTs (the outbox emptied first, so every
# variant settles the same number of its own events), then drained by psql as the app role, one
# transaction per tenant batch of at most LIMIT events, exactly as the worker's statements are
# (BEGIN, tenant context, synchronous_commit off, the lock of the due rows, the webhook
# endpoints' read, the settle, COMMIT). Variants:
#   update     the worker today: SELECT .. FOR UPDATE SKIP LOCKED, then UPDATE processed_at by id
#   claim      the lock and the settle in one UPDATE .. FROM (SELECT .. FOR UPDATE SKIP LOCKED)
#              RETURNING the events (no separate row-lock WAL record, one statement less)
#   delete     DELETE .. USING (SELECT .. FOR UPDATE SKIP LOCKED) RETURNING: a settled event
#              leaves no row (needs DELETE on app.outbox for the app role: granted here only)
# Per settled event: WAL bytes and records, PostgreSQL CPU and statement time.
# Prepared once per session, as the server's statement cache does; the arguments are the
# tenant and the batch's limit (the worker's `batch_size`, 200 by default).
settle_prelude() {
  cat <<'SQL'
prepare ctx(text) as select set_config('app.current_tenant', $1, true);
prepare hooks(uuid) as select id, events from app.webhooks where tenant_id = $1 and status = 'enabled' and deleted_at is null;
prepare lock_due(uuid, int) as select '{' || string_agg(s.id::text, ',') || '}' as ids, count(s.payload) from (select id, event_type, payload, created_at, attempts + 1 from app.outbox where tenant_id = $1 and processed_at is null and failed_at is null and deleted_at is null and next_attempt_at <= now() order by next_attempt_at, id limit $2 for update skip locked) s;
prepare settle(uuid, uuid[]) as update app.outbox set processed_at = now(), attempts = attempts + 1, last_error = null where tenant_id = $1 and id = any($2);
prepare claim(uuid, int) as update app.outbox o set processed_at = now(), attempts = o.attempts + 1, last_error = null from (select id from app.outbox where tenant_id = $1 and processed_at is null and failed_at is null and deleted_at is null and next_attempt_at <= now() order by next_attempt_at, id limit $2 for update skip locked) d where o.tenant_id = $1 and o.id = d.id returning o.id, o.event_type, o.payload, o.created_at, o.attempts;
prepare fanout(uuid, uuid[]) as insert into app.webhook_messages (tenant_id, id, webhook_id, outbox_id, event_type, body, status) select $1, gen_random_uuid(), w.id, o.id, o.event_type, o.payload::text, 'pending' from app.outbox o join app.webhooks w on w.tenant_id = o.tenant_id and w.status = 'enabled' and w.deleted_at is null where o.tenant_id = $1 and o.id = any($2) on conflict (tenant_id, outbox_id, webhook_id) do nothing returning id, webhook_id, status;
prepare remove(uuid, int) as delete from app.outbox o using (select id from app.outbox where tenant_id = $1 and processed_at is null and failed_at is null and deleted_at is null and next_attempt_at <= now() order by next_attempt_at, id limit $2 for update skip locked) d where o.tenant_id = $1 and o.id = d.id returning o.id, o.event_type, o.payload, o.created_at, o.attempts + 1;
select pg_sleep(0.3);
SQL
}
settle_tx() { # variant tenant limit
  local t=$2 l=$3
  echo "begin;"
  echo "execute ctx('$t') \\g /dev/null"
  echo "set local synchronous_commit = off;"
  case $1 in
    update)
      echo "execute lock_due('$t', $l) \\gset"
      echo "execute hooks('$t');"
      echo "execute settle('$t', :'ids');"
      ;;
    update_hook)
      # With an endpoint subscribed: the fan-out's messages (src/webhooks/fanout.rs writes them
      # from arrays the worker built; here from the locked rows, the same rows and indexes).
      echo "execute lock_due('$t', $l) \\gset"
      echo "execute hooks('$t');"
      echo "execute fanout('$t', :'ids');"
      echo "execute settle('$t', :'ids');"
      ;;
    claim)
      echo "execute claim('$t', $l);"
      echo "execute hooks('$t');"
      ;;
    delete)
      echo "execute remove('$t', $l);"
      echo "execute hooks('$t');"
      ;;
  esac
  echo "commit;"
}
