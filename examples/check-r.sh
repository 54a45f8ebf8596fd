#!/usr/bin/env bash
# Builds the R shims with examples/R/build.sh against this build tree
# (pkg-config's uninstalled persiste.pc) and runs the R tests. Exit 77
# (skipped) when R is not installed.
#
#   check-r.sh BUILD_ROOT WORKDIR DATA_DIR
set -euo pipefail
if ! command -v Rscript >/dev/null || ! command -v R >/dev/null; then
    echo "skipped: R is not installed (Debian: r-base-core r-base-dev)"
    exit 77
fi
build=$1 work=$2 data=$3
r=$(cd "$(dirname "$0")" && pwd)/R
PKG_CONFIG_PATH=$build/meson-uninstalled sh "$r/build.sh" "$work"
exec Rscript "$r/test_persiste.R" "$work/persiste_r.so" "$r/persiste.R" "$data"
