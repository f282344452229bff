"""The run configuration: everything that decides a run's numbers, with every default written once, here.

The CLI, a ``--config`` YAML file and ``iclkit.evaluate(...)`` all build a ``RunConfig`` through
``RunConfig.from_options`` from the same flat names (``shots``, ``methods``, ``knn_k``, ...), so they cannot disagree
on a default, and a misspelt name is an error naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from iclkit.analysis.paired import DEFAULT_REFERENCE
from iclkit.episodes import EpisodeConfig
from iclkit.errors import IclkitError
from iclkit.learners import check_options, entry, option_names
from iclkit.learners.options import FeatureOptions, MetaTrainOptions, check_names, coerce, run_wide
from iclkit.lm import ModelSpec
from iclkit.probes import LabelProbe, parse_label_probes
from iclkit.shots import ShotsRequest, parse_shots

# User-facing defaults: the built-in offline tasks, and every built-in method on the same episodes (compared
# with DEFAULT_REFERENCE).
DEFAULT_TASKS = ("movie-sentiment", "country-capital", "past-tense", "nationality")
DEFAULT_METHODS = ("icl", "protonet", "maml", "fomaml", "mann", "transformer", "knn", "linear")
# The default run (the default tasks: `iclkit run` with no arguments, the README's first command) meta-trains its
# meta-learners self-supervised (SMLMT) on the Lee news corpus alone: it ships in a pinned PyPI wheel, so the run
# needs no data folder and no hub, and its numbers do not depend on what sits beside the clone. Its budget is set by
# compute alone, for a fresh 2-core CPU to finish the whole run in about three minutes (issue 18;
# benchmarks/default_run.sh), where embedding texts with SmolLM2 and the outer loops are the fixed costs:
# meta_classes x meta_pool bounds the texts embedded (32 masked words x 8 sentences = 256; meta_query 4 keeps 4-shot
# episodes within 8 per word), and meta_steps 50 caps the outer loops: on this configuration's meta-validation
# episodes (held-out masked words; curves in manifest.json, methods.*.meta_val) every meta-learner peaked by step 25
# of 100 (three at step 0, their floor). No value here was chosen by accuracy on an evaluated task.
# Applied when the run names no protocol (meta_train / meta_train_tasks); an option given replaces its value here.
DEFAULT_RUN_PROTOCOL = {"meta_train": "self-supervised", "meta_train_tasks": ("lee-news",)}
DEFAULT_RUN_BUDGET = {"meta_classes": 32, "meta_pool": 8, "meta_query": 4, "meta_episodes": 200,
                      "meta_val_episodes": 32, "meta_steps": 50}

# flat name → (where it goes, field there)
_MODEL = {f.name: f.name for f in dataclasses.fields(ModelSpec)} | {"model": "name"}
_MODEL.pop("name")
_EPISODES = {"shots": "shots", "episodes": "n_episodes", "n_episodes": "n_episodes", "n_way": "n_way",
             "n_query": "n_query", "seed": "seed", "query_balance": "query_balance", "same_queries": "same_queries"}
_RUN = ("task", "tasks", "methods", "prompt", "text_field", "label_field", "reference", "calibration", "labels",
        "orders")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    model: ModelSpec = ModelSpec()
    episodes: EpisodeConfig = EpisodeConfig()
    methods: tuple[str, ...] = DEFAULT_METHODS
    prompt: str | None = None  # comma-separated prompt names or files: replace each task's own prompt(s)
    options: Mapping[str, Any] = field(default_factory=dict)  # learner and run-wide options (iclkit.learners.options)
    text_field: str | None = None
    label_field: str | None = None
    reference: str = DEFAULT_REFERENCE
    labels: tuple[LabelProbe, ...] = ("gold",)  # label probes of the support set (iclkit.probes), gold first
    orders: int = 1  # demonstration orders per episode for order-sensitive learners (1: as drawn)
    # --shots auto / 0,4,max: shot counts sized per task to the model's context window (episodes.shots is then unused)
    auto_shots: ShotsRequest | None = None

    def __post_init__(self) -> None:
        # RunConfig() is the default run: its meta-training is DEFAULT_RUN_PROTOCOL and DEFAULT_RUN_BUDGET (written
        # into options, so the manifest records them), unless the options name a protocol.
        if is_default_run(self.tasks) and not set(DEFAULT_RUN_PROTOCOL) & set(self.options):
            object.__setattr__(self, "options", {**DEFAULT_RUN_PROTOCOL, **DEFAULT_RUN_BUDGET, **self.options})

    @property
    def probing(self) -> bool:
        """Whether the run asks for label probes or extra orders (its records then carry ``labels``/``permutation``)."""
        return self.labels != ("gold",) or self.orders > 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        if not self.episodes.same_queries:  # as before the option existed: same configuration, same checkpoint key
            d["episodes"].pop("same_queries")
        if not self.probing:  # a run without probes keeps the configuration (and checkpoint key) it had before them
            d.pop("labels")
            d.pop("orders")
        else:
            d["labels"] = list(self.labels)
        d.pop("auto_shots")
        if self.auto_shots is not None:  # the request, as given; the manifest has the counts each task got
            d["episodes"]["shots"] = str(self.auto_shots)
        if not self.model.context_length:  # as before the option existed
            d["model"].pop("context_length")
        return d

    def prompt_names(self) -> tuple[str, ...] | None:
        """The prompts ``prompt`` picks (None: each task's own prompts)."""
        return _names(self.prompt, "prompt") if self.prompt is not None else None

    def check(self) -> None:
        """Fail before any work on an unknown method, option name, or option value."""
        check_options(list(self.options))
        for method in self.methods:
            spec = entry(method).options
            if spec is not None:
                spec.resolve(self.options)
        run_wide(FeatureOptions, self.options)
        run_wide(MetaTrainOptions, self.options)
        parse_label_probes(self.labels)
        if self.model.context_length < 0:
            raise IclkitError(f"must be ≥ 0 (0: the model's own), got {self.model.context_length}",
                              field="context_length")
        if isinstance(self.orders, bool) or not isinstance(self.orders, int) or self.orders < 1:
            raise IclkitError(f"must be a whole number ≥ 1, got {self.orders!r}", field="orders",
                              hint="--orders 4 evaluates each episode under its drawn order and 3 permutations")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, file: str | None = None) -> "RunConfig":
        """Inverse of ``to_dict``: the configuration a manifest's ``config`` records, rebuilt through
        ``from_options`` (so a bad value fails as it would on the command line, naming ``file``)."""
        if not isinstance(d, Mapping):
            raise IclkitError("expected an object", file=file, field="config")
        parts = {key: d.get(key) or {} for key in ("model", "episodes", "options")}
        for key, part in parts.items():
            if not isinstance(part, Mapping):
                raise IclkitError("expected an object", file=file, field=f"config.{key}")
        given = {**{("model" if k == "name" else k): v for k, v in parts["model"].items()}, **parts["episodes"],
                 **parts["options"], **{k: d[k] for k in _RUN if k in d}}
        return cls.from_options(given, file=file)

    @classmethod
    def from_options(cls, given: Mapping[str, Any], *, file: str | None = None) -> "RunConfig":
        """A config from flat names (CLI flags, a config file, keywords); what is not given keeps its default."""
        given = {str(k).replace("-", "_"): v for k, v in given.items() if v is not None}
        check_names(list(given), [*_MODEL, *_EPISODES, *_RUN, *option_names()], file=file)
        model = {_MODEL[k]: _typed(ModelSpec, _MODEL[k], v) for k, v in given.items() if k in _MODEL}
        run: dict[str, Any] = {}
        if "shots" in given and (request := parse_shots(given["shots"])) is not None:
            run["auto_shots"] = request
            given = {k: v for k, v in given.items() if k != "shots"}
        episodes = {_EPISODES[k]: _typed(EpisodeConfig, _EPISODES[k], v) for k, v in given.items() if k in _EPISODES}
        tasks = given.get("tasks", given.get("task"))
        if tasks is not None:
            run["tasks"] = _names(tasks, "task")
        if "methods" in given:
            run["methods"] = _names(given["methods"], "methods")
        if "calibration" in given:
            run["methods"] = with_calibration(run.get("methods", cls.methods),
                                              _names(given["calibration"], "calibration"))
        if "prompt" in given:
            run["prompt"] = ",".join(_names(given["prompt"], "prompt"))  # one or several prompts
        if "labels" in given:
            probes = parse_label_probes(given["labels"])
            run["labels"] = ("gold",) + tuple(p for p in probes if p != "gold")  # gold is always run: probes pair with it
        if "orders" in given:
            run["orders"] = coerce(given["orders"], int, "orders")
        for key in ("text_field", "label_field", "reference"):
            if key in given:
                run[key] = str(given[key])
        options = {k: v for k, v in given.items() if k not in _MODEL and k not in _EPISODES and k not in _RUN}
        config = cls(model=ModelSpec(**model), episodes=EpisodeConfig(**episodes), options=options, **run)
        config.check()
        return config


def is_default_run(tasks: tuple[str, ...]) -> bool:
    """Whether a run on ``tasks`` is the default run (the README's first command), with its own meta-training
    budget (``DEFAULT_RUN_BUDGET``) and, from the CLI, a score cache so that a second run reads its LM scores back."""
    return tuple(tasks) == DEFAULT_TASKS


def with_calibration(methods: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """``methods`` with each method that has calibration variants (``<method>+<name>``, e.g. icl+contextual)
    replaced by the variants ``names`` pick; ``none`` is the method itself (its raw scores)."""
    out: list[str] = []
    offered: set[str] = set()
    for method in methods:
        variants = entry(method).capabilities.variants
        if method not in variants:
            out.append(method)
            continue
        suffixes = {v.removeprefix(f"{method}+"): v for v in variants if v.startswith(f"{method}+")}
        offered |= set(suffixes)
        for name in names:
            if name != "none" and name not in suffixes:
                raise IclkitError(f"unknown calibration {name!r}", field="calibration",
                                  hint=f"one of none, {', '.join(suffixes)}")
        out += [method if name == "none" else suffixes[name] for name in names]
    if not offered:
        raise IclkitError("no method of the run has calibrated variants", field="calibration",
                          hint="calibration applies to in-context learning: add icl to --methods")
    return tuple(dict.fromkeys(out))


def _names(value: Any, name: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(x).strip() for x in items if str(x).strip())
    if not out:
        raise IclkitError("must name at least one", field=name)
    return out


def _typed(cls: type, name: str, value: Any) -> Any:
    kind = typing.get_type_hints(cls)[name]
    if typing.get_origin(kind) is tuple:  # shot counts
        items = value.split(",") if isinstance(value, str) else list(value) if not isinstance(value, int) else [value]
        try:
            return tuple(int(str(x).strip()) for x in items if str(x).strip())
        except ValueError:
            raise IclkitError(f"expected comma-separated integers, got {value!r}", field=name) from None
    return coerce(value, kind, name)
