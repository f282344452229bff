#!/usr/bin/env bash
# The README's headline comparison (docs/learners-and-protocols.md in full): ICL (raw, calibrated, KATE demonstrations) and every baseline on the same episodes,
# meta-learners under the disjoint default and, for SST-2 and DBpedia, under every protocol. CPU, 2 cores, two runs at a
# time, one torch thread each: 2 h 11 min (2026-12-03, nice -n 19 beside other jobs; the default-protocol meta-learners'
# weights were already cached by benchmarks/meta_learners.sh, which trains the same ones). Output: runs/fair/* (or
# $OUT), leaderboard.{md,html,json} there; the README's copy is examples/fair-comparison/.
set -euo pipefail
O="${OUT:-runs/fair}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
COMMON="--shots 1,4,8 --episodes 30 --n-query 8 --seed 0 --embed minilm --score-cache --no-progress"
BASE="--methods protonet,protonet-proj,maml,fomaml,mann,transformer,knn,linear"
META="--methods protonet-proj,maml,fomaml,mann,transformer"
CAL="--methods icl --calibration none,contextual,dcpmi,batch"
icl() {  # ICL runs, one after another
  iclkit run --task sst2 --prompt sentiment $COMMON $CAL --out "$O/sst2-icl"
  iclkit run --task agnews --prompt agnews $COMMON $CAL --out "$O/agnews-icl"
  iclkit run --task trec --prompt trec $COMMON --methods icl --out "$O/trec-icl"
  iclkit run --task dbpedia --n-way 5 $COMMON --methods icl --out "$O/dbpedia-icl"                      # class-split
  iclkit run --task sst2 --prompt sentiment $COMMON --methods icl --demos similar --out "$O/sst2-similar"
  # AG News: the 4 most similar demonstrations per query (full KATE prompts, 32 demonstrations for each of 8
  # queries, take about 2 minutes per episode at 8 shots on this CPU)
  iclkit run --task agnews --prompt agnews $COMMON --methods icl --demos similar --demos-per-query 4 \
      --out "$O/agnews-similar4"
}
baselines() {  # baseline runs, beside the ICL ones
  iclkit run --task sst2 $COMMON $BASE --out "$O/sst2-base"                                            # cross-task
  iclkit run --task agnews $COMMON $BASE --out "$O/agnews-base"
  iclkit run --task trec $COMMON $BASE --out "$O/trec-base"
  iclkit run --task sst2 --meta-train in-task $COMMON $META --out "$O/sst2-intask"
  iclkit run --task dbpedia --n-way 5 $COMMON $BASE --out "$O/dbpedia-base"                            # class-split
  iclkit run --task dbpedia --n-way 5 --meta-train cross-task $COMMON $BASE --out "$O/dbpedia-cross"
  iclkit run --task dbpedia --n-way 5 --meta-train in-task $COMMON $META --out "$O/dbpedia-intask"
}
icl & icl_pid=$!
baselines
wait "$icl_pid"  # a failed ICL run fails the script (a bare `wait` would ignore it)
# template spread: sst2's three prompts (12 episodes)
iclkit run --task sst2 --shots 1,4,8 --episodes 12 --n-query 8 --seed 0 --score-cache --no-progress --methods icl \
    --calibration none,contextual --out "$O/sst2-spread"
for f in md html json; do
  iclkit leaderboard "$O"/sst2-icl "$O"/sst2-similar "$O"/sst2-base "$O"/sst2-intask "$O"/agnews-icl \
      "$O"/agnews-similar4 "$O"/agnews-base "$O"/trec-icl "$O"/trec-base "$O"/dbpedia-icl "$O"/dbpedia-base \
      "$O"/dbpedia-cross "$O"/dbpedia-intask "$O"/sst2-spread --format $f --out "$O/leaderboard.$f"
done
