"""Shared tiny survey fixtures: a few dozen small synthetic galaxies converted to records."""

from __future__ import annotations

import pytest

TINY_SIZE = 16
TINY_N = 32


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """A synthetic survey of 32 MAPS files with its catalogue (SF-rich, a few of every class)."""
    from ifskeras.synth import make_survey

    out = tmp_path_factory.mktemp("survey")
    fractions = {"SF": 0.4, "composite": 0.1, "Seyfert": 0.15, "LINER": 0.1, "retired": 0.1, "blueberry": 0.15}
    make_survey(out, TINY_N, seed=3, class_fractions=fractions)
    return out


@pytest.fixture(scope="session")
def tiny_records(tiny_survey, tmp_path_factory):
    """Records of the tiny survey at 16 x 16, 19 lines, two shards per split, labels joined."""
    from ifskeras.records import ConvertOptions, convert_maps

    out = tmp_path_factory.mktemp("records") / "records"
    options = ConvertOptions(size=TINY_SIZE, val_fraction=0.2, test_fraction=0.1, min_shards=2,
                             labels=str(tiny_survey / "catalog.csv"))
    result = convert_maps([tiny_survey], out, options, jobs=1)
    assert result.converted == TINY_N, result
    return out
