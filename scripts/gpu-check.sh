#!/usr/bin/env bash
# The prepared GPU check (issue 13), one command on a lent CUDA machine, run from the repository root:
#
#   mkdir -p data-carry && cp /usr/share/datasets/fashion-mnist/*.gz data-carry/    # here, once (git-ignored)
#   # device tool: command "bash scripts/gpu-check.sh", carry ["data-carry"], timeout_s 540
#
# It needs torch, tqdm, matplotlib and numba (the lent machine's python has them). Outputs go to $OUT:
# gpu.json / gpu.md and gpu-baselines.json / .md (bench_gpu.py: AlexNet at 224 px, batch 128, fp32 and bf16,
# channels-last for PgA), the demo's wall time with --device cuda (attack stages, shipped zoo models), and the
# distributed path on CUDA (issue 12): the demo's attack stage under torchrun --nproc-per-node 1 (NCCL) against
# a plain process, per-query AP compared (bench_distributed.py --checks attack).
set -euo pipefail
export PYTHONPATH=src
export ROBUSTHASH_FASHION_MNIST="${ROBUSTHASH_FASHION_MNIST:-$PWD/data-carry}"
out="${OUT:-runs/gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# PgA and PGA-dagger at T = 100 in fp32 and bf16, contiguous and channels-last, each with and without cuDNN
# autotuning (seconds on a GPU), then the four baselines at their published 1,500-2,000 iterations (minutes: bf16
# first, the fp32 rows exist from earlier runs).
# Each run times its own bare passes, so every ratio is measured side by side within one run.
timeout 90 python3 benchmarks/bench_gpu.py --device cuda --backbones alexnet --attacks pga,pga-dagger \
  --precisions fp32,bf16 --variants plain,channels_last,plain+autotune,channels_last+autotune \
  --out "$out/gpu.json" --markdown "$out/gpu.md" \
  || echo "bench_gpu (PgA) stopped early (rows so far are in $out/gpu.json)"
timeout 240 python3 benchmarks/bench_gpu.py --device cuda --backbones alexnet --attacks hag,dhta,p2p,sdha \
  --precisions bf16,fp32 --variants plain --out "$out/gpu-baselines.json" --markdown "$out/gpu-baselines.md" \
  || echo "bench_gpu (baselines) stopped early (rows so far are in $out/gpu-baselines.json)"
start=$(date +%s)
timeout 120 python3 -m robusthash.app.cli demo --device cuda --out "$out/demo" --quiet > "$out/demo.log" 2>&1 \
  || echo "demo stopped early"
echo "demo wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/demo.log"
tail -12 "$out/demo.log"
timeout 90 python3 benchmarks/bench_distributed.py --device cuda --nproc 1 --checks attack \
  --out "$out/distributed.json" || echo "bench_distributed stopped early"
