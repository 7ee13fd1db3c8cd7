#!/usr/bin/env bash
# Makes PostgreSQL and Redis available on this machine for tenantry (local development, tests,
# CI): installs them with apt when missing (Debian/Ubuntu), starts them without systemd when
# they are not running, and waits until they answer. Idempotent; a second run takes about a
# second.
#
# Only local services are managed: PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379,
# which are the defaults of DATABASE_URL and REDIS_URL. Set SKIP_POSTGRES=1 or SKIP_REDIS=1 to
# leave one alone (e.g. when it runs elsewhere). Node and npm are installed too when missing (for
# the OFREP client test; SKIP_NODE=1 leaves them out).
set -euo pipefail

PG_HOST=127.0.0.1
# Other ports only to try this script against a scratch cluster or Redis; tenantry's defaults
# expect 5432 and 6379.
PG_PORT=${SERVICES_PG_PORT:-5432}
REDIS_PORT=${SERVICES_REDIS_PORT:-6379}
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
    as_postgres() { runuser -u postgres -- "$@"; }
else
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: run this script as root"
    SUDO=(sudo)
    as_postgres() { sudo -u postgres -- "$@"; }
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install $* yourself (this script knows Debian/Ubuntu only)"
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "installing $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
    fi
}

# The login of the default DATABASE_URL: postgres over TCP, no password (neither from the
# environment nor from ~/.pgpass, which the server does not see either).
pg_login_works() {
    env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=3 \
        psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
        -Atc 'select 1' >/dev/null 2>&1
}

wait_for() {
    local what=$1 check=$2 i
    for ((i = 0; i < WAIT_SECONDS * 5; i++)); do
        if "$check"; then return 0; fi
        sleep 0.2
    done
    die "$what did not answer within ${WAIT_SECONDS}s"
}

# The cluster serving port 5432, else the newest one. Prints "version name".
pg_cluster() {
    local line
    line=$(pg_lsclusters --no-header 2>/dev/null | awk -v p="$PG_PORT" '$3 == p {print $1, $2; exit}')
    if [ -z "$line" ] && [ -d /etc/postgresql ]; then
        local version
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
        [ -n "$version" ] && [ -d "/etc/postgresql/$version/main" ] && line="$version main"
    fi
    printf '%s' "$line"
}

ensure_postgres() {
    if pg_answers; then
        # Already up (this machine's cluster or any other server on the port); the scripts
        # still need the client.
        command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    else
        if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
            apt_install postgresql
        fi
        local cluster
        cluster=$(pg_cluster)
        if [ -z "$cluster" ]; then
            local version
            version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
            [ -n "$version" ] || die "PostgreSQL is installed but no server version is found"
            say "creating PostgreSQL cluster $version/main"
            "${SUDO[@]}" pg_createcluster "$version" main --port "$PG_PORT" >/dev/null
            cluster="$version main"
        fi
        if ! pg_answers; then
            say "starting PostgreSQL $cluster"
            # shellcheck disable=SC2086 # "version name" splits into two arguments on purpose
            "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect $cluster start ||
                pg_answers || die "could not start PostgreSQL $cluster (see /var/log/postgresql/)"
        fi
        wait_for PostgreSQL pg_answers
    fi

    if ! pg_login_works; then
        trust_local_tcp
        pg_login_works || die "PostgreSQL does not accept postgres@$PG_HOST:$PG_PORT without a \
password even after the change; set DATABASE_URL to a URL that works and SKIP_POSTGRES=1"
    fi
}

# A fresh Debian cluster asks for a password on TCP (scram-sha-256), while the local defaults
# log in as postgres without one. For local development only, trust TCP from this machine.
trust_local_tcp() {
    local hba
    hba=$(as_postgres psql -X -p "$PG_PORT" -Atc 'show hba_file' 2>/dev/null) ||
        die "cannot reach PostgreSQL over its local socket as the postgres user to find pg_hba.conf"
    [ -n "$hba" ] || die "PostgreSQL did not report its hba_file"
    say "PostgreSQL refuses postgres@$PG_HOST without a password; for LOCAL DEVELOPMENT ONLY,"
    say "adding these lines at the top of $hba and reloading:"
    say "    host all all 127.0.0.1/32 trust"
    say "    host all all ::1/128 trust"
    "${SUDO[@]}" cp -p "$hba" "$hba.before-tenantry"
    "${SUDO[@]}" sed -i '1i # Added by tenantry scripts/services.sh for local development only:\
# any local user may log in over TCP from this machine without a password.\
host all all 127.0.0.1/32 trust\
host all all ::1/128 trust' "$hba"
    say "(previous file kept as $hba.before-tenantry)"
    as_postgres psql -X -q -p "$PG_PORT" -Atc 'select pg_reload_conf()' >/dev/null
    sleep 0.3
}

redis_answers() {
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
}

ensure_redis() {
    if command -v redis-cli >/dev/null 2>&1 && redis_answers; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    # apt may have started it through its init script.
    if redis_answers; then return 0; fi
    say "starting Redis on 127.0.0.1:$REDIS_PORT (nothing kept on disk)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir "${TMPDIR:-/tmp}" \
        --pidfile "${TMPDIR:-/tmp}/tenantry-redis-$REDIS_PORT.pid" >/dev/null
    wait_for Redis redis_answers
}

# Not a service: the JavaScript OpenFeature client of tests/api/ofrep.rs runs on Node.
ensure_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
}

# Not a service either: the dashboard's browser tests (tests/api/dashboard.rs) drive Debian's
# Chromium; installed under CI only (a local run without it skips them).
ensure_chromium() {
    if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
        apt_install chromium
    fi
}

up=()
if [ "${SKIP_NODE:-0}" != 1 ]; then
    ensure_node
fi
if [ "${CI:-}" = true ]; then
    ensure_chromium
fi
if [ "${SKIP_POSTGRES:-0}" != 1 ]; then
    ensure_postgres
    up+=("PostgreSQL $PG_HOST:$PG_PORT")
fi
if [ "${SKIP_REDIS:-0}" != 1 ]; then
    ensure_redis
    up+=("Redis 127.0.0.1:$REDIS_PORT")
fi
[ ${#up[@]} -eq 0 ] || say "up: ${up[*]}"
