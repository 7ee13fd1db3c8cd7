#!/usr/bin/env bash
# A scratch PostgreSQL 15 cluster for looking inside a benchmark's database: pg_stat_statements
# preloaded (never in the product's configuration, nor in the shared server's), otherwise set
# like this machine's shared server (128 MB of shared buffers, fsync and synchronous_commit on,
# autovacuum off; AUTOVACUUM=on for a server's defaults). initdb in $PGDIR, port $PGPORT (5498:
# write_breakdown.sh's cluster takes 5499), socket in $PGDIR; the superuser postgres logs in
# without a password.
#
#   bench/scratch_pg.sh start      # (re)creates it, empty, and prints its base URL
#   PG_URL=$(bench/scratch_pg.sh url) STATEMENTS=1 TENANTRY_BIN=target/release/tenantry \
#     TENANTS=100 DURATION=10s RUNS="post_fixed get_fixed post_fixed get_fixed" bench/http_load.sh
#   bench/scratch_pg.sh stop
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGDIR=${PGDIR:-/tmp/tenantry_scratch_pg}
PGPORT=${PGPORT:-5498}
source "$(dirname "$0")/pg_cluster.sh"
url() {
  echo "postgres://postgres@$(python3 -c "import urllib.parse, sys; print(urllib.parse.quote(sys.argv[1], safe=''))" "$PGDIR"):$PGPORT"
}
case ${1:-} in
  start)
    fresh_cluster <<CONF
pg_stat_statements.track = top
autovacuum = ${AUTOVACUUM:-off}
CONF
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/log" -w start >/dev/null
    url
    ;;
  stop) as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null ;;
  url) url ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
