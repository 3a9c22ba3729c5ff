#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the test suite.
#
#   scripts/pg-test-server.sh run -- CMD...   start, export NPUCENTER_TEST_POSTGRES_URL, run CMD,
#                                            stop (also when CMD fails or is interrupted)
#   scripts/pg-test-server.sh start          start and print `export NPUCENTER_TEST_POSTGRES_URL=...`
#   scripts/pg-test-server.sh stop           stop the server started by `start`
#
# Installs PostgreSQL with apt-get when it is missing (CI runs as root on a fresh machine),
# initdb's into a temporary directory as the postgres user, listens on 127.0.0.1 only, on a
# free port. NPUCENTER_TEST_POSTGRES_URL already set: `run` uses that server and starts none.
# NPUCENTER_SKIP_POSTGRES=1: `run` runs CMD without PostgreSQL (its tests are skipped).
set -euo pipefail

STATE_FILE="${TMPDIR:-/tmp}/npucenter-pg-test-server.state"

log() { echo "pg-test-server: $*" >&2; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
      log "PostgreSQL is not installed and we are not root: install it (apt-get install postgresql)"
      log "or set NPUCENTER_SKIP_POSTGRES=1 to skip the PostgreSQL tests"
      return 1
    fi
    log "installing PostgreSQL with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

as_pg() {  # run a command as the postgres user when we are root (initdb refuses root)
  if [[ $(id -u) -eq 0 ]] && command -v runuser >/dev/null; then
    runuser -u postgres -- "$@"
  elif [[ $(id -u) -eq 0 ]]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local bin dir port url
  bin=$(pg_bin)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/npucenter-pg.XXXXXX")
  chmod 755 "$dir"
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir"; fi
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  port=$(free_port)
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres npucenter_test
  url="postgresql://postgres@127.0.0.1:$port/npucenter_test"
  printf '%s\n%s\n%s\n' "$bin" "$dir" "$url" >"$STATE_FILE"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
  echo "export NPUCENTER_TEST_POSTGRES_URL=$url"
}

stop() {
  [[ -f "$STATE_FILE" ]] || { log "no server to stop"; return 0; }
  local bin dir
  bin=$(sed -n 1p "$STATE_FILE")
  dir=$(sed -n 2p "$STATE_FILE")
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir" "$STATE_FILE"
  log "stopped"
}

run() {
  [[ "${1:-}" == "--" ]] && shift
  if [[ "${NPUCENTER_SKIP_POSTGRES:-}" == "1" ]]; then
    log "NPUCENTER_SKIP_POSTGRES=1: running without PostgreSQL"
    exec "$@"
  fi
  if [[ -n "${NPUCENTER_TEST_POSTGRES_URL:-}" ]]; then
    exec "$@"
  fi
  STATE_FILE=$(mktemp "${TMPDIR:-/tmp}/npucenter-pg-run.XXXXXX")
  trap stop EXIT INT TERM
  local line
  line=$(start)
  export NPUCENTER_TEST_POSTGRES_URL="${line#export NPUCENTER_TEST_POSTGRES_URL=}"
  "$@"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 start|stop|run -- CMD..." >&2; exit 2 ;;
esac
