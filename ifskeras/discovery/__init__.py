"""The discovery stage: scores from an exported SavedModel, evaluation, neighbours, report.

It reads exported models with ``tf.saved_model.load`` only and never imports the
model classes of :mod:`ifskeras.learning`.
"""
