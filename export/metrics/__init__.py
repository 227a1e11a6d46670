"""What exports measure: images.py (PSNR, FD, IS, face features), elbo.py (the VAE)."""
