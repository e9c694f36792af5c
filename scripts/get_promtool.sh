#!/usr/bin/env bash
# promtool (Prometheus's rule checker) into .tools/bin, for the alert-rule tests
# (tests/unit/test_deploy.py). PyPI has no promtool: it comes from Debian's
# `prometheus` package, unpacked, never installed. Optional: without it the
# promtool test is skipped and the other deploy checks still run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .tools/bin/promtool ] && exit 0
command -v apt-get >/dev/null || { echo "no apt-get: promtool not fetched"; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt's download user must be able to write the .deb
if (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    mkdir -p .tools/bin
    cp "$work/x/usr/bin/promtool" .tools/bin/promtool
    echo "promtool: $(.tools/bin/promtool --version 2>&1 | head -1)"
else
    echo "prometheus package not downloadable: promtool test will be skipped"
fi
