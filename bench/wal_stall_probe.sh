#!/usr/bin/env bash
# What the POST's transaction waits on when it stalls at a paced rate (issue 18): pgbench -R
# RATE runs write_breakdown.sh's one-trip transaction in a private cluster like that script's
# (bench/write_cluster.sh: the real schema, 100 tenants, no checkpoint inside the run; its own
# port, 5495, and directory), every transaction logged, while one psql session samples
# pg_stat_activity every 10 ms. Transactions over STALL_MS (from their actual start, so the
# wait for a free client is left out) are merged into stall windows, and the wait events sampled
# inside them are counted against those outside.
#
#   flock /work/bench.lock bench/wal_stall_probe.sh          # 20 s at 1,000 a second
#   DURATION=60 RATE=500 bench/wal_stall_probe.sh
#
# Prints its figures and writes bench/results/wal_stall_probe.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
RATE=${RATE:-1000}
STALL_MS=${STALL_MS:-20}
CLIENTS=${CLIENTS:-16}
PGPORT=${PGPORT:-5495}
PGDIR=${PGDIR:-/tmp/tenantry_wal_stall_probe}
source bench/write_env.sh

source bench/write_cluster.sh
WORK=$(mktemp -d)
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDIR" -m fast stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
SCRIPTS=$WORK
write_scripts
mapfile -t ONE < <(for f in "$SCRIPTS"/one_*.sql; do printf -- '-f\n%s\n' "$f"; done)
APP="postgres://tenantry_app@$SOCK:$PGPORT/tenantry_write"
pgbench -n -M prepared -c "$CLIENTS" -j 2 -T 3 "${ONE[@]}" "$APP" >/dev/null 2>&1 || true

psql -XAtq "$DB" >"$WORK/waits" 2>/dev/null <<SQL &
select extract(epoch from clock_timestamp()), coalesce(wait_event_type || ':' || wait_event, 'CPU'),
       split_part(ltrim(query), ' ', 1)
from pg_stat_activity where datname = 'tenantry_write' and state = 'active' and pid <> pg_backend_pid()
\watch 0.01
SQL
sampler=$!
mkdir "$WORK/log"
load=$(cut -d' ' -f1 /proc/loadavg)
(cd "$WORK/log" && pgbench -n -M prepared -c "$CLIENTS" -j 2 -R "$RATE" -T "$DURATION" -l \
  --log-prefix=tx "${ONE[@]}" "$APP" >/dev/null 2>&1) || true
kill $sampler 2>/dev/null || true
wait $sampler 2>/dev/null || true

python3 - "$WORK/log" "$WORK/waits" "$STALL_MS" "$RATE" "$DURATION" "$CLIENTS" "$load" <<'PY' | tee "$OUT/wal_stall_probe.txt"
import bisect, collections, glob, sys
logdir, waits, stall_ms, rate, duration, clients, load = sys.argv[1:]
stall = float(stall_ms) / 1000
tx = []
# A log line: client, transaction, latency µs (from the scheduled start), script, epoch s and µs
# of the end, schedule lag µs.
for f in glob.glob(logdir + "/tx*"):
    for line in open(f):
        p = line.split()
        if not p[2].isdigit():
            continue
        lat, end = int(p[2]) / 1e6, int(p[4]) + int(p[5]) / 1e6
        lag = int(p[6]) / 1e6 if len(p) > 6 else 0.0
        tx.append((end - lat + lag, end))
run = sorted(e - s for s, e in tx)
pct = lambda q: run[min(len(run) - 1, int(len(run) * q))] * 1000
print(f"# bench/wal_stall_probe.sh: the POST's one-trip transaction, pgbench -R {rate} for {duration} s, "
      f"{clients} clients, pg_stat_activity every 10 ms (load before: {load})")
print(f"transactions {len(run)}; from their actual start: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
      f"max {run[-1] * 1000:.1f} ms; over {stall_ms} ms: {sum(1 for x in run if x > stall)}")
windows = []
for s, e in sorted(t for t in tx if t[1] - t[0] > stall):
    if windows and s <= windows[-1][1]:
        windows[-1][1] = max(windows[-1][1], e)
    else:
        windows.append([s, e])
print(f"stall windows (merged, ms): {', '.join(f'{(b - a) * 1000:.0f}' for a, b in windows) or 'none'}")
inside, outside = collections.Counter(), collections.Counter()
starts = [a for a, _ in windows]
for line in open(waits):
    p = line.rstrip("\n").split("|")
    try:
        t = float(p[0])
    except (ValueError, IndexError):
        continue
    i = bisect.bisect_right(starts, t) - 1
    key = f"{p[1]} ({p[2]})"
    (inside if i >= 0 and t <= windows[i][1] else outside)[key] += 1
for name, c in (("inside the stall windows", inside), ("outside them", outside)):
    total = sum(c.values()) or 1
    print(f"\nbackend samples {name}: {sum(c.values())}")
    for k, v in c.most_common(8):
        print(f"  {v:6d}  {v / total:6.1%}  {k}")
PY
