# Shared by scripts/run.sh and scripts/test.sh (sourced, not executed).

# cargo from rustup lives in ~/.cargo/bin, which a non-login shell may not have on its PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'MSG'
error: cargo (the Rust toolchain) is not installed. Install it with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --component rustfmt,clippy
    . "$HOME/.cargo/env"

then run this script again.
MSG
        exit 1
    fi
}

# rustfmt and clippy are rustup components; add them when the toolchain lacks them.
require_component() {
    local tool=$1 component=$2
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            echo "adding the $component component with rustup" >&2
            rustup component add "$component"
        else
            echo "error: 'cargo $tool' is missing; install the $component component" >&2
            exit 1
        fi
    fi
}

# The binaries built by cargo, wherever CARGO_TARGET_DIR points.
target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        printf '%s' "$CARGO_TARGET_DIR"
    else
        cargo metadata --format-version 1 --no-deps 2>/dev/null |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
    fi
}
