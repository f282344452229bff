#!/usr/bin/env bash
# Peak memory of `iclkit run` as a run grows (issue 18 §4): a baseline run (ProtoNet, kNN, linear probe on
# all-MiniLM-L6-v2 embeddings of SST-2; no LM scoring) at 100, 300 and 1,000 episodes, at 1 and 8 shots, with a
# 5-way task whose pool is larger (AG News) beside it, and the 1,000-episode run again with the in-RAM embedding
# cache bounded to 8 MiB (ICLKIT_EMBED_MEMORY_MB; the rest of the vectors stay on disk). Every run starts with a
# fresh cache (fresh HOME), so it embeds all its texts. Prints one line per run: label, episodes, shots, texts
# embedded, wall s, peak RSS (MB), from /usr/bin/time -f.
#
#   bash benchmarks/memory.sh                 # (venv active, the data folder beside the clone or $ICLKIT_DATA_DIR)
#   SIZES="100 1000" EXTRAS=0 bash benchmarks/memory.sh   # only the episode sizes
set -euo pipefail
command -v iclkit >/dev/null || { echo "activate the venv first: . .venv/bin/activate" >&2; exit 2; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TOKENIZERS_PARALLELISM=false
repo=$(cd "$(dirname "$0")/.." && pwd)
export ICLKIT_DATA_DIR="${ICLKIT_DATA_DIR:-$(cd "$repo/.." && pwd)/shared/data}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "load_before $(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"

one() {  # label task episodes shots n_way [extra env]
    local label=$1 task=$2 episodes=$3 shots=$4 nway=$5
    local home="$work/home-$label"
    mkdir -p "$home"
    HOME="$home" ICLKIT_CACHE= /usr/bin/time -f "%e %M" -o "$work/$label.time" \
        iclkit run --task "$task" --methods protonet,knn,linear --embed minilm --episodes "$episodes" \
        --shots "$shots" --n-way "$nway" --n-query 16 --seed 0 --no-progress --out "$work/out-$label" \
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
    echo "run=$label task=$task episodes=$episodes shots=$shots n_way=$nway texts=$texts wall_s=$wall" \
         "peak_rss_mb=$((peak / 1024)) embed_memory_mb=${ICLKIT_EMBED_MEMORY_MB:-default} load=$(cut -d' ' -f1 /proc/loadavg)"
}

for n in ${SIZES:-100 300 1000}; do one "sst2-e$n-k4" sst2 "$n" 4 2; done
[ "${EXTRAS:-1}" = 0 ] && exit 0
one sst2-e300-k1 sst2 300 1 2
one sst2-e300-k8 sst2 300 8 2
one agnews-e300-k4 agnews 300 4 4
ICLKIT_EMBED_MEMORY_MB=8 one sst2-e1000-k4-bounded sst2 1000 4 2
