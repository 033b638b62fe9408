"""Medusa trees: acceptance-table validation, greedy construction, masks, positions, retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import (
    DEFAULT_ACCEPTANCE,
    TREES_DIR,
    Tree,
    build_tree,
    expected_accept_length,
    load_acceptance_table,
    load_tree_file,
    max_tree_size,
    tree_paths_for,
    validate_tree,
)
from medusa_roofline.decoding.tree_buffers import (
    decode_attention_mask,
    tree_attention_mask,
    tree_buffers,
    tree_position_ids,
)


@pytest.fixture(scope="module")
def table():
    return load_acceptance_table()


def prob(table, path):
    return math.prod(float(table[i, r]) for i, r in enumerate(path))


def reference_explore(table, n_candidates):
    """Medusa's explore_graph (linear scan over sibling/first-child neighbours), written independently."""
    heads, top_k = table.shape
    accepted = [(0,)]
    while len(accepted) < n_candidates - 1:
        neighbours = set()
        for node in accepted:
            if node[-1] + 1 < top_k:
                neighbours.add(node[:-1] + (node[-1] + 1,))
            if len(node) < heads:
                neighbours.add(node + (0,))
        best = max((nb for nb in neighbours if nb not in accepted), key=lambda nb: prob(table, nb))
        accepted.append(best)
    return accepted


# --------------------------------------------------------------------------- acceptance table

def test_default_table_shape_and_range(table):
    assert table.shape == (4, 10)
    assert ((table >= 0) & (table <= 1)).all()
    assert (table.sum(axis=1) <= 1).all()
    assert (np.diff(table, axis=1) <= 0).all(), "per-rank acceptance should not grow with rank"
    assert (np.diff(table[:, 0]) < 0).all(), "later heads predict further ahead, so are less accurate"
    assert max_tree_size(table) >= 128


def write(tmp_path, text, name="acc.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_ROWS = "0,0,0.5\n0,1,0.2\n1,0,0.3\n1,1,0.1\n"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("head,rank\n0,0\n", "lacks column(s) accuracy"),
        ("head,rank,acc\n0,0,0.5\n", "lacks column(s) accuracy"),
        ("head,rank,accuracy\n", "no data rows"),
        ("head,rank,accuracy\n0,0,high\n", "accuracy a number"),
        ("head,rank,accuracy\nx,0,0.5\n", "must be integers"),
        ("head,rank,accuracy\n0,0,1.5\n", "outside [0, 1]"),
        ("head,rank,accuracy\n0,0,-0.1\n", "outside [0, 1]"),
        ("head,rank,accuracy\n0,0,nan\n", "outside [0, 1]"),
        ("head,rank,accuracy\n-1,0,0.5\n", ">= 0"),
        ("head,rank,accuracy\n" + GOOD_ROWS + "1,1,0.1\n", "duplicate cell head=1 rank=1"),
        ("head,rank,accuracy\n0,0,0.5\n0,1,0.2\n1,0,0.3\n", "missing cell(s) head=1 rank=1"),
    ],
)
def test_bad_acceptance_tables(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_acceptance_table(path)
    msg = str(err.value)
    assert fragment in msg
    assert str(path) in msg and msg.startswith("acceptance:")


def test_missing_acceptance_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_acceptance_table(tmp_path / "nope.csv")


def test_good_table_any_row_order(tmp_path):
    path = write(tmp_path, "rank,accuracy,head\n1,0.1,1\n0,0.5,0\n1,0.2,0\n0,0.3,1\n")
    np.testing.assert_allclose(load_acceptance_table(path), [[0.5, 0.2], [0.3, 0.1]])
    assert load_acceptance_table(None).shape == load_acceptance_table(DEFAULT_ACCEPTANCE).shape


# --------------------------------------------------------------------------- construction

@pytest.mark.parametrize("n", [2, 5, 16, 32, 64, 128])
def test_tree_counts_order_validity(table, n):
    paths = build_tree(table, n)
    assert len(paths) == n - 1 == len(set(paths))
    assert paths == sorted(paths, key=lambda p: (len(p), p))
    present = set(paths)
    for p in paths:
        assert 1 <= len(p) <= table.shape[0]
        assert all(0 <= r < table.shape[1] for r in p)
        assert len(p) == 1 or p[:-1] in present, f"{p} lacks its parent"
        assert p[-1] == 0 or p[:-1] + (p[-1] - 1,) in present, f"{p} lacks its previous sibling"


def test_trees_are_nested(table):
    previous = set()
    for n in range(2, 130):
        current = set(build_tree(table, n))
        assert previous < current and len(current - previous) == 1
        previous = current


def test_greedy_matches_reference_explorer():
    rng = np.random.default_rng(0)
    random_table = np.sort(rng.uniform(0.01, 0.6, size=(4, 6)), axis=1)[:, ::-1]
    random_table[:, 2] = random_table[:, 1]  # equal neighbours: ties must not break nesting
    for n in (2, 9, 40, 100):
        ours = build_tree(random_table, n)
        ref = reference_explore(random_table, n)
        assert [prob(random_table, p) for p in sorted(ours, key=lambda p: -prob(random_table, p))] == \
            pytest.approx(sorted((prob(random_table, p) for p in ref), reverse=True))
    # without ties the sets are identical
    strict = np.sort(rng.uniform(0.01, 0.6, size=(3, 5)), axis=1)[:, ::-1]
    for n in (3, 17, 60):
        assert set(build_tree(strict, n)) == set(reference_explore(strict, n))


def test_greedy_picks_highest_expectation(table):
    paths = build_tree(table, 64)
    chosen = set(paths)
    frontier = set()
    for p in [()] + paths:
        for r in range(table.shape[1]):
            child = p + (r,)
            if len(child) <= table.shape[0] and child not in chosen:
                frontier.add(child)
    assert min(prob(table, p) for p in paths) >= max(prob(table, p) for p in frontier)
    assert expected_accept_length(table, paths) > expected_accept_length(table, build_tree(table, 16)) > 1.5


def test_full_tree_and_bounds(table):
    limit = max_tree_size(table)
    assert limit == 1 + sum(10 ** d for d in range(1, 5))
    assert len(build_tree(table, limit)) == limit - 1
    for bad in (0, 1, limit + 1):
        with pytest.raises(ConfigError, match="^candidates:"):
            build_tree(table, bad)
    with pytest.raises(ConfigError, match="^candidates:"):
        build_tree(table, 16.0)


# --------------------------------------------------------------------------- buffers

TREES = [
    [(0,)],
    [(0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0)],
    None,  # filled with the default 32-node tree
]


@pytest.fixture(params=range(len(TREES)))
def paths(request, table):
    p = TREES[request.param]
    return build_tree(table, 32) if p is None else p


def brute_visible(paths):
    nodes = [()] + sorted(paths, key=lambda p: (len(p), p))
    return torch.tensor([[len(b) <= len(a) and a[: len(b)] == b for b in nodes] for a in nodes])


def test_buffers_basic(paths):
    buf = tree_buffers(list(reversed(paths)))  # any input order
    nodes = [()] + buf.paths
    assert buf.n == len(paths) + 1
    assert buf.depth.tolist() == [len(p) for p in nodes]
    assert buf.parent[0] == -1 and buf.head[0] == -1 and buf.rank[0] == -1
    for i, p in enumerate(nodes[1:], start=1):
        assert nodes[buf.parent[i]] == p[:-1]
        assert buf.head[i] == len(p) - 1 and buf.rank[i] == p[-1]
    assert torch.equal(buf.ancestor_mask, brute_visible(paths))
    assert buf.num_heads == max(len(p) for p in paths)
    assert buf.top_k == max(p[-1] for p in paths) + 1


def test_retrieve_indices(paths):
    buf = tree_buffers(paths)
    nodes = [()] + buf.paths
    ridx = buf.retrieve_indices
    leaves = {p for p in paths if not any(q[:-1] == p for q in paths)}
    assert ridx.shape == (len(leaves), max(len(p) for p in paths) + 1)
    seen_leaves, seen_nodes = set(), set()
    for row in ridx.tolist():
        real = [i for i in row if i >= 0]
        assert row[: len(real)] == real, "padding only at the end"
        assert real[0] == 0
        for k, i in enumerate(real):
            assert len(nodes[i]) == k and nodes[i] == nodes[real[-1]][:k]
        seen_leaves.add(nodes[real[-1]])
        seen_nodes.update(real)
    assert seen_leaves == leaves and seen_nodes == set(range(buf.n))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_attention_mask_uniform_past(paths, dtype):
    buf = tree_buffers(paths)
    past, batch = 5, 2
    mask = tree_attention_mask(buf, past, batch, dtype, "cpu")
    assert mask.shape == (batch, 1, buf.n, past + buf.n) and mask.dtype == dtype
    expected = torch.cat([torch.ones(buf.n, past, dtype=torch.bool), brute_visible(paths)], dim=1)
    for b in range(batch):
        assert torch.equal(mask[b, 0] == 0, expected)
        assert torch.equal(mask[b, 0] != 0, mask[b, 0] == torch.finfo(dtype).min)


def test_attention_mask_ragged_past(paths):
    buf = tree_buffers(paths)
    past = torch.tensor([3, 6, 0])
    mask = tree_attention_mask(buf, past, 3, torch.float32, "cpu", cache_len=7)
    assert mask.shape == (3, 1, buf.n, 7 + buf.n)
    for b, valid in enumerate(past.tolist()):
        cache_part = torch.zeros(buf.n, 7, dtype=torch.bool)
        cache_part[:, :valid] = True
        expected = torch.cat([cache_part, brute_visible(paths)], dim=1)
        assert torch.equal(mask[b, 0] == 0, expected)


def test_position_ids(paths):
    buf = tree_buffers(paths)
    pos = tree_position_ids(buf, 9, 2)
    depth = torch.tensor([0] + [len(p) for p in buf.paths])
    assert pos.dtype == torch.long and pos.shape == (2, buf.n)
    assert torch.equal(pos, (9 + depth).expand(2, -1))
    ragged = tree_position_ids(buf, torch.tensor([4, 11]), 2)
    assert torch.equal(ragged, torch.stack([4 + depth, 11 + depth]))


@pytest.mark.parametrize("bad, fragment", [
    ([], "at least one path"),
    ([(0,), (0,)], "duplicates"),
    ([(0,), (1, 0)], "no parent"),
    ([(0,), (-1,)], "ranks >= 0"),
    ([()], "non-empty"),
])
def test_bad_paths(bad, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tree_buffers(bad)


def test_ragged_mask_hides_left_padding_and_positions_count_from_start(paths):
    buf = tree_buffers(paths)
    past, start = torch.tensor([5, 7]), torch.tensor([2, 0])
    mask = tree_attention_mask(buf, past, 2, torch.float32, "cpu", cache_len=7, start=start)
    visible = mask[:, 0] == 0
    assert not visible[0, :, :2].any() and visible[0, :, 2:5].all() and not visible[0, :, 5:7].any()
    assert visible[1, :, :7].all()
    assert torch.equal(tree_position_ids(buf, past, 2, start)[:, 0], torch.tensor([3, 7]))
    one = decode_attention_mask(torch.ones(1, 1, dtype=torch.bool), past, 2, torch.float32, cache_len=7, start=start)
    assert one.shape == (2, 1, 1, 8) and torch.equal(one[0, 0, 0] == 0, torch.tensor([0, 0, 1, 1, 1, 0, 0, 1]).bool())


# --------------------------------------------------------------------------- explicit trees

MC_SIM_7B_63 = TREES_DIR / "mc_sim_7b_63.yaml"


def test_shipped_upstream_tree(table):
    tree = load_tree_file(MC_SIM_7B_63, num_heads=4, top_k=10, max_nodes=4096)
    assert (tree.name, tree.candidates, tree.depth, len(set(tree.paths))) == ("mc_sim_7b_63", 64, 4, 63)
    assert tree.paths[:3] == ((0,), (1,), (2,)) and tree.paths[-1] == (0, 0, 0, 1), "canonical (len, path) order"
    assert tree_buffers(tree.paths).n == 64
    assert 1 < expected_accept_length(table, list(tree.paths)) < 64
    assert tree_paths_for(str(MC_SIM_7B_63), table) == tree


@pytest.mark.parametrize("text", [
    "[[0], [0, 0], [1], [0, 1]]\n",                                    # the upstream Python literal (JSON)
    "paths:\n  - [0]\n  - [0, 0]\n  - [1]\n  - [0, 1]\nsource: me\n",  # YAML mapping
    '{"paths": [[1], [0], [0, 1], [0, 0]], "description": "json"}',   # any order
])
def test_tree_file_formats(tmp_path, text):
    tree = load_tree_file(write(tmp_path, text, "mine.json"))
    assert tree.name == "mine" and tree.paths == ((0,), (1,), (0, 0), (0, 1)) and tree.candidates == 5


@pytest.mark.parametrize("text, kwargs, fragment", [
    ("[[0], [1, 0, 2]]", {}, r"path \[1, 0, 2\] has no parent \[1, 0\]"),
    ("[[0], [0, 12]]", {"top_k": 10}, r"path \[0, 12\] has rank 12 beyond the heads' top-10"),
    ("[[0], [0, 0], [0, 0, 0]]", {"num_heads": 2}, r"path \[0, 0, 0\] is 3 deep but there are only 2 Medusa heads"),
    ("[[0], [1], [0]]", {}, r"path \[0\] appears more than once"),
    ("[]", {}, "the tree is empty"),
    ("paths: []", {}, "the tree is empty"),
    ("[[0], [1], [2]]", {"max_nodes": 3}, "4 nodes .* exceed the 3 positions"),
    ("[[0], [0.5]]", {}, "not a list of integer ranks"),
    ("[[0], [true]]", {}, "not a list of integer ranks"),
    ("[[0], [-1]]", {}, "ranks >= 0"),
    ("[[0], 3]", {}, "not a list of integer ranks"),
    ("{nodes: [[0]]}", {}, "unknown key"),
    ("7", {}, "must hold a list of paths"),
    ("[[0], [1", {}, "not valid YAML/JSON"),
])
def test_bad_tree_files_name_file_and_path(tmp_path, text, kwargs, fragment):
    path = write(tmp_path, text, "t.yaml")
    with pytest.raises(ConfigError, match=fragment) as err:
        load_tree_file(path, **kwargs)
    assert str(err.value).startswith(f"tree: tree file {path}")


def test_missing_tree_file(tmp_path):
    with pytest.raises(ConfigError, match="^tree: .*does not exist"):
        load_tree_file(tmp_path / "none.yaml")


def test_tree_paths_for_count_or_tree(table):
    built = tree_paths_for(32, table)
    assert built.paths == tuple(build_tree(table, 32)) and built.candidates == 32 and built.name == "greedy-32"
    mine = Tree("mine", ((0,), (0, 0)))
    assert tree_paths_for(mine) is mine
    with pytest.raises(ConfigError, match=r"tree mine: path \[0, 0\] is 2 deep but there are only 1"):
        tree_paths_for(mine, num_heads=1)
    with pytest.raises(ConfigError, match="rank 10 beyond the heads' top-10"):
        tree_paths_for(Tree("wide", ((10,),)), table)  # the table has ranks 0..9: its expected tokens are undefined
    with pytest.raises(ConfigError, match="^candidates: 64 nodes exceed the 16"):
        tree_paths_for(64, table, max_nodes=16)
    with pytest.raises(ConfigError, match="^candidates"):
        tree_paths_for(True, table)
    assert validate_tree([[1], [0]]) == [(0,), (1,)]
