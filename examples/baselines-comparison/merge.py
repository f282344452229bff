"""Merge the runs behind this example into one summary and one paired comparison against ICL.

    python examples/baselines-comparison/merge.py OUT RUN [RUN ...]

Each RUN is an ``iclkit run`` folder. Baseline methods are tagged with the run's embedding (``protonet[lm]``,
``protonet[minilm]``); ICL appears once. All runs share the seed, so they hold the same episodes: results are
rebuilt from records.jsonl and paired by episode hash (``iclkit.analysis.paired`` counts unpaired episodes as ``n_dropped``). When two
runs hold the same method on the same episode, the later run on the command line wins.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from iclkit.analysis.paired import COMPARISON_VERSION, compare, comparison_table
from iclkit.episodes import read_episodes
from iclkit.analysis.summary import SUMMARY_VERSION, markdown_table, summarize
from iclkit.types import EpisodeResult, Prediction


def load(run: Path) -> tuple[list[EpisodeResult], dict]:
    manifest = json.loads((run / "manifest.json").read_text())
    embed = manifest["config"]["options"].get("embed", "lm")
    labels = {ep.hash: ep.labels for ep in read_episodes(run / "episodes.jsonl")}
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in (run / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        method = rec["method"] if rec["method"] == "icl" else f"{rec['method']}[{embed}]"
        groups[(method, rec["episode_id"])].append({**rec, "method": method})
    results = []
    for (method, episode_id), recs in groups.items():
        r0 = recs[0]
        preds = tuple(Prediction(r["query_id"], r["gold"], r["prediction"], r["correct"], r.get("scores", {}),
                                 r.get("probs", {})) for r in recs)
        results.append(EpisodeResult(episode_id, r0["episode_hash"], r0["task"], method, r0["shots"],
                                     labels[r0["episode_hash"]], preds))
    return results, manifest


def main(out: str, *runs: str) -> None:
    by_key: dict[tuple[str, str], EpisodeResult] = {}
    manifests = {}
    for run in runs:  # a later run's results replace an earlier run's for the same tagged method and episode
        res, manifest = load(Path(run))
        by_key.update({(r.method, r.episode_id): r for r in res})
        manifests[run] = manifest
    results = list(by_key.values())
    summary = summarize(results)
    rows = compare(results)
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    provenance = {Path(k).name: {"config": m["config"], "episodes_hash": m["episodes_hash"], "model": m.get("model"),
                                 "versions": m.get("versions")} for k, m in manifests.items()}
    (dest / "summary.json").write_text(json.dumps({"version": SUMMARY_VERSION, "results": summary,
                                                   "runs": provenance}, indent=2) + "\n")
    (dest / "comparison.json").write_text(json.dumps({"version": COMPARISON_VERSION, "reference": "icl",
                                                      "rows": rows}, indent=2) + "\n")
    table = (markdown_table(summary) + "\n\n## Paired difference vs ICL (same episodes)\n\n"
             "difference = method − ICL accuracy on the same episode, mean over episodes, 95% bootstrap CI, "
             "paired permutation test (scipy.stats.permutation_test, permutation_type='samples').\n\n"
             + comparison_table(rows) + "\n")
    cfg = next(iter(manifests.values()))["config"]
    ep = cfg["episodes"]
    header = (f"# ICL vs meta-learning baselines on identical episodes\n\n"
              f"Tasks: {', '.join(sorted({r.task for r in results}))}; {ep['n_episodes']} episodes per shot count, "
              f"k ∈ {ep['shots']} demonstrations per class, all classes per episode, {ep['n_query']} queries per "
              f"episode, seed {ep['seed']}. ICL: SmolLM2-135M-Instruct (embedded GGUF, dequantized to fp32), "
              f"rank classification. `[lm]`: baselines on the same model's last-layer hidden states, mean-pooled; "
              f"`[minilm]`: on all-MiniLM-L6-v2 sentence embeddings. Meta-learners (protonet-proj, maml, fomaml, "
              f"mann, transformer) were meta-trained on 1,000 episodes drawn from up to 256 train texts per class of each task "
              f"(Adam: 300 steps; MANN and the in-context transformer 400 steps × 32 episodes). Everything ran on CPU in "
              f"fp32. "
              f"Accuracy: mean over episodes, 95% bootstrap CI. Runs: {', '.join(provenance)}.\n\n## Accuracy\n\n")
    (dest / "summary.md").write_text(header + table)


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
