"""Shared tiny survey fixtures: a few dozen small synthetic galaxies converted to records."""

from __future__ import annotations

import pytest

TINY_SIZE = 16
TINY_N = 32


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """A synthetic survey of 32 MAPS files with its catalogue (SF-rich, a few of every class)."""
    from ifskeras.survey.synth import make_survey

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


def _tiny_fit(records, run_dir, kind: str, train=(), **sections):
    from ifskeras.learning.config import smoke_config
    from ifskeras.learning.train import fit

    config = smoke_config(kind).override(
        train={"epochs": 3, "learning_rate": 1e-2, "early_stopping_patience": 0, **dict(train)}, **sections
    )
    return fit(records, run_dir, config, progress=False)


@pytest.fixture(scope="session")
def trained_ae(tiny_records, tmp_path_factory):
    """A 3-epoch smoke AE run on the tiny records, exported to run/model (shared: fits are slow to trace)."""
    return _tiny_fit(tiny_records, tmp_path_factory.mktemp("ae") / "run", "ae")


@pytest.fixture(scope="session")
def trained_vae(tiny_records, tmp_path_factory):
    """A 3-epoch smoke VAE run, exported; it reads ivar (weighting and noise), the AE does not.

    It reads the records from disk every epoch, while the AE (cache decided from memory)
    keeps its small records in memory: both input paths train in ``make test``.
    """
    return _tiny_fit(tiny_records, tmp_path_factory.mktemp("vae") / "run", "vae",
                     model={"ivar_weighting": True}, augment={"ivar_noise": True}, train={"cache": False})


@pytest.fixture(scope="session")
def tiny_scores(trained_ae, tiny_records, tmp_path_factory):
    """The AE's scores directory for every galaxy of the tiny records."""
    from ifskeras.discovery.score import score_records

    out = tmp_path_factory.mktemp("scores") / "scores"
    score_records(trained_ae.export_path, tiny_records, out, k=3, seed=0, progress=False)
    return out
