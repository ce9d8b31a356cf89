"""Shared fixtures of the test suite, and quiet TensorFlow logs.

Test modules use these fixtures by name; none imports them. Simulated MAPS files and
the helpers that break them are in ``simulated.py``.

- ``survey_dir`` / ``records_dir``: twelve synthetic galaxies and their records at 8 x 8
  (the records tests);
- ``tiny_survey`` / ``tiny_records``: 32 synthetic galaxies of every class and their
  records at 16 x 16 with labels (training, scoring and evaluation);
- ``trained_ae`` / ``trained_vae`` / ``tiny_scores``: 3-epoch smoke runs on the tiny
  records, and the AE's scores.
"""

from __future__ import annotations

import os

# Set before TensorFlow is first imported by any test module: C++ log noise only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from simulated import small_options  # noqa: E402

from ifskeras.survey.synth import make_survey  # noqa: E402

# ----------------------------------------------------------------------------- records tests

#: Galaxies of the records tests' survey.
SURVEY_N = 12


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory):
    """Twelve synthetic MAPS files (plate 10001, IFUs 1901 to 9102) and their catalogue."""
    directory = tmp_path_factory.mktemp("survey")
    make_survey(directory, SURVEY_N, seed=1)
    return directory


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory, survey_dir):
    """The survey converted at 8 x 8, several shards per split (read-only for tests)."""
    from ifskeras.records import convert_maps

    out = tmp_path_factory.mktemp("records") / "records"
    convert_maps([survey_dir], out, small_options(val_fraction=0.2, test_fraction=0.2))
    return out


# ----------------------------------------------------------------------------- pipeline tests

TINY_SIZE = 16
TINY_N = 32


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """A synthetic survey of 32 MAPS files with its catalogue (SF-rich, a few of every class)."""
    out = tmp_path_factory.mktemp("tiny-survey")
    fractions = {"SF": 0.4, "composite": 0.1, "Seyfert": 0.15, "LINER": 0.1, "retired": 0.1, "blueberry": 0.15}
    make_survey(out, TINY_N, seed=3, class_fractions=fractions)
    return out


@pytest.fixture(scope="session")
def tiny_records(tiny_survey, tmp_path_factory):
    """Records of the tiny survey at 16 x 16, 19 lines, two shards per split, labels joined."""
    from ifskeras.records import ConvertOptions, convert_maps

    out = tmp_path_factory.mktemp("tiny-records") / "records"
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
