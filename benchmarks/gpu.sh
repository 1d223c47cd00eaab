#!/bin/sh
# One-shot GPU benchmark for a lent CUDA machine (see benchmarks/gpu.py):
#   sh benchmarks/gpu.sh [OUTDIR [ARGS...]]   (default OUTDIR: $OUT, else ./gpu-results)
# Writes OUTDIR/gpu.json (results, saved after every configuration), gpu.log (progress + table),
# gpu.md (the BENCHMARKS.md section) and nvidia-smi.txt. Expected ~3-5 min (an estimate: not yet run on
# a GPU); the script starts no configuration after 7.5 min and `timeout` ends it at 8 min. Back here:
#   python -m benchmarks.gpu --from-json OUTDIR/gpu.json --write-benchmarks
set -u
out="${OUT:-gpu-results}"
if [ $# -gt 0 ]; then out="$1"; shift; fi   # the rest goes to benchmarks.gpu (e.g. --no-compile)
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 2
cd "$(dirname "$0")/.." || exit 2
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || { echo "no python with torch found (set PYTHON=...)" | tee "$out/gpu.log"; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi > "$out/nvidia-smi.txt" 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
limit=""
command -v timeout >/dev/null 2>&1 && limit="timeout -k 20 480"
$limit "$py" -m benchmarks.gpu --out "$out/gpu.json" "$@" > "$out/gpu.log" 2>&1
rc=$?
[ -f "$out/gpu.json" ] && "$py" -m benchmarks.gpu --from-json "$out/gpu.json" > "$out/gpu.md" 2>>"$out/gpu.log"
tail -n 60 "$out/gpu.log"
echo "gpu.sh: exit $rc; results in $out/"
exit $rc
