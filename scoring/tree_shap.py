"""Exact SHAP values of a CatBoost model in microseconds: a table per tree and leaf, built once.

CatBoost's own ``get_feature_importance(type="ShapValues")`` prepares its per-leaf values on
every call (about 12 ms for one record of a 270-tree, depth-8 model, and 1.4 ms a record in
batches), which made explanations the slowest part of scoring. For an oblivious tree, every split
of a level is the same, so the path a record takes is fully described by its leaf index, and so
is its TreeSHAP value (path-dependent, weighted by the training examples that reached each node,
as CatBoost computes it: https://catboost.ai/docs/en/concepts/shap-values). This module computes
those values once per model, for every tree and leaf, following CatBoost's conventions:

- the root is the tree's last split (CatBoost's leaf index has the first split in bit 0);
- the players are "combination classes": a float feature, a one-hot categorical feature, or the
  set of categorical features of a CTR (float borders inside a CTR combination do not count);
  a class's value is shared equally among its features;
- values are in the model's raw units, times the model's scale.

Scoring then needs only CatBoost's leaf indexes for the records and one gather: the same numbers
as CatBoost's SHAP values (kept as float32: tests compare them to 1e-5), at a small fraction of
the cost. Models
this cannot hold (non-symmetric trees, no leaf weights, very deep trees) return None and callers
fall back to CatBoost's own computation.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from catboost import CatBoost
from threadpoolctl import ThreadpoolController

# 2^depth subsets x 2^depth leaves per tree: depth 8 builds in about 2 ms a tree, depth 10 in
# ~60 ms (a 1,000-tree model would take a minute to load), so deeper models keep CatBoost's way.
MAX_DEPTH = 8
# Memory for the rows explained at once: a row's gathered values are trees x slots float32s, so
# the rows per block follow the model's size (a fixed 2,048 rows held 26 MB for a 796-tree model
# against 12 MB for 360 trees, and the tree count grows with the training data).
CHUNK_BYTES = 8 * 1024 * 1024
# Larger tables (trees x leaves x players x classes, 4 bytes each) are not worth the memory.
MAX_TABLE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TreeShap:
    """Per-tree, per-leaf SHAP values of one model.

    Attributes:
        values: (trees, leaves, slots, dimensions) SHAP value of each player slot of each tree
            for a record in each leaf (padded with zeros).
        assign: (trees * slots, features) how a slot's value is shared among flat features.
        dimensions: the model's output dimensions (1, or the number of classes).
    """

    values: np.ndarray
    assign: np.ndarray
    dimensions: int

    def contributions(self, leaves: np.ndarray, rows_class: np.ndarray | None = None) -> np.ndarray:
        """SHAP values of records from their leaf indexes.

        Args:
            leaves: (records, trees) leaf index of each record in each tree
                (``CatBoost.calc_leaf_indexes``).
            rows_class: multiclass: the class (dimension) to explain for each record.

        Returns:
            (records, features) SHAP values, without the expected value.
        """
        n, trees = leaves.shape
        out = np.zeros((n, self.assign.shape[1]))
        tree_index = np.arange(trees)[None, :]
        dims = np.zeros(n, dtype=np.int64) if rows_class is None else rows_class
        # One thread: OpenBLAS's threads cost 2-3x more than they save for a product this small
        # (1,000 x 2,000 x 30), far more on a busy machine; 8 us to switch.
        with _BLAS.limit(limits=1, user_api="blas"):
            # blocks of rows: the gathered values are trees x slots floats a row (8 KB for a
            # 270-tree model), so a 50,000-lead batch at once would hold 430 MB (CHUNK_BYTES)
            rows = max(64, CHUNK_BYTES // (self.values.itemsize * self.assign.shape[0]))
            for start in range(0, n, rows):
                block = slice(start, min(start + rows, n))
                if self.dimensions == 1:
                    gathered = self.values[tree_index, leaves[block], :, 0]
                else:
                    gathered = self.values[tree_index, leaves[block], :, dims[block, None]]
                out[block] = gathered.reshape(len(gathered), -1) @ self.assign
        return out


_BLAS = ThreadpoolController()

# id(model) -> table; CatBoost models are not hashable, so entries leave with their model
_CACHE: dict[int, TreeShap | None] = {}
_CACHE_LOCK = threading.Lock()


def tree_shap(model: CatBoost, features: int) -> TreeShap | None:
    """The model's SHAP table, built on first use and kept as long as the model lives.

    Args:
        model: a fitted CatBoost model.
        features: the number of flat features the model reads.

    Returns:
        The table, or None when the model is not one this module handles (then use CatBoost's
        ``get_feature_importance(type="ShapValues")``).
    """
    key = id(model)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    table = build_tree_shap(model, features)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = table
            weakref.finalize(model, _CACHE.pop, key, None)
    return table


def build_tree_shap(model: CatBoost, features: int) -> TreeShap | None:
    """Compute the SHAP table of a model (see the module docstring).

    Args:
        model: a fitted CatBoost model.
        features: the number of flat features the model reads.

    Returns:
        The table, or None when the model has non-symmetric trees, no leaf weights, trees deeper
        than ``MAX_DEPTH`` or a table over ``MAX_TABLE_BYTES``.
    """
    if not model.is_fitted():
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        try:
            model.save_model(str(path), format="json")
        except Exception:  # CatBoost refuses JSON for some models: use its SHAP then
            return None
        data = json.loads(path.read_text())
    trees = data.get("oblivious_trees")
    if not trees:
        return None
    classify = _split_classes(data.get("features_info", {}))
    depth = max(len(t.get("splits") or []) for t in trees)
    scale, _ = data.get("scale_and_bias", [1.0, [0.0]])
    leaf_count = 2**depth
    dimensions = len(trees[0]["leaf_values"]) // max(len(trees[0]["leaf_weights"] or [1]), 1)
    if depth > MAX_DEPTH or dimensions < 1:
        return None
    slots = max(depth, 1)
    if len(trees) * leaf_count * slots * dimensions * 4 > MAX_TABLE_BYTES:
        return None
    # float32: half the memory traffic of the gather, which is most of the cost; the values stay
    # within 1e-6 of CatBoost's (reasons compare them with 0.02)
    values = np.zeros((len(trees), leaf_count, slots, dimensions), dtype=np.float32)
    assign = np.zeros((len(trees) * slots, features), dtype=np.float32)
    for t, tree in enumerate(trees):
        splits = tree.get("splits") or []
        weights = np.asarray(tree.get("leaf_weights") or [], dtype=float)
        leaf_values = np.asarray(tree["leaf_values"], dtype=float)
        if len(weights) != 2 ** len(splits) or len(leaf_values) != len(weights) * dimensions:
            return None
        players: list[tuple[int, ...]] = []
        level_player = []
        for split in splits:
            key = classify(split)
            if key is None:
                return None
            if key not in players:
                players.append(key)
            level_player.append(players.index(key))
        if not players:
            continue  # a constant tree: only the expected value
        if any(f >= features for key in players for f in key):
            return None
        table = _tree_table(leaf_values.reshape(len(weights), dimensions), weights, level_player)
        values[t, : len(weights), : len(players)] = table * float(scale)
        for p, key in enumerate(players):
            for f in key:
                assign[t * slots + p, f] += 1.0 / len(key)
    return TreeShap(values=values, assign=assign, dimensions=dimensions)


def _split_classes(info: dict[str, Any]) -> Callable[[dict[str, Any]], tuple[int, ...] | None]:
    """A function giving a split's combination class (its flat feature indexes).

    Float and one-hot splits name their feature. A CTR split names only its binary feature index:
    CatBoost numbers binary features float borders first, then one-hot values, then CTR borders,
    each in the model's order, so the CTR is found by counting (and checked by its border). A
    CTR's class is the set of its categorical features.
    """
    cats = info.get("categorical_features", [])
    cat_flat = {int(c["feature_index"]): int(c["flat_feature_index"]) for c in cats}
    float_flat = {
        int(f["feature_index"]): int(f["flat_feature_index"])
        for f in info.get("float_features", [])
    }
    offset = sum(len(f.get("borders") or []) for f in info.get("float_features", []))
    offset += sum(len(c.get("values") or []) for c in cats)
    ctrs: list[tuple[tuple[int, ...], float]] = []
    for ctr in info.get("ctrs", []):
        key = tuple(
            sorted(
                {
                    cat_flat.get(int(e.get("cat_feature_index", -1)), -1)
                    for e in ctr.get("elements", [])
                    if e.get("combination_element") == "cat_feature_value"
                }
            )
        )
        ctrs += [(key, float(border)) for border in ctr.get("borders") or []]

    def classify(split: dict[str, Any]) -> tuple[int, ...] | None:
        kind = split.get("split_type")
        if kind == "FloatFeature":
            flat = float_flat.get(split.get("float_feature_index", -1))
            return None if flat is None else (flat,)
        if kind == "OneHotFeature":
            flat = cat_flat.get(split.get("cat_feature_index", -1))
            return None if flat is None else (flat,)
        if kind == "OnlineCtr":
            index = int(split.get("split_index", -1)) - offset
            if not 0 <= index < len(ctrs):
                return None
            key, border = ctrs[index]
            if -1 in key or not key or not math.isclose(border, float(split.get("border", 0))):
                return None
            return key
        return None  # text or embedding features: not handled here

    return classify


def _tree_table(values: np.ndarray, weights: np.ndarray, level_player: list[int]) -> np.ndarray:
    """TreeSHAP of every leaf of one oblivious tree.

    Args:
        values: (leaves, dimensions) leaf values.
        weights: (leaves,) training weight of each leaf.
        level_player: the player of each level (split order).

    Returns:
        (leaves, players, dimensions) SHAP values.
    """
    depth = len(level_player)
    players = max(level_player) + 1
    leaves = np.arange(2**depth)
    # Path-dependent expectations descend from the root, CatBoost's last split. At a level whose
    # player is absent from a coalition the record goes both ways, weighted by the share of
    # training examples of each child in its parent node.
    order = list(range(depth - 1, -1, -1))
    ratios = np.empty((depth, len(leaves)))
    known = 0
    for step, level in enumerate(order):
        parent = _group_sum(weights, leaves & known)
        known |= 1 << level
        child = _group_sum(weights, leaves & known)
        ratios[step] = np.divide(child, parent, out=np.full(len(leaves), 0.5), where=parent > 0)
    subsets = np.arange(2**players)
    member = (subsets[:, None] >> np.asarray(level_player)[None, :]) & 1  # (subsets, levels)
    reach = np.ones((len(subsets), len(leaves)))
    for step, level in enumerate(order):
        reach *= np.where(member[:, level, None] == 1, 1.0, ratios[step][None, :])
    # expected[S, L]: the sum over leaves agreeing with L on S's levels, of value x reach
    expected = reach[:, :, None] * values[None, :, :]
    for level in range(depth):
        free = member[:, level] == 0
        partner = leaves ^ (1 << level)
        expected[free] = expected[free] + expected[free][:, partner]
    sizes = np.array([bin(s).count("1") for s in subsets])
    shapley = np.array(
        [
            math.factorial(s) * math.factorial(players - s - 1) / math.factorial(players)
            for s in range(players)
        ]
    )
    out = np.zeros((len(leaves), players, values.shape[1]))
    for p in range(players):
        without = subsets[(subsets >> p) & 1 == 0]
        weight = shapley[sizes[without]][:, None, None]
        out[:, p] = (weight * (expected[without | (1 << p)] - expected[without])).sum(axis=0)
    return out


def _group_sum(weights: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each leaf's group total: the sum of weights over leaves with the same key."""
    return np.bincount(keys, weights=weights, minlength=len(weights))[keys]
