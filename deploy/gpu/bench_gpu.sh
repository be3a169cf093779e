#!/usr/bin/env bash
# The detector figures of BENCHMARKS.md on a lent NVIDIA machine, in one call:
#
#   bash deploy/gpu/bench_gpu.sh            # writes $OUT/BENCHMARKS-gpu.json (or ./ without $OUT)
#
# What it measures (all at imgsz 640, the converted yolov5n, frames of the shared footage):
#   * accuracy: torch (fp16) and TensorRT (fp16, when the tensorrt package is installed) against
#     ultralytics predict (fp32), frame by frame, with the tolerances of tests/test_backends.py;
#   * detector-only throughput per backend and batch size (letterbox on the CPU, uint8 upload
#     from pinned memory, colour/scale/inference/NMS on the GPU, one synchronisation per batch);
#   * the ceiling: the model's forward pass alone on an already uploaded batch, and the
#     fraction of it the whole detector reaches.
# The pipeline and naive figures need Kafka and the GStreamer camera simulator on the machine:
# run `make bench` there instead when it has them (this script does not start services).
#
# Offline by design: nothing is downloaded. Exports are cached under $VIGIL_CACHE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [ -z "${VIGIL_ASSETS:-}" ]; then
  for d in shared/assets ../shared/assets /work/shared/assets; do
    if [ -f "$d/models/yolov5n.pt" ]; then export VIGIL_ASSETS="$(cd "$d" && pwd)"; break; fi
  done
fi
[ -n "${VIGIL_ASSETS:-}" ] || { echo "bench_gpu: set VIGIL_ASSETS (folder with models/ and footage/)" >&2; exit 2; }
export VIGIL_CACHE="${VIGIL_CACHE:-$PWD/.vigil/cache}"
OUTDIR="${OUT:-.}"
PY="${PYTHON:-python3}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || { echo "bench_gpu: no NVIDIA GPU here" >&2; exit 2; }
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("bench_gpu: torch sees no CUDA device")
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY

BACKENDS=torch
if "$PY" -c "import tensorrt" 2>/dev/null; then BACKENDS=torch,tensorrt; fi
echo "bench_gpu: backends $BACKENDS" >&2

exec timeout "${VIGIL_GPU_BENCH_TIMEOUT_S:-540}" "$PY" -m pipeline.cli bench \
  --device cuda \
  --backends "$BACKENDS" \
  --pipeline-backend auto \
  --skip pipeline,gating,alerts \
  --imgsz 640 \
  --batch-sizes "${VIGIL_GPU_BATCHES:-1,4,8,16,32}" \
  --detector-seconds "${VIGIL_GPU_SECONDS:-5}" \
  --accuracy-frames 4 \
  --out "$OUTDIR/BENCHMARKS-gpu.json"
