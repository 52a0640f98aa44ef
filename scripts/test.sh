#!/usr/bin/env bash
# The whole test suite, against a real PostgreSQL with the pgq extension.
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# Uses the server in PGQ_TEST_DSN when it is set; otherwise installs what is
# missing and starts a throwaway cluster for the run (scripts/with-postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/with-postgres.sh cargo test --workspace --no-fail-fast "$@"
