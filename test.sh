#!/usr/bin/env bash
# The project's test command (README): build, Rust tests, then the interop
# suite (our binaries driven by the Apache RocketMQ C++ client from PyPI
# rocketmq==0.4.4). Expects .venv (created by .ci/run). Runs every stage even
# if an earlier one fails (except: no interop run without binaries), prints a
# summary and exits non-zero if any stage failed.
set -u
cd "$(dirname "$0")"

declare -a names=() results=()
overall=0
record() { names+=("$1"); results+=("$2"); [ "$2" = PASS ] || overall=1; }

echo "==> cargo build --release --bins"
if cargo build --release --bins; then build=PASS; else build=FAIL; fi
record "cargo build --release --bins" "$build"

echo "==> cargo test --release --workspace"
if cargo test --release --workspace; then record "cargo test --release --workspace" PASS
else record "cargo test --release --workspace" FAIL; fi

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "no $PY: run .ci/run (or: python3 -m venv .venv && .venv/bin/pip install -r tests/interop/requirements.txt)" >&2
    record "interop (pytest tests/interop)" "FAIL (no .venv)"
elif [ "$build" != PASS ]; then
    record "interop (pytest tests/interop)" "SKIPPED-FAIL (build failed)"
else
    echo "==> $PY -m pytest tests/interop -q"
    # A hard outer bound in case a C++ client call blocks where pytest-timeout's
    # signal cannot interrupt it.
    timeout -k 30 "${INTEROP_TIMEOUT:-2400}" "$PY" -m pytest tests/interop -q
    rc=$?
    case $rc in
        0) record "interop (pytest tests/interop)" PASS ;;
        5) record "interop (pytest tests/interop)" "FAIL (no tests collected)" ;;
        124|137) record "interop (pytest tests/interop)" "FAIL (timed out, rc=$rc)" ;;
        *) record "interop (pytest tests/interop)" "FAIL (pytest rc=$rc)" ;;
    esac
fi

echo
echo "==================== summary ===================="
for i in "${!names[@]}"; do printf '%-40s %s\n' "${names[$i]}" "${results[$i]}"; done
if [ $overall -eq 0 ]; then echo "ALL PASSED"; else echo "SOME STAGES FAILED"; fi
exit $overall
