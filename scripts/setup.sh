#!/usr/bin/env bash
# Installs with apt-get what a fresh Debian 12 machine lacks to build and test aion.
# Idempotent: packages already installed are skipped; nothing is done when all are present.
set -euo pipefail

PKGS=(erlang-nox erlang-dev erlang-eunit erlang-common-test erlang-dialyzer erlang-proper erlang-proper-dev
      rebar3 libsqlite3-dev libjsmn-dev gcc make elixir)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
