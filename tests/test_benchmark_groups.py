"""The discovery benchmark's per-group table (benchmarks/bench_discovery.py:positive_groups).

Its numbers are quoted in docs/results.md, so its grouping and its BPT reference are
checked here on hand-made catalogues whose AUROCs are known in advance.
"""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench_discovery():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_discovery_under_test", BENCHMARKS / "bench_discovery.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_discovery_under_test", None)
        sys.path.remove(str(BENCHMARKS))


# class, agn_contrast, agn_offset, barred, rank_score, log_nii_ha, log_oiii_hb
REALISTIC = [
    ("SF", "", "", 0, 0.0, -0.6, -0.5),
    ("SF", "", "", 0, 1.0, -0.5, -0.4),
    ("SF", "", "", 1, 5.0, -0.4, -0.3),  # barred, ranked above every Seyfert
    ("SF", "", "", 0, 2.0, -0.7, -0.2),
    ("blueberry", "", "", 0, 9.0, -1.2, 0.7),
    ("blueberry", "", "", 0, 8.0, -1.1, 0.6),
    ("Seyfert", 0.1, 0.0, 0, -1.0, -0.2, 0.3),  # weak, central: below every SF
    ("Seyfert", 0.2, 2.0, 0, -2.0, 0.2, 0.5),  # weak, off-centre; right of the curve's asymptote
    ("Seyfert", 10.0, 3.0, 0, 3.0, 0.0, 0.8),  # full strength, off-centre
    ("Seyfert", 12.0, 0.0, 0, 6.0, 0.1, 0.9),  # full strength, central
    ("Seyfert", 8.0, 0.0, 0, 7.0, -0.1, 0.7),  # full strength, central
]


def write_catalog(path: Path, rows, *, realistic: bool) -> dict:
    columns = ["plateifu", "class", "agn_contrast"] + (
        ["agn_offset", "barred", "edge_on", "companion_dx", "companion_dy"] if realistic else [])
    table = {"id": [], "rank_score": [], "log_nii_ha": [], "log_oiii_hb": []}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for index, (kind, contrast, offset, barred, score, x, y) in enumerate(rows):
            plateifu = f"1000-{index}"
            writer.writerow([plateifu, kind, contrast] + ([offset, barred, 0, 0, 0] if realistic else []))
            for key, value in zip(table, (plateifu, score, x, y)):
                table[key].append(value)
    return {key: np.asarray(values) for key, values in table.items()}


def auroc(groups, name, score="rank_score"):
    return groups[name][score]["value"]


def test_realistic_groups_are_disjoint_and_their_aurocs_are_the_hand_computed_ones(bench_discovery, tmp_path):
    table = write_catalog(tmp_path / "catalog.csv", REALISTIC, realistic=True)
    groups = bench_discovery.positive_groups(table, tmp_path / "catalog.csv", n_bootstrap=20)

    sizes = {name: group["n"] for name, group in groups.items()}
    assert sizes == {"blueberry": 2, "Seyfert": 5, "Seyfert weak": 2, "Seyfert off-centre, not weak": 1,
                     "Seyfert central, not weak": 2, "all, against SF without bar/edge-on/companion": 7}
    assert sizes["Seyfert weak"] + sizes["Seyfert off-centre, not weak"] + sizes["Seyfert central, not weak"] \
        == sizes["Seyfert"]
    assert groups["Seyfert"]["n_negative"] == 4
    assert groups["all, against SF without bar/edge-on/companion"]["n_negative"] == 3
    # rank_score against the 4 SF (scores 0, 1, 2, 5): counted pair by pair.
    assert auroc(groups, "blueberry") == pytest.approx(1.0)
    assert auroc(groups, "Seyfert weak") == pytest.approx(0.0)
    assert auroc(groups, "Seyfert off-centre, not weak") == pytest.approx(3 / 4)  # 3 > 0, 1, 2; < 5
    assert auroc(groups, "Seyfert central, not weak") == pytest.approx(1.0)
    assert auroc(groups, "Seyfert") == pytest.approx((0 + 0 + 3 + 4 + 4) / 20)
    # Without the barred SF galaxy (score 5), only the weak Seyferts lose pairs: 1 - 2*3/21.
    assert auroc(groups, "all, against SF without bar/edge-on/companion") == pytest.approx(1 - 6 / 21)


def test_central_bpt_reference_is_given_for_seyferts_and_ranks_past_the_asymptote(bench_discovery, tmp_path):
    table = write_catalog(tmp_path / "catalog.csv", REALISTIC, realistic=True)
    groups = bench_discovery.positive_groups(table, tmp_path / "catalog.csv", n_bootstrap=20)

    assert "central_bpt" not in groups["blueberry"]
    assert "central_bpt" not in groups["all, against SF without bar/edge-on/companion"]
    # Every Seyfert lies above the Kauffmann curve and every SF galaxy below it; the weak
    # Seyfert at log [NII]/Ha = 0.2, right of the asymptote, must rank above them too.
    for name in ("Seyfert", "Seyfert weak", "Seyfert central, not weak"):
        assert auroc(groups, name, "central_bpt") == pytest.approx(1.0)


def test_unmeasured_bpt_ratios_rank_as_far_below(bench_discovery, tmp_path):
    rows = [list(row) for row in REALISTIC]
    rows[9][5] = np.nan  # one full-strength central Seyfert without a measured [NII]/Ha
    table = write_catalog(tmp_path / "catalog.csv", [tuple(row) for row in rows], realistic=True)
    groups = bench_discovery.positive_groups(table, tmp_path / "catalog.csv", n_bootstrap=20)

    assert auroc(groups, "Seyfert central, not weak", "central_bpt") == pytest.approx(0.5)


def test_classic_catalogue_gives_only_the_groups_it_can_tell_apart(bench_discovery, tmp_path):
    # The classic survey draws every nucleus at full strength and has no offset or nuisance
    # columns: every Seyfert is "central, not weak", a copy of "Seyfert" not to list twice.
    classic = [(kind, 10.0 if kind == "Seyfert" else 0.0, *rest) for kind, _, *rest in REALISTIC]
    table = write_catalog(tmp_path / "catalog.csv", classic, realistic=False)
    groups = bench_discovery.positive_groups(table, tmp_path / "catalog.csv", n_bootstrap=20)

    assert set(groups) == {"blueberry", "Seyfert"}
    assert groups["Seyfert"]["n"] == 5
