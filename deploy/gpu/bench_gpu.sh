#!/usr/bin/env bash
# The detector figures of BENCHMARKS.md on a lent NVIDIA machine, in one call, from a bare
# machine: Python 3.12 with torch (CUDA), torchvision, opencv-python-headless, onnx,
# onnxruntime, numpy, scipy, matplotlib, pyyaml, pillow, prometheus-client, psutil, requests;
# offline; only the checkout and up to 64 MiB of git-ignored paths travel.
#
#   make gpu-carry                          # here, once: .gpu-carry/ (wheels + footage + weights)
#   bash deploy/gpu/bench_gpu.sh            # there, with .gpu-carry carried along
#   make gpu-rehearsal                      # here: the same on the CPU, in a venv holding
#                                           # only what the GPU machine has
#
# 1. Installs the carried wheels (.gpu-carry/wheels: what `vigil bench`'s detector path imports
#    and the machine lacks, pinned by requirements.lock; deploy/gpu/carry.py) with
#    `pip install --no-index --no-deps --target .vigil/gpu-site`: first on sys.path, beside the
#    machine's own site-packages (its torch), like a --system-site-packages venv but with no
#    need for ensurepip, and the same whether the interpreter is the machine's or a venv's.
# 2. Points VIGIL_ASSETS at the carried footage and yolov5n.pt.
# 3. Runs deploy/gpu/bench_gpu.py: one JSON line per figure in $OUT/bench-gpu.jsonl, written as
#    it goes (a run cut short keeps what it measured): accuracy of torch fp16 against the fp32
#    reference; torch detector-only frames/s at batch 1, 4, 8, 16, 32, the forward-pass ceiling
#    and the fraction reached; the same with CUDA graphs; ONNX Runtime's CUDA provider when the
#    installed build has it; CPU decode rate and the 5 fps cameras one GPU could carry (an
#    estimate: the pipeline run needs Kafka, which the machine lacks).
#
# Time: setup a few seconds, the steps within VIGIL_GPU_BUDGET_S (default 480 s, each step with
# its own share), the whole under `timeout` ${VIGIL_GPU_TIMEOUT_S:-540} s. Arguments are passed
# to bench_gpu.py (e.g. --device cpu --imgsz 320 --batches 1,2 --seconds 0.3 for a rehearsal).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO="$PWD"
T0=$(date +%s)
CARRY="${VIGIL_GPU_CARRY:-$REPO/.gpu-carry}"
SITE="${VIGIL_GPU_SITE:-$REPO/.vigil/gpu-site}"
OUTDIR="${OUT:-$REPO}"
JSONL="$OUTDIR/bench-gpu.jsonl"
PY="${PYTHON:-python3}"
BUDGET="${VIGIL_GPU_BUDGET_S:-480}"
log() { echo "bench_gpu: $*" >&2; }

DEVICE=cuda
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--device" ] && DEVICE="${args[$((i + 1))]:-cuda}"
done

[ -d "$CARRY/wheels" ] && [ -f "$CARRY/assets/models/yolov5n.pt" ] \
  || { log "$CARRY is missing or incomplete: run 'make gpu-carry' and carry .gpu-carry"; exit 2; }
mkdir -p "$OUTDIR"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || { log "no NVIDIA GPU here (use --device cpu to rehearse)"; exit 2; }
fi

# the carried wheels are for CPython 3.12 (pydantic-core is compiled)
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PYVER" = 3.12 ] || log "warning: $PY is Python $PYVER; the carried wheels are for 3.12"

# 1. the carried wheels, without an index and without resolving dependencies
rm -rf "$SITE" && mkdir -p "$SITE"
if "$PY" -m pip --version >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
    --target "$SITE" "$CARRY"/wheels/*.whl
else  # no pip: a wheel is a zip of what goes into site-packages
  log "no pip for $PY: unpacking the wheels"
  "$PY" - "$SITE" "$CARRY"/wheels/*.whl <<'PY'
import sys, zipfile
for whl in sys.argv[2:]:
    zipfile.ZipFile(whl).extractall(sys.argv[1])
PY
fi

# 2. the carried assets; exports go to the cache (the carried weights folder is read-only)
export VIGIL_ASSETS="$CARRY/assets"
export VIGIL_CACHE="${VIGIL_CACHE:-$REPO/.vigil/cache}"
export PYTHONPATH="$SITE:$REPO"
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
SETUP_S=$(($(date +%s) - T0))
printf '{"step": "setup", "took_s": %d, "python": "%s", "carry": "%s"}\n' \
  "$SETUP_S" "$PYVER" "$CARRY" \
  | tee -a "$JSONL"

# 3. the steps, in what is left of the budget
exec timeout "${VIGIL_GPU_TIMEOUT_S:-540}" "$PY" deploy/gpu/bench_gpu.py \
  --out "$JSONL" --budget-s "$((BUDGET - SETUP_S))" "$@"
