"""The ``iclkit`` command: parses arguments and calls the Python API; nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from iclkit.errors import IclkitError

RUN_DEFAULTS: dict[str, Any] = {
    "task": None, "model": "smollm2-135m-instruct", "revision": None, "dtype": "auto", "quantization": "none",
    "device": "auto", "batch_size": 0, "shots": "0,1,4", "episodes": 12, "n_way": None, "n_query": 16, "seed": 0,
    "methods": "icl,protonet,maml,fomaml,mann,transformer,knn,linear", "prompt": None, "normalize": "sum",
    "chat": False, "out": None, "text_field": None,
    "label_field": None, "embed": "lm", "embed_layer": -1, "pooling": "mean", "meta_train_tasks": None,
    "meta_episodes": 1000, "meta_pool": 256, "meta_steps": None, "trust_remote_code": False, "progress": True, "score_cache": None,
}


def _ints(text: Any, name: str) -> tuple[int, ...]:
    items = text if isinstance(text, list) else str(text).split(",")
    try:
        return tuple(int(str(x).strip()) for x in items if str(x).strip())
    except ValueError:
        raise IclkitError(f"expected comma-separated integers, got {text!r}", field=name) from None


def _names(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, list) else str(text).split(",")
    return tuple(str(x).strip() for x in items if str(x).strip())


def _read_config(path: str) -> dict[str, Any]:
    from iclkit.files import read_yaml

    raw = read_yaml(path, "config") or {}
    if not isinstance(raw, dict):
        raise IclkitError("a config file must hold a mapping", file=path)
    out = {}
    for key, value in raw.items():
        norm = str(key).replace("-", "_")
        if norm not in RUN_DEFAULTS:
            raise IclkitError("unknown option", file=path, field=str(key))
        out[norm] = value
    return out


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < --config file < explicit command-line options."""
    opts = dict(RUN_DEFAULTS)
    if args.config:
        opts.update(_read_config(args.config))
    opts.update({k: v for k, v in vars(args).items() if k in RUN_DEFAULTS and v is not None})
    return opts


def cmd_run(args: argparse.Namespace) -> int:
    from iclkit.episodes import EpisodeConfig
    from iclkit.lm.loading import ModelSpec
    from iclkit.runner.execute import DEFAULT_TASKS, RunConfig, run

    o = _run_options(args)
    config = RunConfig(
        tasks=_names(o["task"]) if o["task"] else DEFAULT_TASKS,
        model=ModelSpec(name=o["model"], revision=o["revision"], dtype=o["dtype"], quantization=o["quantization"],
                        device=o["device"], trust_remote_code=bool(o["trust_remote_code"]),
                        batch_size=int(o["batch_size"])),
        episodes=EpisodeConfig(shots=_ints(o["shots"], "shots"), n_episodes=int(o["episodes"]),
                               n_way=int(o["n_way"]) if o["n_way"] else None, n_query=int(o["n_query"]),
                               seed=int(o["seed"])),
        methods=_names(o["methods"]), prompt=o["prompt"],
        options={"normalize": o["normalize"], "chat": bool(o["chat"]), "embed": str(o["embed"]),
                 "embed_layer": int(o["embed_layer"]), "pooling": o["pooling"],
                 "meta_episodes": int(o["meta_episodes"]), "meta_pool": int(o["meta_pool"]),
                 **({"meta_train_tasks": _names(o["meta_train_tasks"])} if o["meta_train_tasks"] else {}),
                 **({"meta_steps": int(o["meta_steps"])} if o["meta_steps"] else {})},
        text_field=o["text_field"], label_field=o["label_field"],
    )
    from iclkit.runner.distributed import world

    result = run(config, o["out"], progress=bool(o["progress"]), score_cache=_score_cache(o["score_cache"]))
    if not world().main:
        return 0  # rank 0 alone prints and writes
    print(result.table())
    if o["out"]:
        print(f"\nwrote {o['out']}/ (records.jsonl, episodes.jsonl, manifest.json, summary.json)")
    return 0


def _score_cache(value: Any) -> str | None:
    if value in (None, False, ""):
        return None
    if value is True or value == "default":
        from iclkit.lm.scorecache import default_path

        return str(default_path())
    return str(value)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from iclkit.export.leaderboard import build, render, write

    board = build(args.runs, metrics=args.metric or (), reference=args.reference)
    if args.out:
        print(f"wrote {write(board, args.format, args.out)}")
    else:
        sys.stdout.write(render(board, args.format))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from iclkit.data.tasks import read_spec, registry

    print("| task | type | labels | prompt | description |\n|---|---|---|---|---|")
    for name, path in registry().items():
        s = read_spec(path)
        labels = ", ".join(s.labels) if s.labels else "(open answer)"
        print(f"| {name} | {s.type} | {labels} | {s.prompt} | {s.description} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclkit", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("run", help="evaluate methods on seeded few-shot episodes")
    r.add_argument("--config", help="YAML file with the same options (command-line options win)")
    r.add_argument("--task", help="registered name(s), task .yaml, or .jsonl/.csv file; comma-separated")
    r.add_argument("--model", help="'smollm2-135m-instruct' (embedded), hub id, local folder, or .gguf file")
    r.add_argument("--revision", help="hub revision (branch, tag or commit)")
    r.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    r.add_argument("--quantization", choices=["none", "8bit", "4bit"], help="bitsandbytes quantization")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=int, help="rows per forward pass (0: automatic, backs off on CUDA OOM)")
    r.add_argument("--shots", help="comma-separated shot counts, e.g. 0,1,4,8")
    r.add_argument("--episodes", type=int, help="episodes per shot count")
    r.add_argument("--n-way", type=int, help="classes per episode (default: all of the task's)")
    r.add_argument("--n-query", type=int, help="queries per episode")
    r.add_argument("--seed", type=int)
    r.add_argument("--methods", help="comma-separated methods: icl, protonet, protonet-proj, maml, fomaml, mann, "
                                     "transformer, knn, linear")
    r.add_argument("--embed", help="baselines' embeddings: 'lm' (the model's hidden states), 'minilm' (offline "
                                   "all-MiniLM-L6-v2), or a HF encoder id / folder")
    r.add_argument("--embed-layer", type=int, help="hidden-state layer for --embed lm (0 = embeddings, -1 = last)")
    r.add_argument("--pooling", choices=["mean", "last"], help="pool hidden states over tokens: mean or last token")
    r.add_argument("--meta-train-tasks", help="meta-train on these tasks' train splits (default: the task's own)")
    r.add_argument("--meta-episodes", type=int, help="meta-training episodes per task and method")
    r.add_argument("--meta-pool", type=int, help="train texts per class that meta-training episodes draw from")
    r.add_argument("--meta-steps", type=int, help="outer-loop steps for maml/fomaml/mann/protonet-proj")
    r.add_argument("--prompt", help="prompt name or .yaml file (default: the task's own)")
    r.add_argument("--normalize", choices=["sum", "mean"], help="label score: summed or per-token log-prob")
    r.add_argument("--chat", action="store_true", default=None, help="wrap prompts in the model's chat template")
    r.add_argument("--out", help="output folder (written only when the run succeeds)")
    r.add_argument("--text-field", help="input field(s) of a .jsonl/.csv task, comma-separated")
    r.add_argument("--label-field", help="label field of a .jsonl/.csv task")
    r.add_argument("--trust-remote-code", action="store_true", default=None)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    r.add_argument("--score-cache", nargs="?", const="default", metavar="FILE",
                   help="reuse LM scores from a sqlite cache (default file: $ICLKIT_CACHE/scores.sqlite)")
    r.set_defaults(func=cmd_run)
    lb = sub.add_parser("leaderboard", help="merge run folders into one table (md, csv, json) or HTML report")
    lb.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by `iclkit run --out`")
    lb.add_argument("--format", choices=["md", "csv", "json", "html"], default="md")
    lb.add_argument("--out", help="output file (default: standard output)")
    lb.add_argument("--metric", action="append", metavar="PATH",
                    help="your own `evaluate` metric script (.py) or folder; repeatable")
    lb.add_argument("--reference", default="icl", help="method the paired comparisons are made against")
    lb.set_defaults(func=cmd_leaderboard)
    t = sub.add_parser("tasks", help="list registered tasks")
    t.set_defaults(func=cmd_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except IclkitError as e:
        if args.debug:
            raise
        print(f"iclkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
