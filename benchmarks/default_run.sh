#!/usr/bin/env bash
# The README's main job as a new user meets it (issue 18): `iclkit run` with no arguments, from an empty folder,
# with a fresh HOME (so a fresh ~/.cache/iclkit: the embedded model is converted, every text embedded and every
# meta-learner trained), no benchmark data folder and the hub offline; then the same command again with the cache
# warm. Prints wall seconds, CPU seconds and peak RSS (KB) of each, and the machine's load, from /usr/bin/time -f.
# Targets on a quiet 2-core CPU: cold ≤ 180 s and ≤ 2 GB, warm ≤ 60 s.
#
#   bash benchmarks/default_run.sh            # (with the venv active) prints cold_* and warm_* lines
#   LOG=cold.log bash benchmarks/default_run.sh   # also keeps what the cold run printed
set -euo pipefail
command -v iclkit >/dev/null || { echo "activate the venv first: . .venv/bin/activate" >&2; exit 2; }
LOG=${LOG:+$(realpath -m "$LOG")}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No data folder: ICLKIT_DATA_DIR pointing at a missing folder (unset, iclkit would find ../shared/data beside the
# working folder or the clone). ICLKIT_CACHE unset: the cache lives under the fresh HOME.
export HOME="$work/home" ICLKIT_DATA_DIR="$work/no-data"
unset ICLKIT_CACHE
mkdir -p "$HOME"
cd "$work"
echo "load_before $(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"
for pass in cold warm; do
    /usr/bin/time -f "%e %U %S %M" -o "$work/$pass.time" iclkit run --no-progress --out "$work/$pass" \
        > "$work/$pass.log" 2>&1 || { tail -20 "$work/$pass.log" "$work/$pass.time" >&2; exit 1; }
    read -r wall user sys peak < "$work/$pass.time"
    echo "${pass}_wall_s=$wall ${pass}_cpu_s=$(awk "BEGIN{print $user + $sys}") ${pass}_peak_rss_kb=$peak" \
         "load=$(cut -d' ' -f1 /proc/loadavg)"
done
[ -n "${LOG:-}" ] && cp "$work/cold.log" "$LOG"
# What the run used, as it printed it (the meta-training budget line names the protocol and its source).
grep -A1 "^Meta-training data" "$work/warm.log" | tail -1 || true
