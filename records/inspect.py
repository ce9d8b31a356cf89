"""Human-readable summary of a records directory and a picture of one galaxy's maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ifskeras.survey.lines import pretty_line_name
from ifskeras.records.naming import SPLITS
from ifskeras.records.reader import read_examples
from ifskeras.records.schema import load_manifest, release_text

__all__ = ["summarize_records", "render_galaxy"]

_PANEL_COLUMNS = 5
_MAX_LISTED_FAILURES = 10
_COLOUR_PERCENTILES = (1.0, 99.5)


def summarize_records(records_dir: str | Path, *, max_failures: int = _MAX_LISTED_FAILURES) -> str:
    """Counts per split, lines, shape, preprocessing and failures, as text."""
    manifest = load_manifest(records_dir)
    data = manifest.data
    totals = data.get("totals", {})
    lines = [
        f"records: {manifest.directory}",
        f"schema v{data['schema_version']}, written by ifskeras {data.get('ifskeras_version', '?')} "
        f"on {data.get('created', '?')}",
        f"shape [L, S, S]: {list(manifest.shape)}; flux unit: {data.get('flux_unit') or 'unknown'}; "
        f"compression: {manifest.compression or 'none'}",
        "preprocessing: " + ", ".join(f"{k}={v}" for k, v in manifest.preprocessing.items()),
        "lines: " + ", ".join(manifest.lines),
        "splits:",
    ]
    for split in SPLITS:
        shards = manifest.shards(split)
        size = sum(shard.bytes for shard in shards)
        lines.append(f"  {split:5s} {manifest.examples(split):7d} examples in {len(shards):4d} shards, {size / 1e6:9.1f} MB")
    lines.append(
        f"inputs: {totals.get('inputs', '?')}, converted: {totals.get('examples', manifest.examples())}, "
        f"failed: {len(manifest.failures)}, duplicates skipped: {len(data.get('duplicates', []))}"
    )
    if manifest.releases:
        lines.append("DAP releases: " + "; ".join(
            f"{release_text(r['versdap'], r['daptype'])} ({r['galaxies']} galaxies)" for r in manifest.releases))
    if data.get("labels"):
        labels = data["labels"]
        lines.append(f"labels: column {labels['column']!r} of {labels['file']}, {labels['labelled']} labelled")
    for failure in manifest.failures[:max_failures]:
        replaced = f" (replaced by {failure['replaced_by']})" if failure.get("replaced_by") else ""
        lines.append(f"  failed: {failure['path']}: {failure['reason']}{replaced}")
    if len(manifest.failures) > max_failures:
        lines.append(f"  ... {len(manifest.failures) - max_failures} more in failures.csv")
    return "\n".join(lines)


def render_galaxy(records_dir: str | Path, plateifu: str, png_path: str | Path) -> Path:
    """Save a montage of one galaxy's line maps, one labelled panel per line.

    Invalid pixels are left blank; each panel has its own linear colour scale (1st to
    99.5th percentile of its valid pixels) and a colourbar in the records' flux unit.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global figure state, Agg canvas

    manifest = load_manifest(records_dir)
    galaxy = read_examples(records_dir, [plateifu])
    flux = galaxy["flux"][0, ..., 0]
    valid = galaxy["valid"][0, ..., 0] > 0
    unit = manifest.data.get("flux_unit") or "flux"
    n_lines = len(manifest.lines)
    columns = min(_PANEL_COLUMNS, n_lines)
    rows = math.ceil(n_lines / columns)
    figure = Figure(figsize=(3.2 * columns, 2.9 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, line, image, mask in zip(axes, manifest.lines, flux, valid):
        shown = np.ma.masked_array(image, mask=~mask)
        values = image[mask]
        low, high = np.percentile(values, _COLOUR_PERCENTILES) if values.size else (0.0, 1.0)
        if not high > low:
            high = low + 1.0
        colours = matplotlib.colormaps["viridis"].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
        picture = axis.imshow(shown, origin="lower", cmap=colours, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(pretty_line_name(line), fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
        bar = figure.colorbar(picture, ax=axis, shrink=0.85)
        bar.set_label(unit, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    for axis in axes[n_lines:]:
        axis.set_visible(False)
    label = f" ({galaxy['label'][0]})" if galaxy["label"][0] else ""
    figure.suptitle(f"{plateifu}{label}: {manifest.preprocessing.get('mode')} {manifest.shape[1]} x {manifest.shape[2]}")
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=90)
    return png_path
