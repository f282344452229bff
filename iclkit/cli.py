"""The ``iclkit`` command: parses arguments and calls the Python API; nothing else lives here."""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from iclkit.errors import IclkitError

# Options of `iclkit run` that are not part of the run's configuration (where to write, progress, score cache).
_CLI_ONLY = ("out", "progress", "score_cache", "dry_run")
_NOT_OPTIONS = ("func", "command", "debug", "config", "set")


def _read_config(path: str) -> dict[str, Any]:
    from iclkit.files import read_yaml

    raw = read_yaml(path, "config") or {}
    if not isinstance(raw, dict):
        raise IclkitError("a config file must hold a mapping", file=path)
    return {str(key).replace("-", "_"): value for key, value in raw.items()}


def _set_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise IclkitError(f"expected NAME=VALUE, got {pair!r}", field="set")
        out[name.strip().replace("-", "_")] = value.strip()
    return out


def _default_out(tasks: Sequence[str], model: str) -> Path:
    """runs/<tasks>-<model>-<timestamp>/ in the working directory."""
    slug = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:60] or "run"  # noqa: E731
    return Path("runs") / f"{slug('+'.join(Path(t).stem for t in tasks))}-{slug(Path(model).name)}-" \
                          f"{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_run(args: argparse.Namespace) -> int:
    from iclkit.runner.config import RunConfig, is_default_run
    from iclkit.runner.distributed import world
    from iclkit.runner.pipeline import run

    given = _read_config(args.config) if args.config else {}
    given.update({k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS and v is not None})
    given.update(_set_options(args.set))
    cli = {k: given.pop(k) for k in _CLI_ONLY if k in given}
    config = RunConfig.from_options(given, file=args.config if args.config else None)
    if cli.get("dry_run"):
        from iclkit.runner.dryrun import dry_run

        print(dry_run(config).text())
        return 0
    out = cli.get("out") or _default_out(config.tasks, config.model.name)
    if "score_cache" not in cli and is_default_run(config.tasks):  # a second default run reads its scores back
        cli["score_cache"] = "default"
    result = run(config, out, progress=bool(cli.get("progress", True)), score_cache=_score_cache(cli.get("score_cache")))
    if not world().main:
        return 0  # rank 0 alone prints and writes
    print(result.table())
    print(f"\nwrote {out}/ (records.jsonl, episodes.jsonl, manifest.json, summary.json)")
    return 0


def _score_cache(value: Any) -> str | None:
    if value in (None, False, ""):
        return None
    if value is True or value == "default":
        from iclkit.lm.scorecache import default_path

        return str(default_path())
    return str(value)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from iclkit.analysis.paired import DEFAULT_REFERENCE
    from iclkit.export.formats import render, write
    from iclkit.export.leaderboard import build

    board = build(args.runs, metrics=args.metric or (), reference=args.reference or DEFAULT_REFERENCE)
    if args.out:
        print(f"wrote {write(board, args.format, args.out)}")
    else:
        sys.stdout.write(render(board, args.format))
    if args.figures:
        from iclkit.export.figures import write_paper_figures

        paths = write_paper_figures(board, args.figures)
        print(f"wrote {len(paths)} figure files to {args.figures}/", file=sys.stdout if args.out else sys.stderr)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from iclkit.analysis.planning import check_plan_options, plan_records, plan_table
    from iclkit.export.leaderboard import read_run

    check_plan_options(args.ci_width, args.orders, args.interval)
    gold = [r for r in read_run(args.run).records if r.get("labels", "gold") == "gold"]  # every order, no probes
    print(plan_table(plan_records(gold, args.ci_width, orders=args.orders, interval=args.interval)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from iclkit.verify import verified_text, verify_run

    given = {k: getattr(args, k) for k in ("sample", "seed", "tolerance", "settings") if getattr(args, k) is not None}
    result = verify_run(args.run, **given, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(result.text())
    if not result.passed:
        print(f"iclkit: {args.run} does not verify: {verified_text(result.doc)}", file=sys.stderr)
    return 0 if result.passed else 1


def cmd_tasks(args: argparse.Namespace) -> int:
    from iclkit.data.tasks import read_spec, registry

    print("| task | type | labels | prompt(s) | description |\n|---|---|---|---|---|")
    for name, path in registry().items():
        s = read_spec(path)
        labels = ", ".join(s.labels) if s.labels else "(open answer)"
        print(f"| {name} | {s.type} | {labels} | {', '.join(s.prompts) or s.prompt} | {s.description} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; method, backend and format choices come from their registries."""
    from iclkit import learners
    from iclkit.lm.registry import available_backends
    from iclkit.analysis.paired import DEFAULT_REFERENCE
    from iclkit.runner.config import DEFAULT_METHODS

    parser = argparse.ArgumentParser(prog="iclkit", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("run", help="evaluate methods on seeded few-shot episodes")
    r.add_argument("--config", help="YAML file with the same options (command-line options win)")
    r.add_argument("--task", help="registered name(s), task .yaml, or .jsonl/.csv file; comma-separated")
    r.add_argument("--model", help="'smollm2-135m-instruct' (embedded), hub id, local folder, or .gguf file")
    r.add_argument("--backend", choices=available_backends(), help="LM backend (default: hf, transformers)")
    r.add_argument("--revision", help="hub revision (branch, tag or commit)")
    r.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    r.add_argument("--quantization", choices=["none", "8bit", "4bit"], help="bitsandbytes quantization")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=int, help="rows per forward pass (0: automatic, backs off on CUDA OOM)")
    r.add_argument("--shots", help="comma-separated shot counts, e.g. 0,1,4,8; 'auto' (1, 2, 4, ... and the largest k "
                                   "whose every prompt fits the model's context), 'max' in a list (e.g. 0,4,max), "
                                   "'auto:32' to cap k")
    r.add_argument("--context-length", type=int, help="treat the model's context window as this many tokens "
                                                      "(at most its own; 0: its own)")
    r.add_argument("--episodes", type=int, help="episodes per shot count")
    r.add_argument("--n-way", type=int, help="classes per episode (default: all of the task's)")
    r.add_argument("--n-query", type=int, help="queries per episode")
    r.add_argument("--seed", type=int)
    r.add_argument("--methods", help=f"comma-separated methods: {', '.join(learners.available())} (default: "
                                     f"{','.join(DEFAULT_METHODS)})")
    r.add_argument("--reference", help=f"method the others are compared with (default: {DEFAULT_REFERENCE})")
    r.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a learner option, e.g. knn_k=10 or maml_inner_lr=0.05 (repeatable; see "
                        "docs/learners-and-protocols.md)")
    r.add_argument("--embed", help="baselines' embeddings: 'lm' (the model's hidden states), 'minilm' (offline "
                                   "all-MiniLM-L6-v2), or a HF encoder id / folder")
    r.add_argument("--embed-layer", type=int, help="hidden-state layer for --embed lm (0 = embeddings, -1 = last)")
    r.add_argument("--pooling", choices=["mean", "last"], help="pool hidden states over tokens: mean or last token")
    r.add_argument("--meta-train", metavar="PROTOCOL",
                   help="where meta-learners train: auto (default: class-split for tasks with >= 8 classes, else "
                        "cross-task), cross-task (other tasks, never the evaluated task's corpus), class-split "
                        "(held-out classes are evaluated, the rest meta-trained on), in-task (the task's own classes), "
                        "self-supervised (SMLMT: masked-word tasks from unlabelled text)")
    r.add_argument("--meta-train-tasks", help="cross-task (or self-supervised) sources, comma-separated (default: "
                                              "every registered classification task outside the evaluated task's "
                                              "corpus)")
    r.add_argument("--allow-same-corpus", action="store_true", default=None,
                   help="let --meta-train-tasks name a task from the evaluated task's corpus (e.g. sst5 for sst2)")
    r.add_argument("--meta-episodes", type=int, help="meta-training episodes per task and method")
    r.add_argument("--meta-pool", type=int, help="train texts per class that meta-training episodes draw from")
    r.add_argument("--meta-steps", type=int, help="outer-loop steps for maml/fomaml/mann/protonet-proj")
    r.add_argument("--meta-val-episodes", type=int, help="meta-validation episodes from held-out meta-training data "
                                                         "(early stopping and --meta-search; 0: none)")
    r.add_argument("--meta-search", type=int, help="Optuna TPE trials per meta-learner on the meta-validation "
                                                   "episodes (default 0: the learners' defaults)")
    r.add_argument("--prompt", help="prompt name(s) or .yaml file(s), comma-separated; each runs on the same episodes "
                                    "(default: every prompt the task lists, see `prompts:` in its file)")
    r.add_argument("--calibration", help="ICL outputs, comma-separated: none (raw), contextual, dcpmi, batch "
                                         "(transductive); all from one scoring pass, e.g. none,contextual,dcpmi,batch")
    r.add_argument("--demos", help="ICL demonstrations per query from the episode's support: random (the episode's "
                                   "order), similar (KATE: most similar last, by --embed), interleaved (round-robin "
                                   "by label)")
    r.add_argument("--demos-per-query", type=int, help="with --demos similar: keep the M most similar (0: all)")
    r.add_argument("--normalize", choices=["sum", "mean"], help="label score: summed or per-token log-prob")
    r.add_argument("--chat", action="store_true", default=None, help="wrap prompts in the model's chat template")
    r.add_argument("--same-queries", action="store_true", default=None,
                   help="one query set per task shared by every episode (separates query from demonstration variance)")
    r.add_argument("--labels", help="label probes of the support set, comma-separated: gold, random, flipped, "
                   "unrelated (prompted learners only) (default: gold)")
    r.add_argument("--orders", type=int, help="demonstration orders per episode for order-sensitive learners "
                   "(default: 1, the order as drawn)")
    r.add_argument("--out", help="output folder, written only when the run succeeds "
                                 "(default: runs/<tasks>-<model>-<timestamp>)")
    r.add_argument("--text-field", help="input field(s) of a .jsonl/.csv task, comma-separated")
    r.add_argument("--label-field", help="label field of a .jsonl/.csv task")
    r.add_argument("--trust-remote-code", action="store_true", default=None)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    r.add_argument("--dry-run", action="store_true", default=None,
                   help="print what the run would do and cost (episodes, LM requests, tokens, texts to embed, an "
                        "estimated time from a short measurement here) without scoring anything or writing")
    r.add_argument("--score-cache", nargs="?", const="default", metavar="FILE",
                   help="reuse LM scores from a sqlite cache (default file: $ICLKIT_CACHE/scores.sqlite; the "
                        "default run, on the default tasks, uses it unless given another)")
    r.set_defaults(func=cmd_run)
    from iclkit.export.formats import available_formats  # formats registered before main() are offered too

    lb = sub.add_parser("leaderboard", help="merge run folders into one table (md, csv, json) or HTML report")
    lb.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by `iclkit run --out`")
    lb.add_argument("--format", choices=available_formats(), default="md",
                    help="built-in or registered with iclkit.export.formats.register_format")
    lb.add_argument("--out", help="output file (default: standard output)")
    lb.add_argument("--metric", action="append", metavar="PATH",
                    help="your own `evaluate` metric script (.py) or folder; repeatable")
    lb.add_argument("--reference", help="method the paired comparisons are made against (default: ICL)")
    lb.add_argument("--figures", metavar="DIR", help="also write paper figures (forest plots, learning curves) as "
                    "PNG, SVG and PDF at one- and two-column widths into DIR")
    lb.set_defaults(func=cmd_leaderboard)
    pl = sub.add_parser("plan", help="episodes (and orders) needed for a 95%% CI of a given width, per cell")
    pl.add_argument("run", metavar="RUN_DIR", help="a folder written by `iclkit run --out`")
    pl.add_argument("--ci-width", type=float, required=True, help="target full width of the 95%% CI, e.g. 0.05")
    pl.add_argument("--orders", type=int, help="demonstration orders per episode (default: as run)")
    pl.add_argument("--interval", default="generalizing", metavar="{generalizing,summary}",
                    help="the CI to size: over new demonstrations, orders, queries and templates (default), or the "
                         "one summary.json reports (bootstrap over episodes, these queries and templates fixed)")
    pl.set_defaults(func=cmd_plan)
    from iclkit.verify.settings import SETTINGS

    v = sub.add_parser("verify", help="re-score a seeded sample of a run under other settings (batch size, threads, "
                                      "processes, no score cache) and write the certificate RUN_DIR/verify.json")
    v.add_argument("run", metavar="RUN_DIR", help="a folder written by `iclkit run --out`")
    v.add_argument("--sample", type=int, metavar="N", help="episodes per task to re-score, seeded (default 8; 0: all)")
    v.add_argument("--seed", type=int, help="seed of the sample (default: the run's seed)")
    v.add_argument("--tolerance", type=float, help="largest |Δ| allowed in a re-scored number (default by the run's "
                                                   "precision: 1e-4 float32, 1e-2 float16, 5e-2 bfloat16 or quantized)")
    v.add_argument("--settings", help=f"comma-separated, from {','.join(SETTINGS)} (default: all)")
    v.set_defaults(func=cmd_verify)
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


def entry() -> NoReturn:
    """The ``iclkit`` console command: ``main``, then exit. Before exiting, every object still alive is moved out of
    the garbage collector's reach (``gc.freeze``): the interpreter's last collections would otherwise walk all the
    objects torch and transformers create on import, about 1 s on a 2-core CPU (``benchmarks/startup.py`` measures
    it), though a process's memory goes back to the system at exit anyway. Output files are written and closed by
    then; ``atexit`` handlers still run. Only the process's own entry point does this: ``main`` leaves the collector
    as it found it, for callers that go on."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
