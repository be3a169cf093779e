#!/usr/bin/env bash
# `make gpu-rehearsal`: deploy/gpu/bench_gpu.sh on the CPU, as it will run on the bare GPU machine.
#
# .gpu-rehearsal/machine: a Python 3.12 venv holding only what the GPU machine has (torch and
# torchvision from PyPI, whose Linux wheels also run on the CPU, opencv-python-headless, onnx,
# onnxruntime, numpy, scipy, matplotlib, pyyaml, pillow, prometheus-client, psutil, requests;
# versions from requirements.lock; made once, then reused). The carry (.gpu-carry, `make
# gpu-carry`) is installed from it exactly as the script does, and the script runs a short
# pass with --device cpu. Fails when a step fails, an accuracy check fails or the run ends early.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO="$PWD"
R="$REPO/.gpu-rehearsal"
PY312="${PYTHON312:-python3.12}"  # e.g. PYTHON312=~/.pyenv/versions/3.12.1/bin/python3.12
PY="${PYTHON:-python3}"
T0=$(date +%s)
log() { echo "gpu-rehearsal: $*" >&2; }

if [ ! -f "$R/machine/.complete" ]; then
  log "making the machine venv ($R/machine)"
  rm -rf "$R/machine" && mkdir -p "$R"
  "$PY312" -m venv "$R/machine"
  "$PY" deploy/gpu/carry.py machine >"$R/machine-requirements.txt"
  "$R/machine/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$R/machine-requirements.txt"
  touch "$R/machine/.complete"
fi
VENV_S=$(($(date +%s) - T0))

# what the carry brings must not be on the machine already, or the rehearsal proves nothing
"$R/machine/bin/python" - <<'PY'
import importlib.util, sys
sys.path.insert(0, ".")
from pipeline.common.bare import NOT_FOR_THE_BENCH
there = [m for m in ("ultralytics", "pydantic", *NOT_FOR_THE_BENCH) if importlib.util.find_spec(m)]
sys.exit(f"gpu-rehearsal: the machine venv has {there}" if there else 0)
PY

rm -rf "$R/out" "$R/site"
OUT="$R/out" PYTHON="$R/machine/bin/python" VIGIL_GPU_SITE="$R/site" VIGIL_CACHE="$R/cache" \
  VIGIL_GPU_BUDGET_S="${VIGIL_GPU_BUDGET_S:-400}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
  bash deploy/gpu/bench_gpu.sh --device cpu --imgsz 320 --batches 1,2 --seconds 0.3 \
  --accuracy-frames 1 --decode-workers 2 ${REHEARSAL_ARGS:-}

"$R/machine/bin/python" - "$R/out/bench-gpu.jsonl" "$VENV_S" "$T0" <<'PY'
import json, sys, time
recs = [json.loads(line) for line in open(sys.argv[1])]
bad = [r for r in recs if "error" in r]
bad += [r for r in recs if isinstance(r.get("accuracy"), dict) and not r["accuracy"]["ok"]]
bad += [r for r in recs if r["step"] == "accuracy" and r.get("ok") is False]
steps = {r["step"] for r in recs}
if "end" not in steps:
    bad.append({"missing": "end (the run stopped early)"})
took = time.time() - float(sys.argv[3])
print(f"gpu-rehearsal: {len(recs)} records, steps {sorted(steps)}; machine venv {sys.argv[2]} s, "
      f"whole rehearsal {took:.0f} s")
for r in bad:
    print("gpu-rehearsal: FAILED:", json.dumps(r)[:600])
sys.exit(1 if bad else 0)
PY
