"""Packs prefix-sharing token sequences into forward passes: a stem plus branches, ancestor masks, restarted positions.

A job is the n+1 sequences of one chain (prefix ids + answer ids). They share
most of their tokens, but not always a clean prefix (BPE merges across the
join), so the layout is computed from the token ids: the longest sequence is
the stem; every other sequence becomes a branch holding its tokens after its
longest common prefix with the stem. A branch token attends to the stem up to
the branch's attach point and causally to its own branch; its position id
restarts at the attach point. Any node order in which every node follows its
ancestors is valid, so a layout over the token budget is processed in passes
on a KV cache that keeps only stem tokens between passes: a later node never
attends to another sequence's branch, so each pass's branches are cropped from
the cache after it, and the cache and every mask stay within the stem plus one
budget of tokens however many branches (steps x answer tokens) the job has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Layout:
    """One job's nodes in a topological order, and where each scored token is read."""

    tokens: np.ndarray  # token id per node
    position: np.ndarray  # position id per node (its depth in its sequence)
    segment: np.ndarray  # 0 = stem, b + 1 = branch b
    stem_limit: np.ndarray  # last stem position a node may attend to
    read_node: np.ndarray  # per scored token: the node whose logits predict it
    read_target: np.ndarray  # per scored token: its token id
    read_offsets: list[int] = field(default_factory=list)  # scored tokens of sequence k: [off[k], off[k+1])

    @property
    def size(self) -> int:
        return len(self.tokens)

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """Per-sequence slices of one value per scored token."""
        return [values[self.read_offsets[k]:self.read_offsets[k + 1]] for k in range(len(self.read_offsets) - 1)]


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def build_layout(sequences: Sequence[Sequence[int]], starts: Sequence[int]) -> Layout:
    """The stem-and-branches layout of sequences; tokens seq[starts[k]:] of each sequence are scored."""
    if not sequences or any(s < 1 for s in starts):
        raise ValueError("a job needs sequences, and scored tokens need a preceding token")
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    stem_k = max(range(len(seqs)), key=lambda k: (len(seqs[k]), k))
    stem = seqs[stem_k]
    attach = [len(stem) if k == stem_k else _common_prefix(seqs[k], stem) for k in range(len(seqs))]
    # Branches in attach order, each right after the stem node it hangs from.
    branch_order = sorted((k for k in range(len(seqs)) if len(seqs[k]) > attach[k]), key=lambda k: attach[k])
    parts_tok, parts_pos, parts_seg, parts_lim = [], [], [], []
    stem_node = np.empty(len(stem), dtype=np.int64)
    branch_node0: dict[int, int] = {}
    cursor = count = 0

    def emit(tok, pos, seg, lim):
        nonlocal count
        parts_tok.append(tok), parts_pos.append(pos)
        parts_seg.append(np.full(len(tok), seg, dtype=np.int64)), parts_lim.append(lim)
        count += len(tok)

    def emit_stem(upto: int):
        nonlocal cursor
        if upto > cursor:
            pos = np.arange(cursor, upto, dtype=np.int64)
            stem_node[cursor:upto] = np.arange(count, count + upto - cursor)
            emit(stem[cursor:upto], pos, 0, pos)
            cursor = upto

    for b, k in enumerate(branch_order, start=1):
        m = attach[k]
        emit_stem(m)
        branch_node0[k] = count
        emit(seqs[k][m:], np.arange(m, len(seqs[k]), dtype=np.int64), b, np.full(len(seqs[k]) - m, m - 1))
    emit_stem(len(stem))

    read_node, read_target, offsets = [], [], [0]
    for k, seq in enumerate(seqs):
        before = np.arange(starts[k] - 1, len(seq) - 1, dtype=np.int64)  # positions of the predicting tokens
        in_stem = before < attach[k]
        nodes = np.where(in_stem, stem_node[np.minimum(before, len(stem) - 1)],
                         branch_node0.get(k, 0) + before - attach[k])
        read_node.append(nodes)
        read_target.append(seq[starts[k]:])
        offsets.append(offsets[-1] + len(nodes))
    return Layout(
        tokens=np.concatenate(parts_tok), position=np.concatenate(parts_pos), segment=np.concatenate(parts_seg),
        stem_limit=np.concatenate(parts_lim), read_node=np.concatenate(read_node),
        read_target=np.concatenate(read_target), read_offsets=offsets,
    )


@dataclass(frozen=True)
class Chunk:
    """Nodes [start, end) of layout `job`."""

    job: int
    start: int
    end: int


@dataclass(frozen=True, eq=False)
class Pass:
    """One forward pass: whole small layouts side by side, or part of a large layout on its KV cache (cached=True).

    A cached pass's queries are `nodes` of its job (stem tokens first, then whole branches); its keys are the
    nodes in the cache, then the queries; afterwards the cache keeps its first `keep` entries."""

    chunks: tuple[Chunk, ...]
    cached: bool = False
    nodes: np.ndarray | None = None
    keep: int = 0

    @property
    def size(self) -> int:
        if self.nodes is not None:
            return len(self.nodes)
        return sum(c.end - c.start for c in self.chunks)


def plan_passes(layouts: Sequence[Layout], budget: int) -> list[Pass]:
    """Passes of at most `budget` query tokens: small layouts share passes, large ones run on a KV cache."""
    passes: list[Pass] = []
    open_chunks: list[Chunk] = []
    used = 0
    for job, layout in enumerate(layouts):
        if layout.size > budget:
            passes.extend(_cached_passes(job, layout, budget))
            continue
        if used + layout.size > budget and open_chunks:
            passes.append(Pass(tuple(open_chunks)))
            open_chunks, used = [], 0
        open_chunks.append(Chunk(job, 0, layout.size))
        used += layout.size
    if open_chunks:
        passes.append(Pass(tuple(open_chunks)))
    return passes


def _cached_passes(job: int, lay: Layout, budget: int) -> list[Pass]:
    """The passes of a layout over the budget, on a KV cache that holds only stem tokens between passes.

    A pass takes the next stem tokens, then whole branches hanging from the stem read so far; its branches are
    cropped from the cache after it (no later node attends to them). A branch longer than the budget runs alone
    in chunks, each on the cache of the earlier ones, and is cropped after its last chunk. So the cache holds at
    most stem + budget tokens, and a pass's mask budget x (stem + budget) entries: with every earlier node kept,
    a 256-step chain's answer copies made both grow with steps x answer tokens."""
    passes: list[Pass] = []
    cached = used = 0  # stem tokens in the cache; query tokens of the pass being filled
    stem_q: list[np.ndarray] = []
    branch_q: list[np.ndarray] = []

    def add(nodes: np.ndarray, keep: int) -> None:
        passes.append(Pass((Chunk(job, int(nodes.min()), int(nodes.max()) + 1),), True, nodes, keep))

    def flush() -> None:
        nonlocal cached, used
        if used:
            n_stem = sum(map(len, stem_q))
            add(np.concatenate(stem_q + branch_q), cached + n_stem)
            cached += n_stem
            stem_q.clear(), branch_q.clear()
            used = 0

    runs = np.split(np.arange(lay.size), np.flatnonzero(np.diff(lay.segment)) + 1)
    for run in runs:
        if lay.segment[run[0]] == 0:
            while len(run):
                if used == budget:
                    flush()
                take = run[:budget - used]
                stem_q.append(take)
                used += len(take)
                run = run[len(take):]
            continue
        if len(run) > budget - used:
            flush()
        if len(run) <= budget:
            branch_q.append(run)
            used += len(run)
            continue
        for a in range(0, len(run), budget):
            piece = run[a:a + budget]
            add(piece, cached if a + len(piece) == len(run) else cached + a + len(piece))
    flush()
    return passes


def pass_inputs(layouts: Sequence[Layout], p: Pass, cache_nodes: np.ndarray | None = None):
    """Token ids, position ids and the boolean allowed matrix (queries x keys) of a pass, as numpy arrays.

    For a cached pass the keys are `cache_nodes` (the job's nodes in the KV cache, in cache order), then the
    queries; otherwise the keys are the queries.
    """
    if p.cached:
        lay = layouts[p.chunks[0].job]
        q = p.nodes
        k = q if cache_nodes is None else np.concatenate([cache_nodes, q])
        return lay.tokens[q], lay.position[q], _allowed(lay, q, k)
    tokens, positions, blocks = [], [], []
    for chunk in p.chunks:
        lay = layouts[chunk.job]
        tokens.append(lay.tokens), positions.append(lay.position)
        blocks.append(_allowed(lay, slice(0, lay.size), slice(0, lay.size)))
    total = sum(b.shape[0] for b in blocks)
    allowed = np.zeros((total, total), dtype=bool)
    at = 0
    for b in blocks:  # jobs never see each other: block diagonal
        allowed[at:at + b.shape[0], at:at + b.shape[0]] = b
        at += b.shape[0]
    return np.concatenate(tokens), np.concatenate(positions), allowed


def _allowed(lay: Layout, q: slice | np.ndarray, k: slice | np.ndarray) -> np.ndarray:
    seg_q, seg_k = lay.segment[q][:, None], lay.segment[k][None, :]
    pos_q, pos_k = lay.position[q][:, None], lay.position[k][None, :]
    stem = (seg_k == 0) & (pos_k <= lay.stem_limit[q][:, None])
    own_branch = (seg_k == seg_q) & (seg_q > 0) & (pos_k <= pos_q)
    return stem | own_branch
