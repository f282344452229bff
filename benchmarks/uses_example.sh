#!/usr/bin/env bash
# The worked example of docs/probes-and-variance.md: ICL and every baseline on the same SST-2 and AG News
# episodes at 1/4/8 shots under gold, random and flipped support labels and 4 demonstration orders, then the
# leaderboard (md/html/json), the sample-size plans, and a learning curve up to the context window (--shots auto).
# CPU: about 80 minutes on 2 cores (the two tasks side by side, one torch thread each); ICL dominates: every
# (probe, order, prompt) is its own prompt prefix. Output: runs/uses/*.
set -euo pipefail
O="${OUT:-runs/uses}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
COMMON="--shots 1,4,8 --n-query 8 --seed 0 --embed minilm --labels gold,random,flipped --orders 4 --no-progress
  --methods icl,protonet,protonet-proj,maml,fomaml,mann,transformer,knn,linear"
# SST-2 under its three prompts (a template component in the variance decomposition), AG News under one
iclkit run --task sst2 --prompt sentiment,sentiment-opinion,sentiment-question --episodes 16 $COMMON --out "$O/sst2" &
iclkit run --task agnews --prompt agnews --episodes 12 $COMMON --out "$O/agnews"
wait
for f in md html json; do
  iclkit leaderboard "$O/sst2" "$O/agnews" --format $f --out "$O/leaderboard.$f"
done
iclkit plan "$O/sst2" --ci-width 0.1 > "$O/plan-sst2.md"
iclkit plan "$O/agnews" --ci-width 0.1 > "$O/plan-agnews.md"
# learning curve up to SmolLM2's 8,192-token window: 1, 2, 4, …, up to 62 shots per class on SST-2
iclkit run --task sst2 --prompt sentiment --shots auto --episodes 10 --n-query 8 \
  --seed 0 --embed minilm --methods icl,protonet,knn,linear --no-progress --out "$O/sst2-curve"
