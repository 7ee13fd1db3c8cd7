#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of scripts/coverage.sh: cargo runs `<this> <rustc> <args...>` for the
# workspace's own crates only. The tenantry crate's targets (library, binary, tests) are compiled
# with LLVM's coverage instrumentation; its dependencies are not, so they keep the fingerprints of
# the ordinary dev build and are not rebuilt.
rustc=$1
shift
if [ "${CARGO_PKG_NAME:-}" = tenantry ]; then
    case "${CARGO_CRATE_NAME:-}" in
        build_script_*) ;;
        *) exec "$rustc" "$@" -Cinstrument-coverage ;;
    esac
fi
exec "$rustc" "$@"
