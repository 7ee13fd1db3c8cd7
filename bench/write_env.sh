# Sourced first (from the repository root) by the scripts that run the POST's transaction in a
# private cluster, bench/write_breakdown.sh, bench/write_callgrind.sh and bench/wal_stall_probe.sh:
# the tenants they seed, where results go, PostgreSQL 15's binaries and the tenantry binary that
# migrates the cluster (TENANTRY_BIN, else the debug build, built when missing). Each script sets
# its own PGPORT and PGDIR, so two of them never share a cluster.
TENANTS=100
OUT=bench/results
PGBIN=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v pg_ctl)")
BIN=${TENANTRY_BIN:-target/debug/tenantry}
[ -x "$BIN" ] || cargo build --quiet
mkdir -p "$OUT"
