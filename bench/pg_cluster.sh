# Sourced by bench/write_cluster.sh and bench/scratch_pg.sh: a private PostgreSQL 15 cluster
# for a benchmark (never the product's configuration, nor the shared server's).
# `fresh_cluster` stops and removes any cluster in $PGDIR, runs initdb there (the superuser
# postgres logs in without a password) and writes the settings both share: port $PGPORT, the
# socket in $PGDIR and no TCP, pg_stat_statements preloaded, 128 MB of shared buffers, fsync
# and synchronous_commit on like this machine's shared server; the caller's own settings are
# read from stdin and appended. Expects PGBIN, PGDIR, PGPORT.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
fresh_cluster() {
  if [ -d "$PGDIR" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
  fi
  mkdir -p "$PGDIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; fi
  as_pg "$PGBIN/initdb" -D "$PGDIR" --auth=trust -U postgres >/dev/null
  {
    cat <<CONF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$PGDIR'
shared_preload_libraries = 'pg_stat_statements'
shared_buffers = 128MB
max_connections = 100
fsync = on
synchronous_commit = on
CONF
    cat
  } >>"$PGDIR/postgresql.conf"
}
