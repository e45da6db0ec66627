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
  "kill procps"
  "tmux tmux"
  "redis-server redis-server"
  "nats-server nats-server"
  "redis-cli redis-tools"
  "redis-benchmark redis-tools"
  "memcached memcached"
  "dnsmasq dnsmasq-base"
  "haproxy haproxy"
  "systemd-socket-activate systemd"
  "systemd-analyze systemd"
  "man man-db"
  "openssl openssl"
  "gnutls-cli gnutls-bin"
  "stunnel4 stunnel4"
  "sockperf sockperf"
)

missing=()
for pair in "${peers[@]}"; do
  # Not `set --`: that would replace the arguments meant for `cargo test`.
  read -r command package <<<"$pair"
  # `type -P` looks on PATH only: `kill` is also a shell builtin, which the tests cannot run.
  if ! type -P "$command" >/dev/null 2>&1; then
    case " ${missing[*]-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
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

# The admin tests read /metrics with the Python prometheus_client parser. Debian's package
# serves Debian's python3; any other python3 (pyenv, a venv) gets it from pip.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  if [ "$(readlink -f "$(command -v python3)")" = "$(readlink -f /usr/bin/python3 2>/dev/null)" ]; then
    install=(apt-get install -y -qq --no-install-recommends python3-prometheus-client)
  else
    install=(python3 -m pip install -q prometheus_client)
  fi
  if [ "$(id -u)" -ne 0 ] && [ "${install[0]}" = apt-get ]; then
    echo "the tests need python3-prometheus-client: sudo ${install[*]}" >&2
    exit 1
  fi
  echo "installing the test parser: ${install[*]}" >&2
  if [ "${install[0]}" = apt-get ]; then apt-get update -qq </dev/null; fi
  DEBIAN_FRONTEND=noninteractive "${install[@]}" </dev/null
fi

# The bench tests read `--hdr-log` files back with the Python hdrhistogram package (`hdrh`), an
# HdrHistogram written by others. Debian has no package for it: pip installs it, into Debian's
# own python3 only past its "externally managed" guard (PEP 668), which other python3s lack.
if ! python3 -c 'import hdrh' 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    if [ "$(readlink -f "$(command -v python3)")" != "$(readlink -f /usr/bin/python3 2>/dev/null)" ] ||
      [ "$(id -u)" -ne 0 ]; then
      echo "the tests need pip for $(command -v python3) (Debian's: sudo apt-get install python3-pip)" >&2
      exit 1
    fi
    echo "installing pip for the test reader: apt-get install python3-pip" >&2
    apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip </dev/null
  fi
  install=(python3 -m pip install -q hdrhistogram)
  if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    install+=(--break-system-packages)
  fi
  echo "installing the test reader: ${install[*]}" >&2
  "${install[@]}" </dev/null
fi

# --- mdBook ------------------------------------------------------------------------------
# A test (tests/book.rs) builds the book under docs/ with `mdbook build`. Debian has no mdbook
# package, so it comes from crates.io: pinned, and --locked to the dependencies it was released
# with. Its default features (search, serve, watch) are for reading and live-reloading the book
# in a browser; `mdbook build` needs none of them, and without them it compiles in about two
# minutes on two cores.
mdbook_version=0.5.4
if ! type -P mdbook >/dev/null 2>&1; then
  echo "installing mdbook $mdbook_version (cargo install)" >&2
  cargo install mdbook --locked --version "$mdbook_version" --no-default-features </dev/null
  # cargo installs into its own bin directory, which is not always on PATH.
  if ! type -P mdbook >/dev/null 2>&1; then
    export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
  fi
fi
# --- end of mdBook -----------------------------------------------------------------------

exec cargo test "$@"
