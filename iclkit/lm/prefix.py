"""Planning prefix-shared scoring: which token rows to run after a cached prefix, and where each answer is read.

Requests that share a prefix (an episode's demonstrations) are grouped; the prefix minus its last token is run once
and cached, and every distinct ``last prefix token + context + continuation[:-1]`` becomes one *row* continued from
that cache. Keeping the last prefix token in the rows means an empty context (or an empty prefix, k=0) needs no
special case. A continuation whose tokens are a prefix of another row (e.g. every one-token label of a query) is read
from that row, so all one-token labels of a query cost one row and one logit position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar


@dataclass(frozen=True)
class Target:
    """Request ``request`` is scored by ``tokens``, predicted by the row's logits from position ``start`` on."""

    request: int
    start: int
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Row:
    """Token ids continuing the cached prefix, and the requests read from them."""

    tokens: tuple[int, ...]
    targets: tuple[Target, ...]

    @property
    def keep(self) -> int:
        """How many final positions of this row need logits."""
        return max(len(self.tokens) - t.start for t in self.targets)


@dataclass(frozen=True)
class PrefixGroup:
    """One cached prefix and the rows that continue it."""

    shared: tuple[int, ...]
    rows: tuple[Row, ...]


def plan(items: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> list[PrefixGroup]:
    """Group ``(prefix ids, context ids, continuation ids)`` items by prefix; one row per distinct needed suffix."""
    by_prefix: dict[tuple[int, ...], dict[tuple[int, ...], dict[tuple[int, ...], list[Target]]]] = {}
    for i, (prefix, context, cont) in enumerate(items):
        prefix = tuple(prefix)
        shared = prefix[:-1]
        head = prefix[len(shared):] + tuple(context)  # what follows the cache, up to the answer
        suffix = head + tuple(cont[:-1])
        heads = by_prefix.setdefault(prefix, {})
        heads.setdefault(head, {}).setdefault(suffix, []).append(Target(i, len(head) - 1, tuple(cont)))
    groups = []
    for prefix, heads in by_prefix.items():
        rows: list[Row] = []
        for suffixes in heads.values():
            kept: list[tuple[tuple[int, ...], list[Target]]] = []
            for suffix in sorted(suffixes, key=len, reverse=True):
                host = next((k for k in kept if k[0][:len(suffix)] == suffix), None)
                if host is None:
                    kept.append((suffix, list(suffixes[suffix])))
                else:
                    host[1].extend(suffixes[suffix])
            rows += [Row(s, tuple(t)) for s, t in kept]
        groups.append(PrefixGroup(prefix[:-1], tuple(rows)))
    return groups


def batches(lengths: Sequence[int], max_rows: int, max_tokens: int, overhead: int | None = None) -> list[list[int]]:
    """Length-bucketed batches: longest first, each at most ``max_rows`` rows and ``max_tokens`` padded tokens.

    ``overhead=None``: each batch filled in turn. ``overhead=F``: the cut of the length-sorted rows into batches that
    runs the fewest padded tokens plus ``F`` per batch (dynamic programming), for a device where a forward pass costs
    about ``F`` tokens' work on top of its tokens (a CPU reading every weight once per pass); there a batch of
    16 rows of 17 to 61 tokens wastes a third of its work on padding, and cutting it in two costs less than that."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if overhead is not None:
        return _cheapest_cut([lengths[i] for i in order], order, max_rows, max_tokens, overhead)
    out: list[list[int]] = []
    for i in order:
        # Rows come longest first, so a batch's padded width is the length of its first row.
        if out and len(out[-1]) < max_rows and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _cheapest_cut(widths: Sequence[int], order: Sequence[int], max_rows: int, max_tokens: int,
                  overhead: int) -> list[list[int]]:
    """``widths`` sorted longest first; ``cost[i]``: the least cost of batching the first ``i`` rows, the last batch
    being rows ``j..i-1`` (padded to ``widths[j]``). Ties go to the larger last batch, so the cut is deterministic."""
    n = len(widths)
    cost = [0] * (n + 1)
    start = [0] * (n + 1)
    for i in range(1, n + 1):
        # a one-row batch (j = i - 1) is always allowed, whatever its width
        cost[i], start[i] = min((cost[j] + (i - j) * widths[j] + overhead, j)
                                for j in range(max(0, i - max_rows), i)
                                if i - j == 1 or (i - j) * widths[j] <= max_tokens)
    out: list[list[int]] = []
    i = n
    while i > 0:
        out.append(list(order[start[i]:i]))
        i = start[i]
    return out[::-1]


Unit = TypeVar("Unit")


def packs(units: Sequence[Unit], rows: int, prefix_len: Callable[[Unit], int], n_rows: Callable[[Unit], int],
          tokens: Callable[[Unit], int] | None = None, max_tokens: int = 0) -> list[list[Unit]]:
    """Units (a prefix and its rows) to run together: those with a non-empty prefix and fewer than ``rows`` rows are
    packed, longest prefix first, until their rows would pass ``rows`` (or their ``tokens`` ``max_tokens``); the
    others go alone, first."""
    packable = [u for u in units if prefix_len(u) and n_rows(u) < rows]
    out = [[u] for u in units if not (prefix_len(u) and n_rows(u) < rows)]
    current: list[Unit] = []
    held = size = 0  # rows and tokens of ``current``
    for u in sorted(packable, key=lambda u: -prefix_len(u)):
        more = tokens(u) if tokens is not None else 0
        if current and (held + n_rows(u) > rows or (tokens is not None and size + more > max_tokens)):
            out.append(current)
            current, held, size = [], 0, 0
        current.append(u)
        held, size = held + n_rows(u), size + more
    if current:
        out.append(current)
    return out
