#!/usr/bin/env bash
# The prepared GPU check (issue 13), one command on a lent CUDA machine, run from the repository root:
#
#   mkdir -p data-carry && cp /usr/share/datasets/fashion-mnist/*.gz data-carry/    # here, once (git-ignored)
#   # device tool: command "bash scripts/gpu-check.sh", carry ["data-carry"], timeout_s 540
#
# It needs torch, tqdm, matplotlib and numba (the lent machine's python has them). Outputs go to $OUT:
# gpu.json / gpu.md (bench_gpu.py: AlexNet and VGG11 at 224 px, batch 128, fp32 and bf16, then channels-last
# and compile for PgA), the demo's wall time with --device cuda (attack stages, shipped zoo models), and the
# distributed path on CUDA (issue 12): the demo's attack stage under torchrun --nproc-per-node 1 (NCCL) against
# a plain process, per-query AP compared (bench_distributed.py --checks attack).
set -euo pipefail
export PYTHONPATH=src
export ROBUSTHASH_FASHION_MNIST="${ROBUSTHASH_FASHION_MNIST:-$PWD/data-carry}"
out="${OUT:-runs/gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
timeout 330 python3 benchmarks/bench_gpu.py --device cuda --out "$out/gpu.json" --markdown "$out/gpu.md" \
  --variants plain,channels_last || echo "bench_gpu stopped early (rows so far are in $out/gpu.json)"
start=$(date +%s)
timeout 120 python3 -m robusthash.cli demo --device cuda --out "$out/demo" --quiet > "$out/demo.log" 2>&1 \
  || echo "demo stopped early"
echo "demo wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/demo.log"
tail -12 "$out/demo.log"
timeout 90 python3 benchmarks/bench_distributed.py --device cuda --nproc 1 --checks attack \
  --out "$out/distributed.json" || echo "bench_distributed stopped early"
