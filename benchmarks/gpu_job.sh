#!/usr/bin/env bash
# One GPU session: iclkit throughput vs raw forward passes, then lm-eval vs a naive loop vs iclkit on 1,000 8-shot
# SST-2 docs with a random-init SmolLM2-135M-shaped model in bf16. Everything lands under $OUT.
#
# Carried (git-ignored) folder wheels/: lm-eval and the dependencies the GPU image lacks (*.whl, sdists), plus
# wheels/assets/tokenizer (SmolLM2 tokenizer files) and wheels/assets/sst2 (train/test jsonl). Fill it with:
#   pip download --no-deps --python-version 3.12 --only-binary=:all: -d wheels lm_eval datasets evaluate dill \
#     multiprocess more_itertools pytablewriter rouge-score nltk DataProperty mbstrdecoder pathvalidate tabledata \
#     tcolorpy typepy chardet && pip download --no-deps -d wheels sqlitedict word2number
# SMOKE=1 runs the same steps at toy sizes (CPU is fine) to check the script before spending GPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ICLKIT_CACHE="$WORK/cache" HF_HOME="$WORK/hf"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
ASSETS=wheels/assets
if [[ "${SMOKE:-0}" == 1 ]]; then
  SHAPE=tiny; MODELS=tiny; EPISODES=2; QUERIES=8; DOCS=6; DEVICE=${DEVICE:-cpu}; DTYPE=float32; LMEVAL_BS=8
else
  SHAPE=smollm2-135m; MODELS=smollm2-135m,llama-1b; EPISODES=16; QUERIES=64; DOCS=1000; DEVICE=${DEVICE:-cuda}
  DTYPE=bfloat16; LMEVAL_BS=64
fi

{
  echo "== install carried wheels"
  if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    $PY -m pip install --no-deps --no-build-isolation -q $(find wheels -maxdepth 1 -type f) 2>&1 | tail -3
  fi
  $PY - <<'EOF'
import importlib
for m in ("torch", "transformers", "accelerate", "lm_eval", "datasets", "evaluate", "sklearn", "yaml"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - report and go on
        print(m, "MISSING:", type(e).__name__, e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
} 2>&1 | tee "$OUT/env.txt"

echo "== gpu_throughput"
$PY benchmarks/gpu_throughput.py --models "$MODELS" --tokenizer "$ASSETS/tokenizer" --data "$ASSETS/sst2" \
  --episodes "$EPISODES" --queries "$QUERIES" --device "$DEVICE" --json "$OUT/gpu_throughput.json" 2>&1 \
  | tee "$OUT/gpu_throughput.md"

echo "== random-init $SHAPE model folder"
$PY - "$WORK/model" "$SHAPE" "$ASSETS/tokenizer" "$DTYPE" <<'EOF'
import sys
import torch
from transformers import AutoTokenizer
sys.path.insert(0, "benchmarks")
from gpu_throughput import random_model
folder, shape, tok, dtype = sys.argv[1:]
random_model(shape, getattr(torch, dtype), "cpu").save_pretrained(folder)
AutoTokenizer.from_pretrained(tok).save_pretrained(folder)
print("saved", folder)
EOF

echo "== icl_vs_lmeval ($DOCS docs)"
$PY benchmarks/icl_vs_lmeval.py --model "$WORK/model" --dtype "$DTYPE" --device "$DEVICE" --data "$ASSETS/sst2" \
  --n-docs "$DOCS" --lmeval-batch-size "$LMEVAL_BS" --json "$OUT/icl_vs_lmeval.json" 2>&1 | tee "$OUT/icl_vs_lmeval.md"
rm -rf "$WORK"
echo "== done: $OUT"
