"""The convolutional denoising autoencoder on noisy/clean digit pairs: model.py, build.py."""
