"""The learning stage: configuration, augmentation, models, the training loop and export.

- :mod:`~ifskeras.learning.config`: run configuration (model, training, augmentation)
  and the choice lists the CLI offers;
- :mod:`~ifskeras.learning.augment`: on-device augmentation of galaxies;
- :mod:`~ifskeras.learning.models`: ConvLSTM autoencoder and VAE;
- :mod:`~ifskeras.learning.distribute`: tf.distribute strategies;
- :mod:`~ifskeras.learning.steps`: the train step and the one-pass validation;
- :mod:`~ifskeras.learning.train`: the training loop (``fit``);
- :mod:`~ifskeras.learning.rundir`: the run directory (config, resume checks,
  history, early-stopping state, provenance);
- :mod:`~ifskeras.learning.cache`: whether the records are kept in memory;
- :mod:`~ifskeras.learning.export`: SavedModel export.

Importing this package loads no TensorFlow; its modules that compute do.
"""
