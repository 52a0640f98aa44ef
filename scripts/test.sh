#!/usr/bin/env bash
# The whole test suite, against a real PostgreSQL with the pgq extension.
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# Uses the server in PGQ_TEST_DSN when it is set; otherwise installs what is
# missing and starts a throwaway cluster for the run (scripts/with-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# A daemon test runs the real logrotate on examples/dist/testq.logrotate
# (installed when missing; it lives in /usr/sbin, which a user's PATH may miss),
# and the metrics tests a real Prometheus server and promtool (Debian's
# `prometheus`, which starts no service when installed without systemd).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
if ! command -v logrotate >/dev/null 2>&1 && [ ! -x /usr/sbin/logrotate ]; then
    missing+=(logrotate)
fi
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing+=(prometheus)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    printf 'test: installing %s\n' "${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec bash scripts/with-postgres.sh cargo test --workspace --no-fail-fast "$@"
