"""Typed learner options: one namespace of option names, each with a type and a default written in one place.

A learner's options are fields of its own dataclass (``KNN.k``, ``MAML.inner_lr``): their types and defaults are read
from there, so the Python class, the API (``evaluate(knn_k=10)``) and the CLI (``--set knn_k=10``) share one
default. Users name them with the learner's prefix (``knn_k``); an ``OuterLoop`` field becomes ``<prefix>_steps``,
``<prefix>_lr`` and ``<prefix>_meta_batch``, which fall back to the run-wide ``meta_steps`` / ``meta_lr`` /
``meta_batch`` and then to the learner's own loop. Run-wide options (features, meta-training data) are the two
dataclasses below. An unknown name is an ``IclkitError`` naming it, the closest valid names, and where to look.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence, TypeVar

from iclkit.errors import IclkitError

T = TypeVar("T")
_LOOP_FIELDS = ("steps", "lr", "meta_batch")
MetaProtocol = Literal["auto", "cross-task", "class-split", "in-task", "self-supervised"]


@dataclass(frozen=True)
class FeatureOptions:
    """The frozen embeddings every baseline reads (one space per run, shared by all baselines)."""

    embed: str = "lm"  # 'lm' (the run's causal LM), 'minilm', or a HF encoder id / folder
    embed_layer: int = -1  # hidden-state layer for embed='lm' (0 = token embeddings, -1 = last)
    pooling: Literal["mean", "last"] = "mean"
    center: Literal["support", "none"] = "support"  # each episode centred on its own support mean (CL2N), or raw


@dataclass(frozen=True)
class MetaTrainOptions:
    """Where meta-training episodes come from and how many; the outer-loop budget shared by meta-learners.

    ``meta_train`` is the protocol (``iclkit.protocols``): ``auto`` splits the task's classes when it has enough of
    them, else meta-trains on other tasks; ``in-task`` (the evaluated task's own classes) and ``self-supervised``
    (masked-word tasks from unlabelled text, ``iclkit.smlmt``) only when asked.
    """

    meta_train: MetaProtocol = "auto"
    # cross-task / self-supervised sources (empty: all outside the corpus; self-supervised: 'lee-news' alone is
    # the Lee corpus only)
    meta_train_tasks: tuple[str, ...] = ()
    allow_same_corpus: bool = False  # let meta_train_tasks name a task of the evaluated task's corpus
    class_split_seed: int | None = None  # seed of the class-split (None: the run's seed)
    meta_episodes: int = 1000
    meta_pool: int = 256  # train texts per class that meta-training episodes draw from
    meta_classes: int | None = None  # most classes per meta-training source, a seeded sample (None: every class)
    meta_query: int = 8  # queries per class in a meta-training episode
    meta_val_episodes: int = 64  # meta-validation episodes from held-out classes / sources (early stopping, search)
    meta_search: int = 0  # Optuna TPE trials per meta-learner on meta-validation episodes (0: the learner's defaults)
    meta_steps: int | None = None  # outer-loop steps for every meta-learner (None: each learner's own)
    meta_lr: float | None = None
    meta_batch: int | None = None


RUN_WIDE: tuple[type, ...] = (FeatureOptions, MetaTrainOptions)


@dataclass(frozen=True)
class OptionSpec:
    """Which fields of a learner dataclass users may set, under which prefix, with per-registration defaults."""

    learner: type  # the learner dataclass the types and defaults come from
    fields: tuple[str, ...]
    prefix: str = ""  # option name = f"{prefix}_{field}" ('' → the field name itself)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # e.g. protonet-proj: projection_dim=128
    aliases: Mapping[str, str] = field(default_factory=dict)  # option suffix → field, e.g. dim → projection_dim

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}" if self.prefix else suffix

    def names(self) -> dict[str, str]:
        """Option name → learner field (loop fields map to 'loop.<field>')."""
        by_field = {f: s for s, f in self.aliases.items()}
        out = {}
        for f in self.fields:
            if f == "loop":
                out.update({self._name(x): f"loop.{x}" for x in _LOOP_FIELDS})
            else:
                out[self._name(by_field.get(f, f))] = f
        return out

    def value(self, name: str, options: Mapping[str, Any]) -> Any:
        """The value field ``name`` of a learner built with ``options`` gets: given, registered default, or the
        learner class's own default."""
        return self.resolve(options).get(name, next(f.default for f in dataclasses.fields(self.learner)
                                                    if f.name == name))

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the learner: the defaults, overridden by the options the user gave."""
        hints = typing.get_type_hints(self.learner)
        defaults = {f.name: f.default for f in dataclasses.fields(self.learner)}
        kwargs: dict[str, Any] = {}
        loop: dict[str, Any] = {}
        for name, target in self.names().items():
            if target.startswith("loop."):
                sub = target.split(".", 1)[1]
                value = options.get(name, options.get(f"meta_{sub}"))
                if value is not None:
                    loop_hints = typing.get_type_hints(type(defaults["loop"]))
                    loop[sub] = coerce(value, loop_hints[sub], name)
                continue
            if name in options:
                kwargs[target] = coerce(options[name], hints[target], name)
            elif target in self.defaults:
                kwargs[target] = self.defaults[target]
        if "loop" in self.fields:
            base = self.defaults.get("loop", defaults["loop"])
            kwargs["loop"] = dataclasses.replace(base, **loop) if loop else base
        return kwargs


def coerce(value: Any, kind: Any, name: str) -> Any:
    """``value`` as type ``kind`` (int, float, bool, str, Literal, Optional, tuple[str, ...]); else IclkitError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        return coerce(value, next(a for a in args if a is not type(None)), name)
    if origin is Literal:
        if value not in args:
            raise IclkitError(f"must be one of {', '.join(map(str, args))}; got {value!r}", field=name)
        return value
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(x).strip() for x in items if str(x).strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise IclkitError(f"expected true or false, got {value!r}", field=name)
    if kind in (int, float, str):
        if kind is not str and isinstance(value, bool):
            raise IclkitError(f"expected {kind.__name__}, got {value!r}", field=name)
        try:
            out = kind(value)
        except (TypeError, ValueError):
            raise IclkitError(f"expected {kind.__name__}, got {value!r}", field=name) from None
        if kind is int and isinstance(value, float) and value != out:
            raise IclkitError(f"expected an integer, got {value!r}", field=name)
        return out
    return value


def run_wide(cls: type[T], options: Mapping[str, Any]) -> T:
    """One of the run-wide option dataclasses, from the options the user gave."""
    hints = typing.get_type_hints(cls)
    given = {f.name: coerce(options[f.name], hints[f.name], f.name) for f in dataclasses.fields(cls)
             if f.name in options}
    return cls(**given)


def run_wide_names() -> list[str]:
    return [f.name for cls in RUN_WIDE for f in dataclasses.fields(cls)]


def check_names(given: Sequence[str], valid: Sequence[str], *, file: str | None = None) -> None:
    """Every name in ``given`` must be in ``valid``; else one IclkitError naming it and the closest valid names."""
    for name in given:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=3)
            hint = (f"did you mean {', '.join(close)}? " if close else "") + f"valid options: {', '.join(sorted(valid))}"
            raise IclkitError(f"unknown option {name!r}", file=file, field=name, hint=hint)
