#!/usr/bin/env bash
# Peak memory of `iclkit run` as a run grows (issue 18 §4). A baseline run (ProtoNet, kNN, linear probe on
# all-MiniLM-L6-v2 embeddings; no LM scoring) of RTE at 100, 300 and 1,000 episodes (4 shots), and at 300 episodes
# with 1 and 8 shots. Those runs share one cache, warmed first by a 1,000-episode run at 1, 4 and 8 shots, so they
# measure the run's own growth (episodes, records, features per episode) rather than embedding. Last, SST-2 at 100
# episodes with a fresh cache: a larger pool, every text embedded in the run. Prints one line per run: label,
# episodes, shots, distinct texts in its episodes, wall s, peak RSS (MB), from /usr/bin/time -f.
#
#   bash benchmarks/memory.sh        # (venv active, the data folder beside the clone or $ICLKIT_DATA_DIR)
#   SST2=0 bash benchmarks/memory.sh # without the fresh-cache SST-2 run
set -euo pipefail
command -v iclkit >/dev/null || { echo "activate the venv first: . .venv/bin/activate" >&2; exit 2; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TOKENIZERS_PARALLELISM=false
repo=$(cd "$(dirname "$0")/.." && pwd)
export ICLKIT_DATA_DIR="${ICLKIT_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data}"
unset ICLKIT_CACHE
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "load_before $(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"

one() {  # label home task episodes shots
    local label=$1 home=$2 task=$3 episodes=$4 shots=$5
    mkdir -p "$home"
    HOME="$home" /usr/bin/time -f "%e %M" -o "$work/$label.time" \
        iclkit run --task "$task" --methods protonet,knn,linear --embed minilm --episodes "$episodes" \
        --shots "$shots" --n-way 2 --n-query 16 --seed 0 --no-progress --out "$work/out-$label" \
        > "$work/$label.log" 2>&1 || { tail -20 "$work/$label.log" >&2; exit 1; }
    read -r wall peak < "$work/$label.time"
    local texts
    texts=$(python - "$work/out-$label/episodes.jsonl" <<'EOF'
import json, sys
seen = set()
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    for ex in e["support"] + e["query"]:
        seen.add(json.dumps(ex["fields"], sort_keys=True))
print(len(seen))
EOF
)
    echo "run=$label task=$task episodes=$episodes shots=$shots texts=$texts wall_s=$wall" \
         "peak_rss_mb=$((peak / 1024)) load=$(cut -d' ' -f1 /proc/loadavg)"
    rm -rf "$work/out-$label"
}

warm="$work/home-rte"
one rte-warm-up "$warm" rte 1000 1,4,8
for n in 100 300 1000; do one "rte-e$n-k4" "$warm" rte "$n" 4; done
one rte-e300-k1 "$warm" rte 300 1
one rte-e300-k8 "$warm" rte 300 8
[ "${SST2:-1}" = 0 ] || one sst2-e100-k4-fresh-cache "$work/home-sst2" sst2 100 4
