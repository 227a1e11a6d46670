"""The DCGANs: model.py, build.py (digit GANs, class mixture or conditional), faces.py (face GAN)."""
