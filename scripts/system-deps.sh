#!/usr/bin/env bash
# Debian packages the engines use: espeak-ng (robotic extra voices, phonemes), libspeexdsp1 (echo
# cancellation); chromium for tests/e2e.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# PostgreSQL server binaries: the storage tests start a throwaway cluster (initdb/pg_ctl)
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the playground browser tests (tests/e2e)
command -v baresip >/dev/null 2>&1 || missing+=(baresip)  # the SIP phone in tests/e2e/test_sip_call.py
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)  # tests/integration/test_gateway_replicas.py
# libspeexdsp: the echo canceller (openrealtime/audio/echo.py, loaded through ctypes)
ldconfig -p 2>/dev/null | grep -q 'libspeexdsp\.so\.1' || missing+=(libspeexdsp1)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "please install: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
