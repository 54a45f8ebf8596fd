#!/bin/sh
# The benchmark suite, run on purpose (never in CI), as root from anywhere:
#
#   benchmarks/run.sh [--quick]
#
# Installs what is missing (libhmsbeagle-dev, python3-matplotlib), builds
# persiste and the benchmark programs in build-bench/ (release), simulates
# the data once (fixed seeds, kept in build-bench/bench-data/), then times
# persiste, BEAGLE and a NumPy pruning side by side, reading speed, pattern
# compression on the bundled data and the scaling curves, and writes the
# tables with the machine's description to benchmarks/results/. Exits 1 if
# any two implementations disagree beyond 1e-9 relative.
# --quick: stops at 1,324 x 25,420, shorter scaling curves, results in
# build-bench/bench-results/ instead (~1.5 min once the data exist; the full
# run ~3 min, plus ~1.5 min the first time to simulate the data).
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BUILD=${BUILD:-build-bench}
DATA=$BUILD/bench-data
RAW=$BUILD/bench-raw.jsonl
B=$BUILD/benchmarks

SIZES="10x100 50x500 100x1000 200x2000 1324x25420 5000x50000"
BIG=5000x50000
BY_GENOMES="250x4000 500x4000 1000x4000 2000x4000 4000x4000 8000x4000"
BY_FAMILIES="500x2000 500x4000 500x8000 500x16000 500x32000 500x64000"
TAG=
RESULTS=benchmarks/results
if [ "${1:-}" = --quick ]; then
    SIZES="10x100 50x500 100x1000 200x2000 1324x25420"
    BIG=1324x25420
    BY_GENOMES="250x4000 1000x4000 4000x4000"
    BY_FAMILIES="500x2000 500x8000 500x32000"
    TAG=quick
    RESULTS=$BUILD/bench-results
fi

need=
dpkg -s libhmsbeagle-dev >/dev/null 2>&1 || need="$need libhmsbeagle-dev"
$PY -c 'import numpy' 2>/dev/null || need="$need python3-numpy"
$PY -c 'import matplotlib' 2>/dev/null || need="$need python3-matplotlib"
if [ -n "$need" ]; then
    apt-get install -y $need || { apt-get update && apt-get install -y $need; }
    [ ! -d "$BUILD" ] || meson setup --reconfigure "$BUILD"
fi
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=release
ninja -C "$BUILD" benchmarks/bench_suite benchmarks/fma_rate

echo "== simulating data (kept in $DATA)"
$PY benchmarks/simulate.py "$DATA" $SIZES $BY_GENOMES $BY_FAMILIES --gzip "$BIG"
EFM=data/efm-clade-powerbacgwas
HAR=data/harris2022-plants30
$PY benchmarks/simulate.py --real efm $EFM/efm_clade.tree.nwk \
    $EFM/efm_clade.gene_presence_absence.Rtab.gz 32 27 "$DATA"
$PY benchmarks/simulate.py --real harris $HAR/harris2022_dated_tree.nwk \
    $HAR/harris2022_pam.Rtab 0.14 0.35 "$DATA"

: >"$RAW"
run() { echo "== $*" >&2; "$@" | tee -a "$RAW" >&2; }
run $B/fma_rate 2
for s in $SIZES; do
    budget=0.5
    [ "$s" != 5000x50000 ] || budget=2
    run $B/bench_suite -b -t $budget -l $s $DATA/$s.nwk $DATA/$s.Rtab $DATA/$s.rates
    run $PY benchmarks/numpy_pruning.py --budget $budget --label $s \
        $DATA/$s.nwk $DATA/$s.Rtab $DATA/$s.rates
done
for f in $DATA/$BIG.Rtab $DATA/$BIG.Rtab.gz; do
    run $B/bench_suite -r 7 -l $BIG $DATA/$BIG.nwk $f
done
for name in efm harris; do
    case $name in
    efm) tree=$EFM/efm_clade.tree.nwk; table=$EFM/efm_clade.gene_presence_absence.Rtab.gz ;;
    *) tree=$HAR/harris2022_dated_tree.nwk; table=$HAR/harris2022_pam.Rtab ;;
    esac
    for t in "$name $table" "$name-unique $DATA/$name-unique.Rtab"; do
        set -- $t
        run $B/bench_suite -t 0.3 -l $1 $tree $2 $DATA/$name.rates
        run $PY benchmarks/numpy_pruning.py --budget 0.3 --label $1 $tree $2 $DATA/$name.rates
    done
done
for s in $BY_GENOMES; do
    run $B/bench_suite -t 0.3 -l scale-genomes $DATA/$s.nwk $DATA/$s.Rtab $DATA/$s.rates
done
for s in $BY_FAMILIES; do
    run $B/bench_suite -t 0.3 -l scale-families $DATA/$s.nwk $DATA/$s.Rtab $DATA/$s.rates
done
echo "== load average now: $(cat /proc/loadavg) (other jobs slow the 2-thread columns)" >&2
$PY benchmarks/report.py ${TAG:+--tag $TAG} "$RAW" "$RESULTS"
