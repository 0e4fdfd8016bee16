# Shared by scripts/test and scripts/demo. Sourced, not run.
# Makes .venv with the package installed (re-installing when pyproject.toml
# changes) and checks that redis-server is there.

need_python() {
  PY=${PYTHON:-python3}
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "error: $PY not found; Backstage needs Python 3.10 or newer (set PYTHON=/path/to/python3)" >&2
    exit 2
  fi
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: $("$PY" -V 2>&1) is too old; Backstage needs Python 3.10 or newer (set PYTHON=...)" >&2
    exit 2
  fi
}

# ensure_venv EXTRA: .venv with `pip install -e .[EXTRA]`, redone when pyproject.toml changes.
ensure_venv() {
  local extra=$1 stamp want
  need_python
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "$PY" -m venv .venv
  fi
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)-$extra"
  stamp=.venv/.backstage-installed
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing backstage[$extra] into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extra]"
    echo "$want" > "$stamp"
  fi
}

redis_missing_help() {
  cat >&2 <<'MSG'
error: redis-server is not installed (it is not on PATH).
Backstage's tests and demo start their own private redis-server (Redis 6.2 or newer). Get one with:
  Debian/Ubuntu:  sudo apt-get install redis-server
  macOS:          brew install redis
  Docker:         docker compose up -d   (then: export BACKSTAGE_REDIS_URL=redis://localhost:6379/0 for the demo)
MSG
}
