#!/usr/bin/env bash
# Browser end-to-end tests of the dashboard, for CI and people alike:
# installs what is missing (Debian's Chromium, the npm packages from the lock
# file), then runs the tests, which build and start the real hub.
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "# installing chromium (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium
fi

# Exactly the versions in the lock file.
npm ci --no-audit --no-fund

npm test
