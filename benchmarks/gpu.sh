#!/usr/bin/env bash
# The GPU checks and figures of docs/benchmarks.md ("On a GPU"), in one bounded pass for a borrowed machine:
#   1. the CUDA tests (tests/train/test_cuda.py: bf16/fp16 autocast, loss scaling, channels-last,
#      torch.compile, a GPU-trained run served on the CPU);
#   2. training throughput of the shipped recipes (benchmarks/bench_train.py) at each precision, memory
#      format and compile setting: model-only ceiling vs end-to-end through medtl's loader;
#   3. the wall time of whole runs of the small-cohort recipe (benchmarks/medmnist.py run --out: not the table).
# Every step has its own time limit, so one failure costs only its step; after each step every result so far
# is gathered into OUTDIR/gpu.json (run folders and per-step files stay in a scratch folder).
#   usage: bash benchmarks/gpu.sh OUTDIR        (needs a CUDA GPU and ../shared/data/medmnist)
set -u
OUT=${1:-benchmarks/out/gpu}
PARTS=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

gather() {  # every result so far -> $OUT/gpu.json (temp file, then rename)
    python -c '
import json, sys
from pathlib import Path
parts, dest = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(parts.glob("*.json")) + sorted((parts / "runs").glob("*.json"))
tmp = dest.with_suffix(".json.part")
tmp.write_text(json.dumps({p.stem: json.loads(p.read_text()) for p in files}, indent=2))
tmp.replace(dest)
print(f"{len(files)} results in {dest}")' "$PARTS" "$OUT/gpu.json"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
echo "CPUs: $(nproc)"

echo "== 1. CUDA tests"
timeout 240 python -m pytest -q -p no:cacheprovider tests/train/test_cuda.py 2>&1 | tail -20

echo "== 2. training throughput"
bench() {  # bench NAME CONFIG OVERRIDES...: 20 timed steps after 3 warm-up steps
    local name=$1 config=$2
    shift 2
    echo "-- $name"
    timeout 180 python benchmarks/bench_train.py --config "$config" --device cuda --steps 20 \
        --out "$PARTS/bench_$name.json" "$@" 2>&1 | grep -v "Loading dataset" | tail -4
    gather
}
bench lite0_96_b32_fp32 medmnist2d train.amp=off train.channels_last=false
bench lite0_96_b32_bf16_cl medmnist2d
bench lite0_96_b32_bf16_cl_compile medmnist2d train.compile=true
bench lite0_96_b256_bf16_cl medmnist2d train.batch_size=256
bench lite0_96_b256_fp32 medmnist2d train.batch_size=256 train.amp=off train.channels_last=false
bench lite0_i3d_64_b16_fp32 adrenalmnist3d_effnet_lite0_i3d train.amp=off train.channels_last=false
bench lite0_i3d_64_b16_bf16_cl adrenalmnist3d_effnet_lite0_i3d

echo "== 3. whole recipe runs (medtl's defaults on a GPU: bf16 autocast, channels-last)"
for args in "pneumoniamnist imagenet 0 --train-size 500" "retinamnist imagenet 0"; do
    echo "-- $args"
    # shellcheck disable=SC2086
    timeout 240 python benchmarks/medmnist.py run $args --threads 8 --out "$PARTS/runs" 2>&1 | tail -2
    gather
done
