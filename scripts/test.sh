#!/usr/bin/env bash
# The README's test command: install the peers the tests talk to, then run `cargo test`.
#
# On a fresh Debian or Ubuntu machine with Rust and python3 this is all it takes. As root it
# installs what is missing with apt; otherwise it prints the exact install line and exits 1.
# Extra arguments go to `cargo test` (`scripts/test.sh chat::` runs one theme).
set -euo pipefail
cd "$(dirname "$0")/.."

# command the tests run -> the Debian package that provides it
peers=(
  "ncat ncat"
  "socat socat"
  "python3 python3"
  "prlimit util-linux"
  "redis-server redis-server"
  "redis-cli redis-tools"
  "redis-benchmark redis-tools"
  "memcached memcached"
)

missing=()
for pair in "${peers[@]}"; do
  set -- $pair
  if ! command -v "$1" >/dev/null 2>&1; then
    case " ${missing[*]-} " in *" $2 "*) ;; *) missing+=("$2") ;; esac
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
  if [ "$(id -u)" -ne 0 ]; then
    echo "the tests need: ${missing[*]}" >&2
    echo "install them with: sudo apt-get update && sudo ${install[*]}" >&2
    exit 1
  fi
  echo "installing test peers: ${missing[*]}" >&2
  apt-get update -qq </dev/null
  DEBIAN_FRONTEND=noninteractive "${install[@]}" </dev/null
fi

exec cargo test "$@"
