"""ifskeras: unsupervised discovery of unusual galaxies in integral-field spectroscopy.

ConvLSTM autoencoders and variational autoencoders read each galaxy of a MaNGA-like
survey as a sequence of emission-line maps ordered by wavelength (arXiv 2602.18426).
Importing the package is cheap: TensorFlow loads only in the modules that use it.
"""

__version__ = "0.1.0"
