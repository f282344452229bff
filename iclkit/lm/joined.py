"""A prompt's token ids as its joined text tokenizes them, without tokenizing every prompt whole.

Requests come as (prefix, context, continuation) strings (``iclkit.lm.base``). The ids a model must see are those of
the whole text ``lead + prefix + context + continuation``, whatever the tokenizer does at a text's start or across a
boundary; tokenizing each prompt whole would cost a full prompt per query. ``JoinedTokenization`` gets the same ids
from short windows anchored where tokenization cannot be changed by what comes before (a space-led word), checks
each window, and falls back to the whole text when a window does not restart cleanly.
"""

from __future__ import annotations

from typing import Any, Sequence

from iclkit.errors import IclkitError
from iclkit.lm.base import LoglikelihoodRequest, lead_for

MEMO = 100_000  # texts remembered per memo: prefixes repeat across the queries of an episode and across runs


class JoinedTokenization:
    """Mixin of a backend with a Hugging Face ``tokenizer`` and its ``lead`` (the ids it puts before every text):
    the tokenization half of the LM protocol (``tokenize``, ``token_counts``) and the ids every scoring path sends."""

    tokenizer: Any
    lead: list[int]

    def __init__(self) -> None:
        self._encoded: dict[str, list[int]] = {}
        self._anchors: dict[str, tuple[int, int] | None] = {}

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (memoized: prefixes repeat across requests)."""
        ids = self._encoded.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
            if len(self._encoded) < MEMO:
                self._encoded[text] = ids
        return list(ids)  # a copy: a caller that appends to it must not change the memo

    def split(self, prefix: str, context: str) -> tuple[list[int], list[int]]:
        """Token ids of ``lead + prefix`` and of ``context`` (``splits`` of one pair)."""
        return self.splits([(prefix, context)])[0]

    def splits(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Token ids of ``lead + prefix`` and of ``context`` for each pair, as the joined text tokenizes them, cut
        after the tokens it shares with the prefix tokenized alone; no lead when the prompt's text already starts
        with it (``lead_for``: a chat template that writes BOS gets no second one).

        So a prompt's ids are its joined text's, whatever a tokenizer does at a text's start or across the boundary:
        a SentencePiece prefix space (Llama 2, Mistral, Phi-3) is not put again in front of the query, and a token
        spanning the boundary (Llama 3 joins a period with the newlines after it) stays whole. Whitespace that ends
        the prefix is left out of its own tokenization (BPE attaches it to the next word), so the prompts of an
        episode share the ids of its demonstrations up to the cut, and that part is what gets cached.

        The joined text is not tokenized whole, which would cost a full prompt per query: tokenization restarts at
        the prefix's last space-led word (``_anchor``), a pre-token start that the text before it cannot change,
        and the window from there is checked to reproduce that word's first token (else the whole text is used).
        """
        bodies = [p.rstrip() for p, _ in pairs]
        anchors = [self._anchor(b) for b in bodies]
        windows = self._encode_all([p[a[1]:] + c if a else p + c for (p, c), a in zip(pairs, anchors)])
        out = []
        for (prefix, context), body, a, ids in zip(pairs, bodies, anchors, windows):
            head = self.tokenize(body)
            start = a[0] if a else 0
            n = _common(head[start:], ids)
            if a and n == 0:  # the window does not restart cleanly there: tokenize the whole text
                ids, start = self._encode_all([prefix + context])[0], 0
                n = _common(head, ids)
            pre, ctx = head[:start] + ids[:n], ids[n:]
            out.append((lead_for(self.lead, (pre + ctx)[:len(self.lead)]) + pre, ctx))
        return out

    def _anchor(self, body: str) -> tuple[int, int] | None:
        """``(k, pos)``: ``body[pos:]`` is its last word led by one space, and ``body[:pos]`` tokenizes as the first
        ``k`` tokens of ``body``; None if it has no such word (memoized: a prefix serves many queries)."""
        if body not in self._anchors:
            pos = body.rfind(" ")
            while pos > 0 and body[pos - 1].isspace():
                pos = body.rfind(" ", 0, pos - 1)
            found = None
            if pos > 0:
                head, before = self.tokenize(body), self.tokenize(body[:pos])
                if len(before) < len(head) and head[:len(before)] == before:
                    found = (len(before), pos)
            if len(self._anchors) < MEMO:
                self._anchors[body] = found
            return found
        return self._anchors[body]

    def _encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, from one batched tokenizer call (outside the memo of
        ``tokenize``: each of these texts is tokenized once)."""
        distinct = [t for t in dict.fromkeys(texts) if t]
        ids = self.tokenizer(distinct, add_special_tokens=False)["input_ids"] if distinct else []
        found = dict(zip(distinct, ids))
        return [list(found.get(t, [])) for t in texts]

    def parts(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[list[int], list[int], list[int]]]:
        """``(lead + prefix, context, continuation)`` ids of each request, as the joined text tokenizes them.

        The continuation's ids are those the context and continuation get tokenized together, after the tokens they
        share with the context alone (the context anchors the answer's boundary as the whole text would, at a
        fraction of the cost; a blank context anchors on prefix + context). A token that spans the boundary (a
        label without a space after a colon, in Llama 3's split) is scored with the continuation.
        """
        pairs = list(dict.fromkeys((r.prefix, r.context) for r in requests))
        prompts = dict(zip(pairs, self.splits(pairs)))
        anchors = [r.context if r.context.strip() else r.prefix + r.context for r in requests]
        alone = self._encode_all(anchors)
        joined = self._encode_all([a + r.continuation for a, r in zip(anchors, requests)])
        out = []
        for r, a, j in zip(requests, alone, joined):
            prefix, ctx = prompts[(r.prefix, r.context)]
            n = _common(a, j)
            prompt, keep = prefix + ctx, len(prefix) + len(ctx) - (len(a) - n)
            cut = min(len(prefix), keep)
            out.append((prompt[:cut], prompt[cut:keep], j[n:]))
        return out

    def token_counts(self, requests: Sequence[LoglikelihoodRequest]) -> list[int]:
        """Tokens of each request as ``loglikelihood`` sends and checks them: its ``parts``, lead included."""
        return [len(prefix) + len(ctx) + len(cont) for prefix, ctx, cont in self.parts(requests)]

    def request_ids(self, prefix: str, context: str) -> list[int]:
        """The prompt's token ids as every scoring path sees them (``split`` joined); an empty prompt is an error."""
        head, ctx = self.split(prefix, context)
        if not head and not ctx:
            raise IclkitError("empty prompt: the model needs at least one context token (this tokenizer adds no BOS)")
        return head + ctx


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common start of two id lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
