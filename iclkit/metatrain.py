"""Meta-training episodes, drawn under a protocol (``iclkit.protocols``), and the data budget they amount to.

Each episode lists its classes in a freshly shuffled order, and every baseline maps a class to the index of its
position in ``Episode.labels``, so the class-to-index assignment is permuted per episode and no head can memorize
class identity. Episodes are ordinary ``Episode`` objects, so their hash identifies the training data.

No leakage, by content. Under ``cross-task`` and ``class-split`` the meta-training pool never holds a text that the
evaluation could show: ``text_key`` (case-folded, everything but letters and digits removed, so SST's tokenized
``it 's`` matches ``it's``) of every evaluation example, support or query, and of every example of the evaluated task
whose class is evaluated, in its train *and* test split, is banned from every source, whatever task it is filed
under. ``in-task`` is the old behaviour, kept exactly: the task's own train split minus the evaluation queries (its
support texts can be meta-training texts too; that protocol is not disjoint by construction).

The budget (``TrainingData``) is counted from the episodes a learner trained on: distinct labelled texts
(task, text, label) over their supports and queries, the tasks and the classes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import torch

from iclkit.errors import IclkitError
from iclkit.learners.options import MetaTrainOptions
from iclkit.protocols import MetaTrainPlan
from iclkit.types import Episode, Example, content_key

_NOT_ALNUM = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class MetaTrainConfig:
    """How many training episodes, and their shape. ``pool_per_class`` caps the train texts that get embedded.

    ``n_val_episodes`` meta-validation episodes are drawn from data held out of the training pools (see
    ``split_pools``); meta-learners early-stop and tune on them, never on the evaluated task."""

    n_episodes: int = 1000
    n_way: int = 2
    shots: tuple[int, ...] = (1, 4, 8)
    n_query: int = 8  # per class
    pool_per_class: int = 256
    max_classes: int | None = None  # per source, a seeded sample of the classes with enough texts (None: all)
    seed: int = 0
    n_val_episodes: int = 64
    val_fraction: float = 0.25  # of the classes (or sources, or texts) held out for meta-validation


def text_key(e: Example) -> str:
    """What an example says, normalized to compare across tasks and tokenizations: its fields' values (sorted by
    field name) joined, case-folded, every non-alphanumeric character removed."""
    return _NOT_ALNUM.sub("", " ".join(v for _, v in sorted(e.fields.items())).casefold())


@dataclass(frozen=True)
class TrainingData:
    """What meta-training episodes hold: distinct labelled texts, episodes, source tasks, classes (``task:label``)."""

    n_texts: int
    n_episodes: int
    tasks: tuple[str, ...]
    classes: tuple[str, ...]
    n_val_episodes: int = 0  # of n_episodes, the meta-validation ones
    val_classes: tuple[str, ...] = ()  # classes of the meta-validation episodes
    val_novel_classes: tuple[str, ...] = ()  # of val_classes, those no meta-training episode holds

    @classmethod
    def of(cls, episodes: Sequence[Episode]) -> "TrainingData":
        texts = {(source_task(ep), content_key(e), e.label) for ep in episodes for e in (*ep.support, *ep.query)}
        classes = {f"{source_task(ep)}:{lab}" for ep in episodes for lab in ep.labels}
        val = [ep for ep in episodes if is_validation(ep)]
        val_classes = {f"{source_task(ep)}:{lab}" for ep in val for lab in ep.labels}
        trained = {f"{source_task(ep)}:{lab}" for ep in episodes if not is_validation(ep) for lab in ep.labels}
        return cls(len(texts), len(episodes), tuple(sorted({source_task(ep) for ep in episodes})),
                   tuple(sorted(classes)), len(val), tuple(sorted(val_classes)),
                   tuple(sorted(val_classes - trained)))

    def to_dict(self) -> dict[str, Any]:
        return {"n_texts": self.n_texts, "n_episodes": self.n_episodes, "tasks": list(self.tasks),
                "classes": list(self.classes), "n_val_episodes": self.n_val_episodes,
                "val_classes": list(self.val_classes), "val_novel_classes": list(self.val_novel_classes)}


TRAIN_SUFFIX, VAL_SUFFIX = ":metatrain", ":metaval"


def source_task(episode: Episode) -> str:
    """The task a meta-training (or meta-validation) episode was drawn from."""
    return episode.task.removesuffix(TRAIN_SUFFIX).removesuffix(VAL_SUFFIX)


def is_validation(episode: Episode) -> bool:
    """A meta-validation episode: drawn from data held out of meta-training, used to early-stop and tune."""
    return episode.task.endswith(VAL_SUFFIX)


Pools = list[tuple[str, dict[str, list[Example]]]]  # (source name, class → usable examples)


def meta_episodes(sources: Sequence[tuple[str, Sequence[Example]]], config: MetaTrainConfig,
                  exclude: Iterable[Example] = (), exclude_text: Collection[str] = frozenset()) -> list[Episode]:
    """``config.n_episodes`` training episodes, then ``config.n_val_episodes`` meta-validation episodes
    (task ``<source>:metaval``) from held-out data, drawn from (task name, train examples) pairs; examples equal to any
    in ``exclude`` (``content_key``), or whose ``text_key`` is in ``exclude_text``, are never used."""
    banned = {content_key(e) for e in exclude}
    rng = random.Random(f"metatrain/{config.seed}")
    pools: Pools = []
    need = max(config.shots) + config.n_query
    for name, examples in sources:
        by_label: dict[str, list[Example]] = {}
        for e in examples:
            if content_key(e) not in banned and not (exclude_text and text_key(e) in exclude_text):
                by_label.setdefault(e.label, []).append(e)
        eligible = sorted(lab for lab, v in by_label.items() if len(v) >= need)
        if config.max_classes is not None and len(eligible) > config.max_classes:  # own RNG: the draws stay put
            eligible = sorted(random.Random(f"metaclasses/{config.seed}/{name}").sample(eligible, config.max_classes))
        usable = {lab: rng.sample(by_label[lab], min(len(by_label[lab]), config.pool_per_class)) for lab in eligible}
        if len(usable) >= config.n_way:
            pools.append((name, usable))
    if not pools:
        raise IclkitError(f"no meta-training source has {config.n_way} classes with "
                          f"{max(config.shots) + config.n_query} train examples each",
                          field="meta_train_tasks",
                          hint="use fewer shots or a smaller --n-way, or other --meta-train-tasks")
    train, val, novel = split_pools(pools, config, random.Random(f"metaval/{config.seed}")) \
        if config.n_val_episodes else (pools, [], {})
    episodes = _draw(train, config.n_episodes, config, rng, TRAIN_SUFFIX, start=0)
    return episodes + _draw(val, config.n_val_episodes if val else 0, config, rng, VAL_SUFFIX, start=len(episodes),
                            novel=novel)


def split_pools(pools: Pools, config: MetaTrainConfig,
                rng: random.Random) -> tuple[Pools, Pools, dict[str, tuple[str, ...]]]:
    """(training pools, meta-validation pools, each validation pool's novel classes), seeded. In order of preference:
    hold out ``val_fraction`` of each source's classes where both sides keep ``n_way`` (held-out classes: the
    validation measures learning new classes, as the evaluation does); else hold out whole sources (at least one,
    leaving one for training); else, for one source with too few classes to split (a class-split's seen classes),
    hold out ``val_fraction`` of its classes whole (at least one, leaving ``n_way`` to train on) and fill each
    validation episode up to ``n_way`` with held-out texts of the training classes, so every validation episode asks
    for classes meta-training never saw (before this rule such a source was validated on held-out texts of its
    training classes only, which rewards memorising those classes); else hold out ``val_fraction`` of every class's
    texts. Empty validation pools when none of these leaves enough data. Novel classes are listed per validation
    pool; ``_draw`` puts all of them in every episode of that pool."""
    n_way, need = config.n_way, max(config.shots) + config.n_query
    train: Pools = []
    val: Pools = []
    for name, pool in pools:
        labels = sorted(pool)
        n_held = max(n_way, round(config.val_fraction * len(labels)))
        if len(labels) - n_held >= n_way:
            held = set(rng.sample(labels, n_held))
            train.append((name, {k: v for k, v in pool.items() if k not in held}))
            val.append((name, {k: v for k, v in pool.items() if k in held}))
        else:
            train.append((name, pool))
    if val:
        return train, val, {}
    if len(pools) >= 2:
        n_held = min(len(pools) - 1, max(1, round(config.val_fraction * len(pools))))
        held_names = set(rng.sample([name for name, _ in pools], n_held))
        return [p for p in pools if p[0] not in held_names], [p for p in pools if p[0] in held_names], {}
    name, pool = pools[0]
    cut = {k: max(need, round(config.val_fraction * len(v))) for k, v in pool.items()}
    texts_split = all(len(v) - cut[k] >= need for k, v in pool.items())
    n_novel = max(1, round(config.val_fraction * len(pool)))
    if texts_split and len(pool) - n_novel >= n_way:
        novel = tuple(sorted(rng.sample(sorted(pool), n_novel)))
        seen = {k: v for k, v in pool.items() if k not in novel}
        return ([(name, {k: v[cut[k]:] for k, v in seen.items()})],
                [(name, {**{k: v[:cut[k]] for k, v in seen.items()}, **{k: pool[k] for k in novel}})],
                {name: novel})
    if not texts_split:
        return pools, [], {}
    return [(name, {k: v[cut[k]:] for k, v in pool.items()})], [(name, {k: v[:cut[k]] for k, v in pool.items()})], {}


def _draw(pools: Pools, n: int, config: MetaTrainConfig, rng: random.Random, suffix: str,
          start: int, novel: Mapping[str, Sequence[str]] | None = None) -> list[Episode]:
    """``n`` episodes cycling over ``pools``: ``n_way`` random classes in a shuffled order (this episode's
    class-to-index map), every one of the pool's ``novel`` classes among them, a random shot count of
    ``config.shots``, disjoint support and queries per class."""
    episodes = []
    for index in range(start, start + n):
        name, pool = pools[index % len(pools)]
        if novel and name in novel:
            fixed = list(novel[name])
            labels = fixed + rng.sample(sorted(set(pool) - set(fixed)), config.n_way - len(fixed))
            rng.shuffle(labels)
        else:
            labels = rng.sample(sorted(pool), config.n_way)  # shuffled order = this episode's class-to-index map
        shots = rng.choice(config.shots)
        support, query = [], []
        for lab in labels:
            picked = rng.sample(pool[lab], shots + config.n_query)
            support += picked[:shots]
            query += picked[shots:]
        rng.shuffle(support)
        rng.shuffle(query)
        episodes.append(Episode(task=f"{name}{suffix}", index=index, shots=shots, seed=config.seed,
                                labels=tuple(labels), support=tuple(support), query=tuple(query)))
    return episodes


def label_index(examples: Sequence[Example], labels: Sequence[str]) -> torch.Tensor:
    """Class indices by position in the episode's label tuple."""
    pos = {lab: i for i, lab in enumerate(labels)}
    try:
        return torch.tensor([pos[e.label] for e in examples], dtype=torch.long)
    except KeyError as e:
        raise IclkitError(f"support label {e.args[0]!r} is not one of the episode's labels {list(labels)}") from None


def generator(seed: int, *salt: object) -> torch.Generator:
    """A torch.Generator seeded from the run seed and a salt (method name, purpose)."""
    g = torch.Generator()
    g.manual_seed(random.Random("/".join(map(str, (seed, *salt)))).getrandbits(63))
    return g


def weights_dir(method: str, config: dict, train_hash: str, features_key: str) -> Path:
    """Folder for meta-trained weights: keyed by the method's config, the training episodes and the features."""
    from iclkit.paths import cache_dir
    from iclkit.types import stable_hash

    key = stable_hash({"method": method, "config": config, "episodes": train_hash, "features": features_key})
    return Path(cache_dir()) / "metatrained" / f"{method}-{key}"


def load_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Saved weights and their config.json, or None when this exact meta-training has not been done yet."""
    import json

    from safetensors.torch import load_file

    path = folder / "weights.safetensors"
    if not path.is_file():
        return None
    info = folder / "config.json"
    return load_file(path), (json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {})


def save_weights(folder: Path, weights: dict[str, torch.Tensor], info: dict) -> None:
    """Write weights.safetensors + config.json atomically."""
    import json
    import os
    import shutil
    import tempfile

    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp"))
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    (tmp / "config.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    try:
        os.replace(tmp, folder)
    except OSError:  # another process saved the same training first
        shutil.rmtree(tmp, ignore_errors=True)


def training_episodes(task: Any, evaluation: Sequence[Episode], options: MetaTrainOptions, seed: int,
                      plan: MetaTrainPlan | None = None) -> list[Episode]:
    """Meta-training episodes for ``task`` under ``plan`` (None: in-task), shaped like the evaluation episodes
    (their N-way and shot counts); never holding an evaluation query, and under cross-task and class-split no
    text the evaluation could show (see the module docstring)."""
    shots = tuple(sorted({ep.shots for ep in evaluation if ep.shots > 0})) or (1,)
    n_way = max((len(ep.labels) for ep in evaluation), default=len(task.labels))
    config = MetaTrainConfig(n_episodes=options.meta_episodes, n_way=n_way, shots=shots, n_query=options.meta_query,
                             pool_per_class=options.meta_pool, max_classes=options.meta_classes, seed=seed,
                             n_val_episodes=options.meta_val_episodes)
    queries = [q for ep in evaluation for q in ep.query]
    if plan is None or plan.protocol == "in-task":
        return meta_episodes([(task.name, task.train)], config, exclude=queries)
    evaluated = set(plan.eval_classes if plan.eval_classes is not None else task.labels)
    banned = {text_key(e) for e in (*task.train, *task.test) if e.label in evaluated}
    banned |= {text_key(e) for ep in evaluation for e in (*ep.support, *ep.query)}
    if plan.protocol == "class-split":
        kept = set(plan.train_classes)
        sources = [(task.name, [e for e in task.train if e.label in kept])]
    elif plan.protocol == "self-supervised":  # SMLMT: masked-word classes from unlabelled sentences
        from iclkit.smlmt import SmlmtConfig, self_supervised_sources

        sources = self_supervised_sources(plan, banned, key=text_key, named=bool(options.meta_train_tasks),
                                          config=SmlmtConfig(min_count=max(shots) + options.meta_query, seed=seed))
    else:
        sources = _load_sources(plan, named=bool(options.meta_train_tasks))
    return meta_episodes(sources, config, exclude=[*queries, *(e for ep in evaluation for e in ep.support)],
                         exclude_text=banned)


def _load_sources(plan: MetaTrainPlan, named: bool) -> list[tuple[str, Sequence[Example]]]:
    """(name, train split) of each cross-task source; a registered task whose data cannot be loaded here is left
    out when the list was automatic (the budget names the tasks used), an error when the user named it."""
    from iclkit.data.tasks import load_task

    out = []
    for name in plan.sources:
        try:
            out.append((name, load_task(name).train))
        except IclkitError:
            if named:
                raise
    if not out and plan.sources:
        raise IclkitError(
            f"--meta-train cross-task: none of the source tasks of {plan.task!r} ({', '.join(plan.sources)}) has "
            f"data here (no benchmark data folder, and no hub)", field="meta_train",
            hint="point ICLKIT_DATA_DIR at the benchmark data folder (or allow the hub), use --meta-train "
                 "self-supervised (offline), run without meta-learners (--methods icl,protonet,knn,linear), or ask "
                 "for --meta-train in-task")
    return out
