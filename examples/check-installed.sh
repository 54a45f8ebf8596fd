#!/usr/bin/env bash
# Builds an example the way a user's program is built: libpersiste is
# installed (meson install --destdir into STAGE), and the example is
# compiled with nothing but `cc $(pkg-config --cflags --libs persiste)`
# against that copy. Then check.sh runs it against the reference values.
#
#   check-installed.sh BUILD_ROOT STAGE EXAMPLE.c [ARG...] -- EXPECTATION...
set -euo pipefail
build=$1 stage=$2 src=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "$stage"
meson install -C "$build" --no-rebuild --quiet --destdir "$stage" >/dev/null
pc=$(find "$stage" -name persiste.pc | head -n 1)
[ -n "$pc" ] || { echo "FAIL: no persiste.pc installed under $stage"; exit 1; }
# The .pc names the final prefix; the sysroot makes its -I and -L point
# into the staged copy instead.
export PKG_CONFIG_PATH=${pc%/*} PKG_CONFIG_SYSROOT_DIR=$stage
flags=$(pkg-config --cflags --libs persiste)
exe=$stage/$(basename "$src" .c)
echo "cc $src $flags -lm -o $exe"
# shellcheck disable=SC2086 # the flags are words
${CC:-cc} "$src" $flags -lm -o "$exe"

# The staged library, not the build tree's, must be the one loaded.
libdir=$(pkg-config --libs-only-L persiste | sed 's/^-L//; s/ *$//')
export LD_LIBRARY_PATH=$libdir
ldd "$exe" | grep -F "libpersiste.so.0 => $stage" ||
    { echo "FAIL: $exe does not load the installed libpersiste"; exit 1; }
exec "$here/check.sh" "$exe" "$@"
