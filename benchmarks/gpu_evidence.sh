#!/usr/bin/env bash
# One-shot GPU evidence: detection, ceilings, qk/pv harness, Llama-33B sweep, L2-flush A/B, FlexAttention,
# the GPU-marked tests and a README, all under ONE folder ready to commit as docs/results/<device>/.
#
#   benchmarks/gpu_evidence.sh                      # on the GPU: docs/results/<hardware key>/
#   benchmarks/gpu_evidence.sh --out DIR            # elsewhere
#   benchmarks/gpu_evidence.sh --only sweep,report  # rerun some parts into the same folder
#   benchmarks/gpu_evidence.sh --dry-run --out DIR  # CPU, tiny grid (what CI runs)
#   benchmarks/gpu_evidence.sh --budget 400         # whole-run wall-clock budget in s (default 560)
#
# Needs python3 with torch, transformers, pandas, seaborn, matplotlib, pyyaml (+ pytest for the tests
# part: if it is missing, the wheels in --wheels DIR, default benchmarks/wheels/, are unpacked into a
# temporary folder and put on PYTHONPATH; see benchmarks/README.md). No network, no snakemake.
#
# Every part runs in its own process with its own time limit (never past the budget, which keeps
# the last 30 s for the report) and writes its files as it finishes; a failing part does not stop
# the others. Exit status: a bit per failed or skipped part
# (env 1, ceilings 2, harness 4, sweep 8, flush_ab 16, harness_flex 32, tests 64, report 128).
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

PARTS=(env ceilings harness sweep flush_ab harness_flex tests report)
declare -A LIMIT=([env]=60 [ceilings]=90 [harness]=150 [sweep]=180 [flush_ab]=90 [harness_flex]=240
                  [tests]=240 [report]=60)
REPORT_RESERVE=30
OUT="" DRY="" ONLY="" WHEELS="$REPO/benchmarks/wheels" BUDGET=560 ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --dry-run) DRY="--dry-run"; shift ;;
        --only) ONLY=",$2,"; shift 2 ;;
        --wheels) WHEELS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "$OUT" ]; then
    OUT="$(python3 benchmarks/gpu_evidence.py label $DRY)" || { echo "cannot determine the output folder" >&2; exit 2; }
fi
mkdir -p "$OUT/logs" || exit 2
OUT="$(cd "$OUT" && pwd)"
echo "benchmarks/gpu_evidence.sh${ARGS:+ $ARGS}" >> "$OUT/command.txt"  # one line per run into this folder

if ! python3 -c "import pytest" 2>/dev/null && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    PYLIB="$(mktemp -d "${TMPDIR:-/tmp}/gpu-evidence-pylib.XXXXXX")"
    python3 -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
        "$PYLIB" "$WHEELS"/*.whl && export PYTHONPATH="$PYTHONPATH:$PYLIB"
    echo "pytest from the wheels in $WHEELS (unpacked to $PYLIB)"
fi

status=0
start_all=$SECONDS
for i in "${!PARTS[@]}"; do
    part="${PARTS[$i]}"
    if [ -n "$ONLY" ] && [[ "$ONLY" != *",$part,"* ]]; then
        continue
    fi
    left=$((BUDGET - (SECONDS - start_all)))
    limit=${LIMIT[$part]}
    if [ "$part" != report ]; then
        left=$((left - REPORT_RESERVE))
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        printf '%s\t%s\t%s\n' "$part" 125 0 >> "$OUT/parts.tsv"
        status=$((status | (1 << i)))
        echo "=== [$((i + 1))/${#PARTS[@]}] $part SKIPPED: the ${BUDGET} s budget is spent"
        continue
    fi
    echo "=== [$((i + 1))/${#PARTS[@]}] $part (limit ${limit} s) -> $OUT"
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" python3 benchmarks/gpu_evidence.py "$part" --out "$OUT" $DRY \
        2>&1 | tee "$OUT/logs/$part.log"
    rc=${PIPESTATUS[0]}
    secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)")
    printf '%s\t%s\t%s\n' "$part" "$rc" "$secs" >> "$OUT/parts.tsv"
    if [ "$rc" -ne 0 ]; then
        status=$((status | (1 << i)))
        echo "=== $part FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ': time limit'), ${secs} s); going on"
    else
        echo "=== $part done in ${secs} s"
    fi
done
echo "=== all parts: $((SECONDS - start_all)) s; exit status $status; README: $OUT/README.md"
exit "$status"
