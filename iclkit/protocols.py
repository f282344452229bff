"""Meta-training protocols: which tasks and classes a meta-learner may train on, decided per task before any
evaluation episode is sampled, and every method's data budget as the outputs report it.

Four protocols (``--meta-train``; ``MetaTrainOptions.meta_train``):

- ``cross-task``: meta-train on other registered classification tasks (``--meta-train-tasks`` names them; by default
  every registered classification task), never on a task from the evaluated task's *corpus* (``corpus:`` in a task
  file; SST-2, SST-5 and movie-sentiment are all Rotten Tomatoes sentences). Naming a same-corpus task is an error
  unless ``--allow-same-corpus``.
- ``class-split``: a seeded split of the task's classes (Bao et al. 2020): ``n // 2`` held-out evaluation classes,
  the rest for meta-training. Evaluation episodes of *every* method, ICL included, use only the held-out classes, so
  the split changes the episodes whatever methods a run has (runs with and without meta-learners stay pairable).
- ``in-task``: the evaluated task's own train split and classes (iclkit's behaviour before protocols existed), only
  when asked; every output names it.
- ``self-supervised``: SMLMT (Bansal et al. 2020; ``iclkit.smlmt``): tasks built from *unlabelled* sentences by
  masking a word, the class being the masked word; the sentences are the offline Lee background news corpus
  (``SELF_SUPERVISED_CORPUS``, always) and the texts of the cross-task sources with their labels dropped (same
  corpus rule; ``--meta-train-tasks`` names them; ``--meta-train-tasks lee-news`` alone: the Lee corpus only).
  Only when asked, or by the default run (``iclkit.runner.config.DEFAULT_RUN_OPTIONS``).

``auto`` (the default) picks ``class-split`` when the task has at least ``CLASS_SPLIT_MIN_CLASSES`` classes and the
split leaves at least ``n_way`` (default: ``n // 2``) classes on each side, else ``cross-task``: DBpedia's 14 classes
split 7 / 7; SST-2, SST-5, TREC and AG News meta-train on other tasks. Which texts the chosen sources may contribute
(leakage by content) is ``iclkit.metatrain``'s business; this module decides the sources and the classes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from iclkit.data.spec import TaskData, TaskSpec
from iclkit.data.tasks import read_spec, registry, resolve_spec
from iclkit.errors import IclkitError
from iclkit.learners.options import MetaTrainOptions

Protocol = Literal["cross-task", "class-split", "in-task", "self-supervised"]
NO_META_TRAINING = "none"  # the protocol a method that learned from no labelled text outside the episode reports
CLASS_SPLIT_MIN_CLASSES = 8  # auto: fewer classes than this → cross-task (a 3 / 3 split of TREC is too thin)
SELF_SUPERVISED_CORPUS = "lee-news"  # the offline unlabelled corpus of self-supervised meta-training (iclkit.smlmt)


@dataclass(frozen=True)
class MetaTrainPlan:
    """The protocol for one evaluated task: which classes its evaluation episodes use, which it meta-trains on.

    ``eval_classes``: the classes evaluation episodes are drawn from (None: all of the task's).
    ``train_classes``: the evaluated task's classes meta-training may use (class-split: the others; in-task: all;
    cross-task and self-supervised: none). ``sources``: the tasks meta-training may draw from (self-supervised: the
    unlabelled corpus first, then the tasks whose texts it reads without labels; the budget says which it did use).
    ``excluded``: registered classification tasks left out of cross-task or self-supervised meta-training, and why
    (same corpus).
    """

    task: str
    protocol: Protocol
    corpus: str
    eval_classes: tuple[str, ...] | None
    train_classes: tuple[str, ...]
    sources: tuple[str, ...]
    split_seed: int | None = None
    excluded: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "corpus": self.corpus,
                "eval_classes": list(self.eval_classes) if self.eval_classes is not None else None,
                "train_classes": list(self.train_classes), "sources": list(self.sources),
                "split_seed": self.split_seed, "excluded": dict(self.excluded)}


def plan_for(task: TaskData, options: MetaTrainOptions, n_way: int | None, seed: int) -> MetaTrainPlan | None:
    """The protocol for ``task`` (None for open-answer tasks: no classes, nothing meta-trains on them).

    Fails, before any work, on a protocol that cannot be carried out: a class-split that leaves fewer than
    ``n_way`` classes on a side, ``meta_train_tasks`` with a protocol other than cross-task or self-supervised, or a
    named task that shares the evaluated task's corpus (without ``allow_same_corpus``). ``auto`` never picks
    self-supervised."""
    spec = task.spec
    if spec.type == "generation":
        return None
    protocol = options.meta_train
    if options.meta_train_tasks and protocol not in ("auto", "cross-task", "self-supervised"):
        raise IclkitError(f"meta_train_tasks names the tasks of --meta-train cross-task (or self-supervised); it "
                          f"cannot go with --meta-train {protocol}", field="meta_train_tasks",
                          hint="drop --meta-train-tasks, or use --meta-train cross-task")
    labels = tuple(task.labels)
    n_eval = len(labels) // 2
    splittable = n_eval >= max(2, n_way or 0)
    if protocol == "auto":
        protocol = ("class-split" if not options.meta_train_tasks and len(labels) >= CLASS_SPLIT_MIN_CLASSES
                    and splittable else "cross-task")
    if protocol == "in-task":
        return MetaTrainPlan(spec.name, "in-task", spec.corpus_name, None, labels, (spec.name,))
    if protocol == "class-split":
        if not splittable:
            raise IclkitError(
                f"task {spec.name!r} has {len(labels)} classes: a class-split holds out {n_eval} for evaluation and "
                f"meta-trains on {len(labels) - n_eval}, fewer than the {max(2, n_way or 0)} an episode needs"
                + (f" (n_way={n_way})" if n_way else ""),
                field="meta_train", hint="use --meta-train cross-task, or a smaller --n-way")
        split_seed = seed if options.class_split_seed is None else options.class_split_seed
        held = set(random.Random(f"class-split/{split_seed}/{spec.name}").sample(sorted(labels), n_eval))
        return MetaTrainPlan(spec.name, "class-split", spec.corpus_name, tuple(x for x in labels if x in held),
                             tuple(x for x in labels if x not in held), (spec.name,), split_seed)
    named = options.meta_train_tasks
    if SELF_SUPERVISED_CORPUS in named and protocol != "self-supervised":
        raise IclkitError(f"{SELF_SUPERVISED_CORPUS!r} is the unlabelled corpus of --meta-train self-supervised, "
                          f"not a labelled task", field="meta_train_tasks",
                          hint=f"use --meta-train self-supervised --meta-train-tasks {SELF_SUPERVISED_CORPUS}")
    tasks_named = tuple(name for name in named if name != SELF_SUPERVISED_CORPUS)
    if named and not tasks_named:  # self-supervised on the Lee corpus alone (the default run's source)
        sources, excluded = (), {}
    else:
        sources, excluded = cross_task_sources(spec, tasks_named, options.allow_same_corpus)
    if protocol == "self-supervised":  # masked-word classes: no source needs n_way classes of its own
        if spec.corpus_name == SELF_SUPERVISED_CORPUS:
            excluded = {**excluded, SELF_SUPERVISED_CORPUS: f"shares the corpus {spec.corpus_name}"}
        else:
            sources = (SELF_SUPERVISED_CORPUS, *sources)
        return MetaTrainPlan(spec.name, "self-supervised", spec.corpus_name, None, (), sources, excluded=excluded)
    need = n_way or len(labels)
    sizes = [len(resolve_spec(name).labels) for name in sources]  # 0: labels read from the data, not declared
    if not any(n >= need or n == 0 for n in sizes):
        raise IclkitError(f"cross-task meta-training for {need}-way episodes of task {spec.name!r} needs a source "
                          f"task with at least {need} classes; none of {', '.join(sources) or 'the sources'} has",
                          field="n_way", hint="use a smaller --n-way, or --meta-train class-split / in-task")
    return MetaTrainPlan(spec.name, "cross-task", spec.corpus_name, None, (), sources, excluded=excluded)


def cross_task_sources(spec: TaskSpec, named: tuple[str, ...],
                       allow_same_corpus: bool) -> tuple[tuple[str, ...], dict[str, str]]:
    """(source tasks, {left-out registered task: why}): the named tasks, checked, or every registered
    classification task outside the evaluated task's corpus."""
    if named:
        for name in named:
            other = resolve_spec(name)
            if other.type == "generation":
                raise IclkitError(f"{name!r} is an open-answer task: it has no classes to meta-train on",
                                  field="meta_train_tasks")
            if other.name == spec.name:
                raise IclkitError(f"{name!r} is the evaluated task itself", field="meta_train_tasks",
                                  hint="use --meta-train in-task to meta-train on the task's own classes")
            if other.corpus_name == spec.corpus_name and not allow_same_corpus:
                raise IclkitError(
                    f"{name!r} shares the corpus {spec.corpus_name!r} with the evaluated task {spec.name!r}: "
                    f"meta-training on it would train on the evaluation's own texts", field="meta_train_tasks",
                    hint="name tasks from other corpora, or pass --allow-same-corpus (texts equal to the evaluated "
                         "task's are still left out)")
        return tuple(named), {}
    sources, excluded = [], {}
    for name, path in registry().items():
        other = read_spec(path)
        if other.name == spec.name or other.type == "generation":
            continue  # itself; open-answer tasks have no classes
        if other.corpus_name == spec.corpus_name:
            excluded[name] = f"shares the corpus {spec.corpus_name}"
        else:
            sources.append(name)
    return tuple(sources), excluded


def budget_fields(described: Mapping[str, Any], plan: MetaTrainPlan | None) -> dict[str, Any]:
    """What a method learned from outside the episode, as every output reports it: the protocol (``none`` when it
    meta-trained on nothing), the labelled texts, tasks and classes it meta-trained on, and the pretrained backbone.
    Under self-supervised the texts are unlabelled sentences (each used once, with one word masked), the tasks the
    sources they came from and the classes the masked words (``source:word``).

    The counts come from the method's own ``describe()`` (``meta_train_data``, written by the learner from the
    episodes it trained on), never from its name, so a meta-learner that skips training (ProtoNet without a
    projection) reports 0 like ICL."""
    data = described.get("meta_train_data") or {}
    n_texts = int(data.get("n_texts", 0))
    return {"meta_train": plan.protocol if n_texts and plan is not None else NO_META_TRAINING,
            "n_meta_texts": n_texts, "meta_tasks": list(data.get("tasks", [])) if n_texts else [],
            "meta_classes": list(data.get("classes", [])) if n_texts else [],
            "pretrained": described.get("backbone")}
