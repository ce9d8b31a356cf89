"""The discovery stage: scores from an exported SavedModel, evaluation, neighbours, report.

- :mod:`~ifskeras.discovery.score`: stream records through the SavedModel's ``score``
  endpoint into a scores directory (``scores.csv``/``.fits``, latents, UMAP);
- :mod:`~ifskeras.discovery.neighbours`: latent nearest-neighbour search (k-NN score,
  ``nearest_neighbors``, retrieval all use it);
- :mod:`~ifskeras.discovery.baselines`: PCA reconstruction error, IsolationForest, random;
- :mod:`~ifskeras.discovery.metrics`, :mod:`~ifskeras.discovery.bootstrap`,
  :mod:`~ifskeras.discovery.comparison`: AUROC, AP, precision@k... with bootstrap
  intervals, and paired verdicts against baselines;
- :mod:`~ifskeras.discovery.retrieval`: do latent neighbours share class and line ratios?
- :mod:`~ifskeras.discovery.pipeline`: a scores directory to an evaluation and a report;
- :mod:`~ifskeras.discovery.report`, :mod:`~ifskeras.discovery.tables`,
  :mod:`~ifskeras.discovery.figures`: the HTML page, its tables, its PNG figures.

It reads exported models with ``tf.saved_model.load`` only and never imports the
model classes of :mod:`ifskeras.learning` (an import contract in setup.cfg checks it).
"""
