"""ConvLSTM autoencoder and variational autoencoder models (Keras 3)."""
