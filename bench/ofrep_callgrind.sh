#!/usr/bin/env bash
# Instructions per request of an OFREP single-flag evaluation beside GET /healthz, counted by
# valgrind's callgrind (issue 12): independent of the machine's load, so a change to the
# request pipeline can be weighed on a busy machine. The server runs under callgrind with one
# HTTP worker; a client sends N sequential requests on one kept-alive connection after a
# warm-up, with the counters zeroed before and dumped after, and the script prints the
# instructions (Ir) per request and the functions costing the most (inclusive). The kind
# `ofrep_fresh_token` sends each request with a token the server has not seen (the same claims,
# another `iat`): what every request cost before verified tokens were remembered.
#
#   TENANTRY_BIN=target/profiling/tenantry bench/ofrep_callgrind.sh
#   N=5000 TENANTS=4 TENANTRY_BIN=... bench/ofrep_callgrind.sh
#
# Writes bench/results/.callgrind_<endpoint>.out (not committed) and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-3000}
WARMUP=${WARMUP:-300}
TENANTS=${TENANTS:-4}
PORT=${PORT:-18090}
DB=${BENCH_DB:-tenantry_bench_ofrep_cg}
BIN=${TENANTRY_BIN:-target/profiling/tenantry}
OUT=bench/results
mkdir -p "$OUT"
ENTRIES=$OUT/.ofrep_callgrind_entries.txt
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }

PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL=$PG/$DB
export PLATFORM_ADMIN_TOKEN=bench-operator-token
export JWT_SECRET=bench-jwt-secret-0123456789abcdefghijklmnop
export JWT_TTL_SECONDS=7200
export PUBLIC_REQUESTS_PER_MINUTE=1000000
export BIND=127.0.0.1:$PORT
export RUST_LOG=${RUST_LOG:-warn}
BASE=http://127.0.0.1:$PORT

psql -q "$PG/postgres" -c "drop database if exists $DB with (force)" >/dev/null
$BIN migrate --no-progress >/dev/null
# The pro plan's request limit lifted, as bench/http_load.sh does: the limiter stays on and
# counts every request, but none is refused.
psql -XAtq "$DATABASE_URL" -c "update app.plans set limits = jsonb_set(limits,
  '{rate_limit_per_minute}', '600000') where name = 'pro'" >/dev/null

SERVER=
stop_server() {
  [ -n "$SERVER" ] || return 0
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}
trap stop_server EXIT
wait_ready() {
  for _ in $(seq 1 600); do curl -sf "$BASE/readyz" >/dev/null && return 0; sleep 0.2; done
  echo "the server did not get ready" >&2
  exit 1
}

"$BIN" serve --workers 1 2>"$OUT/.ofrep_callgrind_server.log" &
SERVER=$!
wait_ready
python3 bench/http_load/setup.py --base "$BASE" --operator "$PLATFORM_ADMIN_TOKEN" \
  --tenants "$TENANTS" --prefix cg --out "$ENTRIES" 2>/dev/null
curl -sf -X PUT -H "Authorization: Bearer $PLATFORM_ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d '{"description": "bench", "default": "control", "plans": {"pro": "treatment"}, "rollout_percent": 50}' \
  "$BASE/admin/flags/bench-flag" >/dev/null
stop_server

valgrind --tool=callgrind --callgrind-out-file="$OUT/.callgrind_all.out" \
  "$BIN" serve --workers 1 2>>"$OUT/.ofrep_callgrind_server.log" &
SERVER=$!
wait_ready

# Sends `count` requests of one kind on one connection; exits non-zero on any non-2xx.
drive() { # kind count
  python3 - "$BASE" "$ENTRIES" "$1" "$2" <<'PY'
import base64, hashlib, hmac, http.client, json, os, random, sys, urllib.parse
base, entries, kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [line.split() for line in open(entries) if line.strip()]
host = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
statuses = {}
b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()
unb64 = lambda text: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
secret = os.environ["JWT_SECRET"].encode()
def fresh(token):
    # The same claims with another (random, past) iat: another token, which the server has
    # never verified.
    claims = json.loads(unb64(token.split(".")[1]))
    claims["iat"] = random.randrange(10**9)
    body = token.split(".")[0] + "." + b64(json.dumps(claims).encode())
    return body + "." + b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
for i in range(count):
    token, _tenant, _project, task = rows[i % len(rows)]
    if kind == "ofrep_fresh_token":
        token = fresh(token)
    if kind == "healthz":
        conn.request("GET", "/healthz")
    else:
        conn.request("POST", "/ofrep/v1/evaluate/flags/bench-flag",
                     body='{"context":{"targetingKey":"%s"}}' % task,
                     headers={"Authorization": "Bearer " + token,
                              "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    statuses[resp.status] = statuses.get(resp.status, 0) + 1
bad = {s: n for s, n in statuses.items() if not 200 <= s < 300}
if bad:
    print(f"{kind}: non-2xx answers {bad}", file=sys.stderr)
    sys.exit(1)
PY
}

KINDS="healthz ofrep ofrep_fresh_token"
for kind in $KINDS; do
  drive "$kind" "$WARMUP"
  callgrind_control -z "$SERVER" >/dev/null
  drive "$kind" "$N"
  callgrind_control -d "$kind" "$SERVER" >/dev/null
  # The dump is written by the server's next trip through callgrind's scheduler.
  sleep 2
  dump=$(ls -t "$OUT"/.callgrind_all.out.* | head -1)
  mv "$dump" "$OUT/.callgrind_$kind.out"
done
stop_server

for kind in $KINDS; do
  total=$(callgrind_annotate "$OUT/.callgrind_$kind.out" 2>/dev/null \
    | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "$kind: $total instructions for $N requests: $((total / N)) a request"
done
echo
echo "ofrep, inclusive cost of the biggest functions (Ir for $N requests):"
callgrind_annotate --inclusive=yes --threshold=100 "$OUT/.callgrind_ofrep.out" 2>/dev/null \
  | sed -n '/file:function/,$p' | head -60 || true
