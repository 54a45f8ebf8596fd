#!/bin/sh
# Builds persiste_r.so, the .C shims of persiste.R, against the libpersiste
# that pkg-config finds (set PKG_CONFIG_PATH to an installed prefix's
# lib/pkgconfig, or to a build directory's meson-uninstalled/).
#
#   sh build.sh [OUTDIR]     (default: this directory)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"
# R CMD SHLIB puts its objects beside the source: compile a copy in OUTDIR.
[ "$out" -ef "$here" ] || cp "$here/persiste_r.c" "$out/"
cd "$out"
cflags=$(pkg-config --cflags persiste)
libs=$(pkg-config --libs persiste)
# An rpath for each -L directory, so that R's dyn.load finds
# libpersiste.so.0 outside the system's library path without LD_LIBRARY_PATH.
rpath=$(pkg-config --libs-only-L persiste | sed 's/-L\([^ ]*\)/-Wl,-rpath,\1/g')
PKG_CFLAGS="$cflags" PKG_LIBS="$libs $rpath" \
    R CMD SHLIB --preclean -o persiste_r.so persiste_r.c
