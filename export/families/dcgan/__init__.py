"""The DCGANs: model.py, build.py (digit GANs and the face GAN)."""
