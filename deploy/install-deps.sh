#!/usr/bin/env bash
# Idempotently install what meterd needs on Debian/Ubuntu: the servers, then the package in .venv.
#   deploy/install-deps.sh          runtime + demo (influxdb, mosquitto)
#   deploy/install-deps.sh --test   also what the test suite needs (victoria-metrics, chromium, socat)
set -euo pipefail
cd "$(dirname "$0")/.."

want=(influxdb mosquitto mosquitto-clients python3-venv)
[[ "${1:-}" == "--test" ]] && want+=(victoria-metrics chromium socat)

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# python3-venv is only needed where the interpreter lacks venv (e.g. Debian's python3 without it).
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packages start system services on some hosts; meterd's demo and tests run their own instances
# on free loopback ports, so the system ones are left as the host configured them.

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  log=$(mktemp)
  { .venv/bin/python -m pip install -q --upgrade pip &&
    .venv/bin/python -m pip install -q -e '.[test]'; } >"$log" 2>&1 || { cat "$log"; exit 1; }
  rm -f "$log"
  rm -f .venv/.installed-*; touch "$stamp"
fi
