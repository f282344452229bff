"""The model-family matrix: a tiny random model of each architecture users bring, saved to a folder and loaded the way
a user loads a hub id, scored through every path iclkit has and checked against a plain one-request-at-a-time
forward pass written here (fp32: log-probs within 1e-4, the same greedy answers and generated text).

Each family has its own positions (rotary, absolute, OPT's offset of 2, ALiBi, none for Mamba), caches (full,
sliding-window, hybrid, recurrent state), soft-capping and tokenizer (byte-level BPE, a SentencePiece-style BPE with a
prefix space, a Llama 3-style BPE). A path that cannot be exact for a family must not run: the LM falls back to full
sequences by itself and names the path it uses in ``describe()["scoring_path"]``.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

from iclkit.episodes import EpisodeConfig, sample_episodes
from iclkit.errors import IclkitError
from iclkit.lm import GenerationRequest, LoglikelihoodRequest, ModelSpec, load_lm
from iclkit.lm.hf import HFCausalLM, quiet_transformers
from iclkit.lm.prefix import plan
from iclkit.probes import perturb_labels
from iclkit.prompts import PromptTemplate
from iclkit.shots import plan_task
from iclkit.types import Example

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

# -- tokenizers, trained here on a few sentences ---------------------------------------------------------------------

CORPUS = [
    "Review: a gorgeous, witty film. Sentiment: positive", "Review: dull and far too long! Sentiment: negative",
    "Review: loved it. Sentiment: positive", "Review: a mess. Sentiment: negative",
    "the story never finds its feet, and the actors look tired.", "quite positive, rather negative indeed.",
    "What is the capital of France? Paris. What is the capital of Peru? Lima.",
    "Question: who wrote it? Answer: nobody knows.", "it's a fine, fine film; we'll see it again",
]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _bpe(pre: Any, specials: list[str], vocab_size: int, alphabet: list[str]) -> Any:
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    corpus = CORPUS + ["\n\n".join(CORPUS), "Review: great fun.\nSentiment: positive.\n\n"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                        initial_alphabet=alphabet, show_progress=False))
    return tok


def byte_level(bos: str | None = None) -> Any:
    """GPT-2's byte-level BPE (no BOS), or OPT's, which starts every text with ``</s>``."""
    from tokenizers import decoders, pre_tokenizers, processors

    tok = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>", "<pad>", "</s>"], 420,
               pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = decoders.ByteLevel()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def llama3() -> Any:
    """Llama 3's BPE: its split pattern (punctuation joins the newlines after it), bytes, ``<|begin_of_text|>``."""
    from tokenizers import Regex, decoders, pre_tokenizers, processors

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bos = "<|begin_of_text|>"
    tok = _bpe(pre, [bos, "<|end_of_text|>"], 420, pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def sentencepiece() -> Any:
    """Llama 2's SentencePiece BPE: ``▁`` for spaces and in front of the text (Metaspace, prepend "first"), newlines
    and unseen characters as byte tokens, ``<s>`` first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    trained = _bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
                   ["<unk>", "<s>", "</s>"], 300, [])
    model = json.loads(trained.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab.pop("\n", None)  # Llama 2's newlines are byte tokens
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    vocab = {t: i for i, t in enumerate(sorted(vocab, key=vocab.__getitem__))}
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    merges = [m for m in merges if "\n" not in "".join(m)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return tok


TOKENIZERS: dict[str, tuple[Callable[[], Any], dict[str, str]]] = {
    "byte-level": (byte_level, {"eos_token": "<|endoftext|>", "pad_token": "<pad>"}),
    "opt": (lambda: byte_level("</s>"), {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<pad>"}),
    "llama3": (llama3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}),
    "sentencepiece": (sentencepiece, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
}


def hf_tokenizer(kind: str) -> Any:
    """The tokenizer wrapped as transformers wraps a hub tokenizer.json."""
    build, special = TOKENIZERS[kind]
    return transformers.PreTrainedTokenizerFast(tokenizer_object=build(), **special)


# -- tiny random models, one per family -------------------------------------------------------------------------------

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)
WINDOW = 8  # sliding windows far shorter than the prompts, so a cache that ignored them would be caught


@dataclass(frozen=True)
class Family:
    """A config class and its arguments (vocabulary and special ids are the tokenizer's), the tokenizer kind, the
    scoring path iclkit must pick, and the weight scale (larger than the default 0.02, so greedy choices are clear)."""

    config: str
    kwargs: dict[str, Any]
    tokenizer: str
    path: str
    init: float = 0.3


FAMILIES = {
    "llama": Family("LlamaConfig", SMALL, "llama3", "prefix-shared"),
    "mistral": Family("MistralConfig", {**SMALL, "sliding_window": WINDOW}, "sentencepiece", "full-sequence"),
    "qwen2": Family("Qwen2Config", SMALL, "byte-level", "prefix-shared"),
    "gemma2": Family("Gemma2Config", {**SMALL, "head_dim": 8, "sliding_window": WINDOW, "query_pre_attn_scalar": 8,
                                      "attn_logit_softcapping": 5.0, "final_logit_softcapping": 10.0},
                     "sentencepiece", "full-sequence"),
    "gemma3": Family("Gemma3TextConfig", {**SMALL, "head_dim": 8, "sliding_window": WINDOW,
                                          "layer_types": ["sliding_attention", "full_attention"],
                                          "final_logit_softcapping": 10.0}, "sentencepiece", "full-sequence"),
    "phi3": Family("Phi3Config", SMALL, "sentencepiece", "prefix-shared"),
    "gpt2": Family("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=256), "byte-level",
                   "prefix-shared"),
    "gpt-neox": Family("GPTNeoXConfig", {**SMALL, "num_key_value_heads": 4, "rotary_pct": 0.5}, "byte-level",
                       "prefix-shared"),
    "opt": Family("OPTConfig", dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                    word_embed_proj_dim=32, max_position_embeddings=256), "opt", "prefix-shared"),
    "falcon": Family("FalconConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          max_position_embeddings=256), "byte-level", "prefix-shared"),
    "falcon-alibi": Family("FalconConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                alibi=True, max_position_embeddings=256), "byte-level",
                           "prefix-shared"),
    "mamba": Family("MambaConfig", dict(hidden_size=32, state_size=4, num_hidden_layers=2, expand=2),
                    "byte-level", "full-sequence"),
}


def build(name: str, folder: Path) -> tuple[Any, Any]:
    """Family ``name``'s tiny model (seeded, without touching the global RNG) and tokenizer, saved to ``folder``."""
    fam = FAMILIES[name]
    tok = hf_tokenizer(fam.tokenizer)
    eos = tok.eos_token_id
    ids = {"bos_token_id": tok.bos_token_id or eos, "eos_token_id": eos, "pad_token_id": tok.pad_token_id or eos}
    config = getattr(transformers, fam.config)(vocab_size=len(tok), initializer_range=fam.init, **ids, **fam.kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sum(map(ord, name)))
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with quiet_transformers():
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model, tok


# -- requests ---------------------------------------------------------------------------------------------------------

DEMOS = [("a gorgeous, witty film.", "positive"), ("dull and far too long!", "negative"), ("loved it.", "positive"),
         ("a mess.", "negative"), ("the actors look tired.", "negative"),
         ("it's a fine, fine film; we'll see it", "positive")]
QUERIES = ["fine", "the story never finds its feet, and the actors look tired", "héllo, a witty mess; it's 1999?"]
LABELS = (" positive", " negative", " quite positive", " rather negative indeed")


def _prefix(demos: list[tuple[str, str]], period: bool = False) -> str:
    end = "." if period else ""  # Llama 3's split joins a period with the newlines after it
    return "".join(f"Review: {t}\nSentiment: {label}{end}\n\n" for t, label in demos)


def loglikelihood_requests() -> list[LoglikelihoodRequest]:
    """Four episodes (0 to 3 demonstrations; all prompts longer than a sliding window but the k=0 ones), queries of
    three lengths, one- and multi-token labels, a label without its space, an empty context, a word split between
    prefix and context."""
    prefixes = [_prefix([]), _prefix(DEMOS[:1]), _prefix(DEMOS[1:3], period=True), _prefix(DEMOS[3:6])]
    out = [LoglikelihoodRequest(p, f"Review: {q}\nSentiment:", c)
           for e, p in enumerate(prefixes) for q in QUERIES for c in (LABELS if e % 2 else LABELS[:2])]
    out.append(LoglikelihoodRequest(prefixes[3], "Review: fine\nSentiment:", "positive"))
    out.append(LoglikelihoodRequest(prefixes[2], "", "Review: fine"))
    out.append(LoglikelihoodRequest(prefixes[1] + "Review: a witty fi", "lm.\nSentiment:", " positive"))  # mid-word
    return out


def generation_requests() -> list[GenerationRequest]:
    """Prompts of different lengths in one left-padded batch, cut at a newline or at a common letter."""
    return [GenerationRequest(p, f"Review: {q}\nSentiment:", max_new_tokens=8, stop=("\n", "a"))
            for p in (_prefix([]), _prefix(DEMOS[:2])) for q in QUERIES[:2]]


# -- the reference: whole-text tokenization, one unpadded forward pass per request -----------------------------------

def reference_logprob(model: Any, tok: Any, r: LoglikelihoodRequest) -> tuple[float, int, bool]:
    """Log-prob, token count and greedy flag of the continuation: the joined text tokenized as a whole (its tokens
    after those of prefix + context), one forward pass, log_softmax, gather."""
    prompt = tok(r.prefix + r.context)["input_ids"]
    full = tok(r.prefix + r.context + r.continuation)["input_ids"]
    assert full[:len(prompt)] == prompt, "the request's answer does not start on a token boundary"
    with torch.inference_mode():
        logits = model(torch.tensor([full])).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
    target = torch.tensor(full[len(prompt):])
    return float(lp.gather(-1, target[:, None]).sum()), len(target), bool((lp.argmax(-1) == target).all())


def reference_generation(model: Any, tok: Any, r: GenerationRequest) -> str:
    """Greedy decoding by hand, a full forward pass per new token; the new text as it reads in the whole text."""
    prompt = tok(r.prefix + r.context)["input_ids"]
    ids = list(prompt)
    eos = model.generation_config.eos_token_id
    with torch.inference_mode():
        for _ in range(r.max_new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == eos:
                break
    text = tok.decode(ids, skip_special_tokens=True)[len(tok.decode(prompt, skip_special_tokens=True)):]
    cut = min([text.index(s) for s in r.stop if s in text], default=len(text))
    return text[:cut]


# -- the matrix -------------------------------------------------------------------------------------------------------

PATHS = {  # every way iclkit scores: (share_prefix, rows per batch)
    "prefix-shared": (True, 1),  # one prefix's cache at a time
    "packed": (True, 64),  # all episodes' prefixes in one left-padded pass, rows gathered from it
    "left-padded batches": (False, 8),
    "one sequence per request": (False, 1),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(name, the model as built, its tokenizer, the LM iclkit loads from the saved folder)."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    model, tok = build(name, folder)
    lm = load_lm(ModelSpec(name=str(folder), dtype="float32", device="cpu"))
    return name, model, tok, lm


@pytest.fixture(scope="module")
def reference(family):
    _, model, tok, _ = family
    return [reference_logprob(model, tok, r) for r in loglikelihood_requests()]


def test_loaded_through_iclkit(family):
    name, model, _, lm = family
    assert isinstance(lm, HFCausalLM) and type(lm.model) is type(model)
    assert lm.describe()["source"] == "folder"


@pytest.mark.parametrize("path", list(PATHS))
def test_every_scoring_path_matches_the_reference(family, reference, path):
    name, _, _, lm = family
    share, rows = PATHS[path]
    scorer = HFCausalLM(lm.model, lm.tokenizer, batch_size=rows, share_prefix=share, info=lm.describe())
    requests = loglikelihood_requests()
    if path == "packed" and scorer.scoring_path == "prefix-shared":  # the episodes' prefixes do run in one pass
        assert any(len(pack) > 1 for pack in scorer._packs(plan(scorer.parts(requests))))
    got = scorer.loglikelihood(requests)
    assert [g.n_tokens for g in got] == [n for _, n, _ in reference]
    diffs = [abs(g.logprob - lp) for g, (lp, _, _) in zip(got, reference)]
    assert max(diffs) < 1e-4, (name, path, max(diffs))
    assert [g.greedy for g in got] == [greedy for _, _, greedy in reference]


def test_the_path_used_is_named(family):
    name, _, _, lm = family
    assert lm.describe()["scoring_path"] == FAMILIES[name].path
    naive = HFCausalLM(lm.model, lm.tokenizer, share_prefix=False, info=lm.describe())
    assert naive.describe()["scoring_path"] == "full-sequence"


@pytest.mark.parametrize("rows", [1, 16])
def test_generation_matches_greedy_decoding_by_hand(family, rows):
    _, model, tok, lm = family
    reqs = generation_requests()
    gen = HFCausalLM(lm.model, lm.tokenizer, batch_size=rows, info=lm.describe())
    assert gen.generate(reqs) == [reference_generation(model, tok, r) for r in reqs]


def test_prefix_query_label_ids_are_those_of_the_whole_text(family):
    """The boundary rule against tokenizing the joined text, for every tokenizer: no SentencePiece prefix space in
    front of the query or a label without its space, Llama 3's period-and-newlines token kept whole; and the
    prompts of an episode still share their demonstrations' ids, the part that gets cached."""
    _, _, tok, lm = family
    reqs = loglikelihood_requests()
    shared: dict[str, set[tuple[int, ...]]] = {}
    for r, (prefix, context, cont) in zip(reqs, lm.parts(reqs)):
        assert prefix + context == tok(r.prefix + r.context)["input_ids"] == lm.request_ids(r.prefix, r.context)
        assert prefix + context + cont == tok(r.prefix + r.context + r.continuation)["input_ids"]
        shared.setdefault(r.prefix, set()).add(tuple(prefix))
    assert all(len(ids) == 1 for ids in shared.values())
    assert min(len(next(iter(ids))) for p, ids in shared.items() if p) > WINDOW  # longer than a sliding window


# -- --shots auto: the planned worst case is the backend's own count, bounds every prompt a run sends, and is tight --

# A tokenizer of each kind: byte-level BPE (GPT-2), SentencePiece with a prefix space (Phi-3, as Llama 2), Llama 3's
# split, and SmolLM2's own. Each part of a prompt tokenized alone gets a SentencePiece prefix space, and Llama 3 joins
# the period after a label with the newlines after it: counted part by part, the worst prompt is a token off.
PLANNED_TOKENIZERS = {"byte-level": "gpt2", "sentencepiece": "phi3", "llama3": "llama", "smollm2": None}
SHOTS_PROMPT = PromptTemplate(name="toy", template="Review: {text}\nSentiment:", target=" {label}.",
                              instruction="Classify.\n\n",
                              verbalizer={"pos": "positive", "neg": "rather negative indeed"})


def shots_task() -> Any:
    """Four positive and three negative reviews (texts of the tokenizers' corpus and unseen characters), 2 queries."""
    from iclkit.data.spec import TaskData, TaskSpec

    texts = {"pos": [t for t, lab in DEMOS if lab == "positive"] + ["fine"],
             "neg": [t for t, lab in DEMOS if lab == "negative"]}
    train = [Example(f"{lab}{i}", {"text": t}, lab) for lab, ts in texts.items() for i, t in enumerate(ts)]
    test = [Example(f"q{i}", {"text": q}, lab) for i, (q, lab) in enumerate(zip(QUERIES[1:], ("neg", "pos")))]
    spec = TaskSpec(name="toy", type="classification", inputs=("text",), labels=("pos", "neg"), prompt="",
                    sources=())
    return TaskData(spec=spec, train=tuple(train), test=tuple(test), source="test")


def every_request(task: Any, k: int, relabel: bool) -> Iterator[LoglikelihoodRequest]:
    """Every request a k-shot episode of ``task`` (all classes) can send, by enumeration: each choice of k
    demonstrations per class, with ``relabel`` each label random labels can show on each of them, each query and
    answer; the demonstrations in a seeded random order (an episode shuffles them)."""
    by_label = {lab: [e for e in task.train if e.label == lab] for lab in task.labels}
    rng = random.Random(0)
    for parts in itertools.product(*(itertools.combinations(by_label[lab], k) for lab in task.labels)):
        demos = [d for part in parts for d in part]
        for shown in itertools.product(task.labels, repeat=len(demos)) if relabel else [[d.label for d in demos]]:
            support = [replace(d, label=lab) for d, lab in zip(demos, shown)]
            rng.shuffle(support)
            for q in task.test:
                r = SHOTS_PROMPT.render(support, q, task.labels)
                yield from (LoglikelihoodRequest(r.prefix, r.context, c) for c in r.continuations.values())


def whole_text_tokens(tok: Any, requests: list[LoglikelihoodRequest]) -> list[int]:
    """The reference count: each request's joined text tokenized whole, with the tokenizer's own special tokens."""
    return [len(ids) for ids in tok([r.prefix + r.context + r.continuation for r in requests])["input_ids"]]


@pytest.fixture(scope="module", params=list(PLANNED_TOKENIZERS))
def planned(request, tmp_path_factory):
    """(tokenizer kind, a model, its tokenizer): a tiny family model of that tokenizer, or SmolLM2 itself."""
    kind, family = request.param, PLANNED_TOKENIZERS[request.param]
    if family is None:
        smol = request.getfixturevalue("smol")
        return kind, smol.model, smol.tokenizer
    model, tok = build(family, tmp_path_factory.mktemp(family))
    return kind, model, tok


@pytest.mark.parametrize("probes", [("gold",), ("gold", "random")])
def test_shots_auto_plans_the_tokens_the_backend_sends(planned, probes):
    """With the window set to the longest 2-shot request any episode can send (counted on the whole text, by
    enumeration), --shots auto picks k = 2 and its worst case is exactly that count: a bound on every prompt of a run
    (enumerated, and the sampled episodes under the run's label probes), and the longest 3-shot request does not fit
    (the backend refuses it). A count a token high at any boundary would pick k = 1; a token low, k = 3."""
    kind, model, tok = planned
    task, relabel = shots_task(), "random" in probes
    two = list(every_request(task, 2, relabel))
    window = max(whole_text_tokens(tok, two))
    lm = HFCausalLM(model, tok, batch_size=4, context_length=window)
    plan = plan_task(task, [SHOTS_PROMPT], lm, probes=probes)
    assert (plan.max_shots, plan.limited_by) == (2, "context"), (kind, window, plan)
    assert plan.prompt_tokens[2] == window
    assert lm.token_counts(two) == whole_text_tokens(tok, two)  # what the backend counts is the whole text's
    three = list(every_request(task, 3, relabel))
    counts = whole_text_tokens(tok, three)
    assert max(counts) > window
    with pytest.raises(IclkitError, match="longer than the model's context window"):
        lm.loglikelihood([three[counts.index(max(counts))]])
    run = []  # the requests of a run's episodes, as the runner perturbs their labels
    for ep in sample_episodes(task, EpisodeConfig(shots=(1, 2), n_episodes=8, n_query=2, seed=0)):
        for probe in probes:
            shown = perturb_labels(ep, probe, 0).episode
            for q in shown.query:
                r = SHOTS_PROMPT.render(shown.support, q, task.labels)
                run += [LoglikelihoodRequest(r.prefix, r.context, c) for c in r.continuations.values()]
    assert max(whole_text_tokens(tok, run)) <= plan.prompt_tokens[2]
