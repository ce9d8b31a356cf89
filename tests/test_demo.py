"""The demo end to end on a tiny survey: every stage, then a second run that reuses them."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

from ifskeras.demo import DemoSettings, run_demo  # noqa: E402


@pytest.mark.long
def test_demo_runs_every_stage_then_reuses_them(tmp_path):
    settings = DemoSettings(n=40, epochs=1, size=16, latent_dim=4, filters=(4, 8), batch_size=8, jobs=1, top_n=3)
    said = []
    result = run_demo(tmp_path / "demo", settings, say=said.append, progress=False)
    assert set(result.stage_seconds) == {"survey", "records", "run", "scores", "report"}
    assert result.report.exists() and len(result.top) == 3
    assert result.bundle.evaluation.n_positive > 0
    assert any(line.startswith("[run] done") for line in said)

    again = run_demo(tmp_path / "demo", settings, say=said.append, progress=False)
    assert again.reused == ["survey", "records", "run", "scores"]
    assert again.top == result.top

    with pytest.raises(ValueError, match="other settings"):
        run_demo(tmp_path / "demo", DemoSettings(n=41), say=said.append, progress=False)
