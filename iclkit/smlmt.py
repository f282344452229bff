"""Self-supervised meta-training tasks from unlabelled text: SMLMT (Bansal et al. 2020, "Self-Supervised
Meta-Learning for Few-Shot Natural Language Classification Tasks", EMNLP 2020, Sec. 3).

An N-way SMLMT task picks N words; a class's examples are sentences that contain its word, with every occurrence of
the word (case-insensitive, whole word) replaced by ``MASK``, and the class is which word was masked. Here every
chosen word is one class of a source (``Example.label`` = the word), so ``iclkit.metatrain.meta_episodes`` draws the
N-way K-shot tasks from the source like from a labelled task: N of its words per episode, balanced, in a shuffled
class-to-index order.

Sources (``self_supervised_sources``, in the order ``iclkit.protocols`` plans them): the Lee background news corpus
shipped in gensim (``lee_news_sentences``; offline, always) and the train texts of the other registered
classification tasks with their labels dropped, under the cross-task corpus rule. Every text the evaluation could
show (its ``text_key`` in the banned set) is dropped *before* masking, so the comparison is on the original sentence.
Each sentence is used for at most one word: a learner's budget, counted by ``TrainingData`` from its episodes as
distinct (source, text, label), is then exactly the number of distinct unlabelled sentences it saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Sequence

from iclkit import resources
from iclkit.errors import IclkitError
from iclkit.protocols import SELF_SUPERVISED_CORPUS, MetaTrainPlan
from iclkit.types import Example, stable_hash

MASK = "[MASK]"
MIN_SENTENCE_WORDS = 5  # shorter fragments ("Mr Smith said.") carry too little context to guess a masked word
MIN_WORD_LETTERS = 3
# Function words (and news' "said") are left out as classes: they occur in nearly every sentence, so a task over
# them asks for syntax (which closed-class word fits), not for what a sentence is about, as the evaluated tasks do.
STOP_WORDS = frozenset("""
about above after again against all also and any are aren because been before being below between both but can
cannot could did does doing down during each few for from further had has have having her here hers herself him
himself his how into its itself just more most nor not now off once only other ought our ours ourselves out over
own same she should some such than that the their theirs them themselves then there these they this those through
too under until very was were what when where which while who whom why will with would you your yours yourself
yourselves one two may might must shall upon yet said says
""".split()) | {MASK.strip("[]").lower()}  # 'mask' itself: a masked sentence spells it

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LETTERS = re.compile(r"[^\W\d_]+")  # a maximal run of letters (any script): one word


@dataclass(frozen=True)
class SmlmtConfig:
    """How SMLMT classes are built from one source's sentences.

    ``min_count``: a word needs at least this many (unassigned) sentences to become a class: enough for the most
    shots plus the queries of a meta-training episode. ``max_words``: classes per source (a seeded sample of the
    frequent words). ``per_word``: sentences per class (a seeded sample)."""

    min_count: int = 12
    max_words: int = 256
    per_word: int = 64
    seed: int = 0


@dataclass(frozen=True)
class SmlmtBudget:
    """What self-supervised meta-training used: distinct unlabelled texts, tasks built (one per masked word), and
    the sources the texts came from."""

    n_texts: int
    n_tasks: int
    sources: tuple[str, ...]

    @classmethod
    def of(cls, sources: Sequence[tuple[str, Sequence[Example]]]) -> "SmlmtBudget":
        """The budget of built sources (each example is a distinct sentence, each label a masked word)."""
        return cls(sum(len(examples) for _, examples in sources),
                   sum(len({e.label for e in examples}) for _, examples in sources),
                   tuple(name for name, examples in sources if examples))

    def text(self) -> str:
        """``self-supervised: 1,234 unlabelled texts, 180 tasks built (masked words), from lee-news, trec``."""
        out = f"self-supervised: {self.n_texts:,} unlabelled texts"
        if self.n_tasks:
            out += f", {self.n_tasks:,} tasks built (masked words)"
        return out + (f", from {', '.join(self.sources)}" if self.sources else "")


def split_sentences(document: str) -> list[str]:
    """A document's sentences (split after . ! ? followed by whitespace), whitespace collapsed, keeping those of at
    least ``MIN_SENTENCE_WORDS`` words."""
    out = []
    for part in _SENTENCE_END.split(document.strip()):
        words = part.split()
        if len(words) >= MIN_SENTENCE_WORDS:
            out.append(" ".join(words))
    return out


def candidate_words(sentence: str) -> set[str]:
    """The words of a sentence that may become classes: lower-cased letter runs, ASCII (so lower-casing and
    case-insensitive matching agree), at least ``MIN_WORD_LETTERS`` long, no stop-word."""
    return {w for w in (m.lower() for m in _LETTERS.findall(sentence))
            if w.isascii() and len(w) >= MIN_WORD_LETTERS and w not in STOP_WORDS}


def mask(sentence: str, word: str) -> str:
    """``sentence`` with every whole-word, case-insensitive occurrence of ``word`` replaced by ``MASK``."""
    return re.sub(rf"(?<![^\W\d_]){re.escape(word)}(?![^\W\d_])", MASK, sentence, flags=re.IGNORECASE)


def unmasked(example: Example) -> str:
    """An SMLMT example's sentence with the masked word put back (lower-cased): equal to the original sentence up to
    the case of that word, so its ``text_key`` is the original's."""
    return example.fields["text"].replace(MASK, example.label)


def smlmt_source(name: str, sentences: Iterable[str], config: SmlmtConfig = SmlmtConfig()
                 ) -> tuple[str, tuple[Example, ...]]:
    """(name, SMLMT examples) from unlabelled sentences: each class a word, each example a sentence containing it
    with the word masked; the shape ``meta_episodes`` reads.

    Sentences are deduplicated (case and whitespace folded) and each is assigned to at most one word: the chosen
    words take theirs rarest first (a frequent word would otherwise take the sentences a rarer one needs), a
    seeded sample of at most ``per_word`` of those not yet taken; a word left with fewer than ``min_count`` is
    dropped. Ids (``<name>/<word>/<hash of the sentence>``) are stable and unique."""
    kept: dict[str, str] = {}
    for s in sentences:
        if MASK.casefold() not in s.casefold():  # a literal mask token would read as a masked word
            kept.setdefault(" ".join(s.casefold().split()), " ".join(s.split()))
    pool = list(kept.values())
    containing: dict[str, list[int]] = {}
    for i, s in enumerate(pool):
        for w in candidate_words(s):
            containing.setdefault(w, []).append(i)
    frequent = sorted(w for w, ix in containing.items() if len(ix) >= config.min_count)
    rng = random.Random(f"smlmt/{config.seed}/{name}")
    chosen = rng.sample(frequent, min(len(frequent), config.max_words))
    taken: set[int] = set()
    examples: list[Example] = []
    for w in sorted(chosen, key=lambda w: (len(containing[w]), w)):
        free = [i for i in containing[w] if i not in taken]
        if len(free) < config.min_count:
            continue
        picked = sorted(rng.sample(free, min(len(free), config.per_word)))
        taken.update(picked)
        examples += [Example(id=f"{name}/{w}/{stable_hash(pool[i], 12)}", fields={"text": mask(pool[i], w)},
                             label=w) for i in picked]
    return name, tuple(examples)


def lee_news_sentences() -> list[str]:
    """The sentences of gensim's Lee background corpus (300 Australian news documents, one per line; installed on
    demand and sha256-checked): 2,613 of at least ``MIN_SENTENCE_WORDS`` words."""
    path = resources.ensure(resources.LEE_BACKGROUND)
    return [s for line in path.read_text(encoding="utf-8").splitlines() for s in split_sentences(line)]


def _task_documents(name: str, banned: Collection[str], key: Callable[[Example], str]) -> list[str]:
    """The train texts of task ``name`` without labels: each input field a document; an example whose text is
    banned is left out whole."""
    from iclkit.data.tasks import load_task

    return [v for e in load_task(name).train if key(e) not in banned for _, v in sorted(e.fields.items())]


def self_supervised_sources(plan: MetaTrainPlan, banned_text_keys: Collection[str], *,
                            key: Callable[[Example], str], named: bool = False,
                            config: SmlmtConfig = SmlmtConfig()) -> list[tuple[str, tuple[Example, ...]]]:
    """SMLMT sources for ``plan`` (protocol self-supervised): per source in ``plan.sources``, its unlabelled
    sentences without any whose ``key`` (``iclkit.metatrain.text_key``, passed in: that module imports this one) is
    in ``banned_text_keys`` or was already offered (to this or an earlier source), turned into masked-word classes.
    A source that cannot be loaded here is left out (the
    budget names the sources used), unless the user named it (``named``); no source at all is an error."""
    out = []
    seen: set[str] = set()  # a text offered to one source is not offered again (SST-2's sentences are SST-5's)
    for name in plan.sources:
        try:
            documents = (lee_news_sentences() if name == SELF_SUPERVISED_CORPUS
                         else _task_documents(name, banned_text_keys, key))
        except IclkitError:
            if named and name != SELF_SUPERVISED_CORPUS:
                raise
            continue
        sentences = []
        for s in (s for d in documents for s in split_sentences(d)):
            k = key(Example(id="", fields={"text": s}, label=""))
            if k not in banned_text_keys and k not in seen:
                seen.add(k)
                sentences.append(s)
        source = smlmt_source(name, sentences, config)
        if source[1]:
            out.append(source)
    if not out:
        raise IclkitError(f"self-supervised meta-training for {plan.task!r} found no unlabelled text with words "
                          f"in at least {config.min_count} sentences in {', '.join(plan.sources) or 'no source'}",
                          field="meta_train",
                          hint=f"install {resources.LEE_BACKGROUND.requirement} (it holds the offline corpus), "
                               "or point ICLKIT_DATA_DIR at the benchmark data folder")
    return out
