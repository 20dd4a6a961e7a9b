"""deep_merge: later layers win; mappings merge, everything else replaces; inputs never change."""

from __future__ import annotations

import copy

import pytest

from loom.merge import deep_merge


@pytest.mark.parametrize(
    ("base", "override", "expected"),
    [
        ({}, {}, {}),
        ({"a": 1}, {}, {"a": 1}),
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1, "b": 2}, {"b": 3, "c": 4}, {"a": 1, "b": 3, "c": 4}),
        (
            {"dask": {"pip_spec": "dask", "worker_threads": 2, "deep": {"x": 1, "y": 2}}},
            {"dask": {"worker_threads": 8, "deep": {"y": 20, "z": 30}}},
            {"dask": {"pip_spec": "dask", "worker_threads": 8, "deep": {"x": 1, "y": 20, "z": 30}}},
        ),
        ({"l": [1, 2, 3]}, {"l": [4]}, {"l": [4]}),  # lists replace, they do not concatenate
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),  # a scalar replaces a mapping
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),  # a mapping replaces a scalar
        ({"a": {"x": 1}}, {"a": None}, {"a": None}),
        ({"a": {"x": 1}}, {"a": {}}, {"a": {"x": 1}}),
    ],
)
def test_deep_merge(base, override, expected):
    assert deep_merge(base, override) == expected


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": {"c": [1, 2]}, "keep": 1}, "list": [{"x": 1}]}
    override = {"a": {"b": {"d": 3}}, "new": {"n": [1]}}
    base_before, override_before = copy.deepcopy(base), copy.deepcopy(override)
    out = deep_merge(base, override)
    assert base == base_before and override == override_before
    # the result shares no mutable structure with the inputs
    out["a"]["b"]["c"].append(99)
    out["a"]["keep"] = 2
    out["list"][0]["x"] = 42
    out["new"]["n"].append(2)
    out["a"]["b"]["d"] = 0
    assert base == base_before and override == override_before


def test_deep_merge_layers_in_order():
    layers = [{"a": {"x": 1, "y": 1}}, {"a": {"y": 2, "z": 2}}, {"a": {"z": 3}}]
    out: dict = {}
    for layer in layers:
        out = deep_merge(out, layer)
    assert out == {"a": {"x": 1, "y": 2, "z": 3}}
