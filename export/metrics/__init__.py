"""What exports measure: image metrics (images.py: PSNR, FD, IS, face features), the digit
classifier as judge of the generators (judge.py) and the VAE's held-out ELBO (elbo.py)."""
