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

# Django 6's built-in Tasks framework (django.tasks) needs Python 3.12+. When
# such an interpreter is on this machine (PATH, or pyenv's versions), make
# .venvs/django6 with Django 6 and backstage in it, so that
# tests/test_django.py also runs the backend against django.tasks (the main
# .venv's Python may be older and test it through the django-tasks package).
find_python312() {
  local c
  for c in python3.14 python3.13 python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

ensure_django6_venv() {
  local py want stamp=.venvs/django6/.backstage-installed
  py=$(find_python312) || return 0
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)-$py"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  echo "==> installing Django 6 and backstage into .venvs/django6 ($("$py" -V 2>&1))" >&2
  rm -rf .venvs/django6
  "$py" -m venv .venvs/django6
  .venvs/django6/bin/python -m pip install --quiet --disable-pip-version-check "Django>=6" \
    pytest pytest-timeout pytest-benchmark hypothesis -e ".[django]"
  echo "$want" > "$stamp"
}
