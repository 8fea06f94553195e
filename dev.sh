#!/usr/bin/env bash
# Developer entry point.  ./dev.sh demo | ./dev.sh test | ./dev.sh bench
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
  demo)
    deploy/install-deps.sh
    shift; exec .venv/bin/python -m simulators.demo "$@" ;;
  test)
    deploy/install-deps.sh --test
    shift
    .venv/bin/ruff check meterd simulators tests benchmarks dashboards
    .venv/bin/mypy meterd simulators
    .venv/bin/pytest -q "$@" ;;
  bench)
    deploy/install-deps.sh --test
    for b in benchmarks/*.py; do echo "== $b"; .venv/bin/python "$b"; done ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest args] | bench" >&2; exit 2 ;;
esac
