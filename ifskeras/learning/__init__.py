"""The learning stage: configuration, augmentation, models, the training loop and export.

- :mod:`~ifskeras.learning.config`: run configuration (model, training, augmentation);
- :mod:`~ifskeras.learning.augment`: on-device augmentation of galaxies;
- :mod:`~ifskeras.learning.models`: ConvLSTM autoencoder and VAE;
- :mod:`~ifskeras.learning.distribute`: tf.distribute strategies;
- :mod:`~ifskeras.learning.train`: the training loop (``fit``);
- :mod:`~ifskeras.learning.export`: SavedModel export.

Importing this package loads no TensorFlow; its modules that compute do.
"""
