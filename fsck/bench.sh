#!/bin/sh
# Speed report for rmq-fsck: check and repair of a >= 2 GiB store beside the
# disk's own sequential read speed, page cache dropped before each run (root).
# Usage: fsck/bench.sh [DIR] [SIZE_MIB]   (DIR must be on a real disk, not tmpfs)
set -eu
DIR=${1:-/work/fsck-bench}
MIB=${2:-2048}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/main/target-fsck}
cd "$(dirname "$0")/.."
cargo build --release -q -p fsck --bin rmq-fsck --example gen_store
BIN=$CARGO_TARGET_DIR/release/rmq-fsck
rm -rf "$DIR"; mkdir -p "$DIR"
$CARGO_TARGET_DIR/release/examples/gen_store "$DIR/store" "$MIB"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(cannot drop page cache)"; }
du -sh "$DIR/store"
echo "== dd: sequential read of the commit log files, cold cache"
drop
t0=$(date +%s.%N); cat "$DIR"/store/commitlog/* | dd of=/dev/null bs=4M 2>&1 | tail -1; t1=$(date +%s.%N)
echo "== rmq-fsck check, cold cache"
drop
/usr/bin/time -f "check wall %e s, max RSS %M KiB" "$BIN" check "$DIR/store" --quiet | tail -4
echo "== rmq-fsck repair (consume queues of one topic deleted, abort file present), cold cache"
rm -rf "$DIR/store/consumequeue/Bench1"; touch "$DIR/store/abort"
drop
/usr/bin/time -f "repair wall %e s, max RSS %M KiB" "$BIN" repair "$DIR/store" --quiet | tail -6
