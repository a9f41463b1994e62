#!/usr/bin/env sh
# Installs what the tests need, makes sure PostgreSQL is up, and runs the whole suite.
# Usage: sh scripts/test.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."
python -m pip install -q -r requirements-dev.txt
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Browser tests drive Debian's chromium; install it when it is missing (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || \
     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
     echo "warning: could not install chromium; browser tests will fail" >&2
fi
# The watcher's decrypt step drives Debian's gpg (python-gnupg); install it when missing.
if ! command -v gpg-agent >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q gpg gpg-agent >/dev/null 2>&1 || \
     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q gpg gpg-agent >/dev/null 2>&1)) || \
     echo "warning: could not install gpg; watcher decrypt tests will fail" >&2
fi
# tus-js-client for tests/tus/test_js_client.py: Debian's node, the npm lock file's versions.
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q nodejs npm >/dev/null 2>&1 || \
     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nodejs npm >/dev/null 2>&1)) || \
     echo "warning: could not install node; tus-js-client tests will fail" >&2
fi
if command -v npm >/dev/null 2>&1; then
    (cd tests/tus/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || \
     echo "warning: npm ci failed in tests/tus/js; tus-js-client tests will fail" >&2
fi
exec python -m pytest "$@"
