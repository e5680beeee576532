"""Scoring many judge prompts in one forward pass: a token trie with a tree attention mask.

`LocalLLM` sends a chunk of text prompts (about `score_batch_tokens` new tokens) here; the
prompts and their choices become one token sequence whose mask lets each token see the
reused prefix and its own ancestors only, so every log-prob equals a separate run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synque.llm.local import KV, LocalLLM, Prompt


class Trie:
    """Token sequences merged by common prefix; nodes in insertion order (parents first)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []  # -1: the node follows the reused prefix directly
        self.depths: list[int] = []  # position after the reused prefix
        self.fresh: list[int] = []  # nodes each `add` created
        self._children: dict[tuple[int, int], int] = {}

    def add(self, ids: Sequence[int], parent: int = -1) -> list[int]:
        """The node of each token of `ids` below `parent`, created where missing."""
        nodes, created = [], 0
        for tok in ids:
            node = self._children.get((parent, tok))
            if node is None:
                node = len(self.tokens)
                self._children[(parent, tok)] = node
                self.tokens.append(int(tok))
                self.parents.append(parent)
                self.depths.append(self.depths[parent] + 1 if parent >= 0 else 0)
                created += 1
            nodes.append(node)
            parent = node
        self.fresh.append(created)
        return nodes


def tree_scores(
    llm: LocalLLM,
    prompts: Sequence[Prompt],
    past: KV | None,
    start: int,
    choice_ids: list[list[int]],
) -> tuple[list[list[float]], list[int], Any]:
    """Every prompt of a chunk and all their choices in ONE forward pass (a token trie).

    Why: one forward per prompt spent most of its time outside the matrix products
    (re-reading the ~1,000-token rubric KV cache for attention, copying it into the
    cache, per-layer overheads of a ~40-token pass). Here the chunk's token sequences
    (each prompt after the reused `start` tokens, then each choice) are merged into a
    trie, so a shared rubric or example is computed once; a 4D mask lets each node see
    the reused prefix and its own ancestors only, and its position is its depth, so every
    log-prob equals a separate run's. Returns the summed log-prob per prompt and choice,
    each prompt's tokens that were shared with an earlier one, and the forward output.
    """
    import torch

    tree = Trie()
    paths = [tree.add(p.ids[start:]) for p in prompts]
    shared = [len(p.ids) - start - fresh for p, fresh in zip(prompts, tree.fresh, strict=True)]
    reads: list[list[list[tuple[int, int]]]] = []  # (node whose logits, token) per choice
    for path in paths:
        per = []
        for c in choice_ids:
            chain = [path[-1], *tree.add(c[:-1], parent=path[-1])]
            per.append(list(zip(chain, c, strict=True)))
        reads.append(per)
    n = len(tree.tokens)
    allowed = torch.zeros((n, n), dtype=torch.bool)
    for i, parent in enumerate(tree.parents):
        if parent >= 0:
            allowed[i] = allowed[parent]
        allowed[i, i] = True
    dtype = llm.net.dtype
    mask = torch.zeros((n, start + n), dtype=dtype)
    mask[:, start:].masked_fill_(~allowed, torch.finfo(dtype).min)
    rows = sorted({node for per in reads for chain in per for node, _ in chain})
    where = {node: k for k, node in enumerate(rows)}
    out = llm._run_net(
        torch.tensor([tree.tokens], device=llm.device),
        torch.tensor([[start + d for d in tree.depths]], device=llm.device),
        past,
        attention_mask=mask.to(llm.device)[None, None],
        **({llm._keep_arg: torch.tensor(rows, device=llm.device)} if llm._keep_arg else {}),
    )
    logits = out.logits[0] if llm._keep_arg else out.logits[0, rows]
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    scores = [
        [sum(float(logp[where[node], tok]) for node, tok in chain) for chain in per]
        for per in reads
    ]
    return scores, shared, (out, paths[-1])
