#!/usr/bin/env bash
# Each meta-learner at its best under honest rules, against its floor on the same episodes (docs/learners-and-protocols.md "Meta-learners
# against their floors"): MiniLM features on SST-2, AG News, TREC, movie-sentiment (cross-task) and DBpedia 5-way
# (class-split), self-supervised (SMLMT) on SST-2 and AG News, SmolLM2 hidden states on SST-2 and AG News; 1/4/8
# shots, 30 episodes x 8 queries, seed 0. Meta-learners are early-stopped on meta-validation episodes (default
# settings; META_SEARCH=N adds an N-trial Optuna search per learner). Then benchmarks/floors.py pairs every
# meta-learner with ProtoNet (MAML, FOMAML, protonet-proj) or kNN (MANN, transformer) and prints the verdicts.
# Two folders per setting: <name>/ has every method, with MANN, the transformer and their bottleneck controls on
# 64 principal directions (their default before issue 16's measurement, kept to show what a bottleneck costs);
# <name>-seq/ has MANN, the transformer and the controls at their default (every direction) with kNN and ProtoNet.
# Output: runs/floors/*, runs/floors/floors.md, runs/floors/leaderboard.{md,html,json}. CPU, 2 cores: about 75 min.
set -euo pipefail
O="${OUT:-runs/floors}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
SEARCH="${META_SEARCH:-0}"
COMMON="--shots 1,4,8 --episodes 30 --n-query 8 --seed 0 --no-progress --reference protonet --set meta_search=$SEARCH"
ALL="--methods protonet,knn,linear,protonet-proj,maml,fomaml,mann,transformer,knn-bottleneck,protonet-bottleneck
     --set mann_input_dim=64 --set transformer_input_dim=64 --set bottleneck_input_dim=64"
SEQ="--methods protonet,knn,mann,transformer,knn-bottleneck,protonet-bottleneck"
run() {  # folder name, then iclkit run arguments; a finished run folder is kept (rerun: delete it)
  local name="$1"; shift
  [ -d "$O/$name" ] || { /usr/bin/time -f "$name: %e s wall, %M KB peak" iclkit run "$@" $COMMON \
                           --out "$O/$name" > "$O/$name.log" 2>&1; tail -1 "$O/$name.log"; }
}
both() {  # name, then the setting's arguments: every method (64-direction sequence inputs), then the -seq folder
  local name="$1"; shift
  run "$name" "$@" $ALL
  run "$name-seq" "$@" $SEQ
}
mkdir -p "$O"
chain_a() {
  both sst2-minilm --task sst2 --embed minilm
  both agnews-minilm --task agnews --embed minilm
  both trec-minilm --task trec --embed minilm
  both sst2-ssl-minilm --task sst2 --embed minilm --meta-train self-supervised
}
chain_b() {
  both movie-minilm --task movie-sentiment --embed minilm
  both dbpedia-minilm --task dbpedia --n-way 5 --embed minilm          # auto: class-split 7 / 7
  both agnews-ssl-minilm --task agnews --embed minilm --meta-train self-supervised
  both sst2-lm --task sst2 --embed lm
  both agnews-lm --task agnews --embed lm
}
chain_a & chain_b; wait
python benchmarks/floors.py "$O"/*/ | tee "$O/floors.md"
for f in md html json; do iclkit leaderboard "$O"/*/ --reference protonet --format $f --out "$O/leaderboard.$f"; done
