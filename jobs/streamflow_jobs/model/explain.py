"""Which inputs drove a tree model's score for one row: path attribution over its trees.

Every node of a tree has a value: what the tree would answer had it stopped growing there (a
leaf's value is its answer). A row's walk from the root to its leaf changes that value at each
split; the change is credited to the split's input (Saabas' attribution, the path-wise
counterpart of TreeSHAP). Summed over the trees, the contributions add up to the model's margin
minus its value at the roots (the base value), so they say in the model's own units how far each
input moved this score, and they name only inputs the model actually used for this row.

It runs in pure Python over flat lists (one walk per tree, only for the decisions that need a
reason), with the same comparisons as the compiled walks and scalar float additions in a fixed
order: the same numbers on every machine, in the stream and in replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PathTrees:
    """All trees' nodes concatenated, children as global indices (-1 at leaves)."""

    roots: list[int]
    left: list[int]
    right: list[int]
    feature: list[int]
    threshold: list[float]
    value: list[float]  # larger = nearer to fraud (the sign is the caller's convention)

    def leaf(self, root: int, x: Sequence[float]) -> int:
        """The leaf ``x`` reaches from ``root`` (``x <= threshold`` goes left)."""
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        node = root
        while left[node] != -1:
            node = right[node] if x[feature[node]] > threshold[node] else left[node]
        return node

    def contributions(self, x: Sequence[float], n_inputs: int) -> list[float]:
        """Per input, the sum over trees of the value changes along ``x``'s path. ``x`` must
        hold the values exactly as the compiled walk compares them (e.g. float32-rounded)."""
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        value = self.value
        out = [0.0] * n_inputs
        for root in self.roots:
            node, child = root, left[root]
            while child != -1:
                f = feature[node]
                if x[f] > threshold[node]:
                    child = right[node]
                out[f] += value[child] - value[node]
                node = child
                child = left[node]
        return out

    def base_value(self) -> float:
        """The sum of the roots' values, tree by tree."""
        total = 0.0
        for root in self.roots:
            total += self.value[root]
        return total


def ranked(names: Sequence[str], contributions: Sequence[float]) -> list[tuple[str, float]]:
    """(name, contribution) of every input, largest ``|contribution|`` first, ties by name (a
    total order: the same list on every run)."""
    return sorted(zip(names, contributions, strict=True), key=lambda nc: (-abs(nc[1]), nc[0]))
