"""VAE alternatives: train, then held-out neg-ELBO and the digits judge's IS/FD/accuracy."""
# usage: python scripts/vae_alternatives.py NAME EPOCHS CONFIG_JSON   (one thread; prints one JSON row)
# LR, BATCH and SEED in the environment override the learning rate (1e-3), the batch size (64)
# and the training seed (0; the split stays seed 0's).
# The judge is the latest `digits` in GENSERVE_MODEL_REPOSITORY (default model_repository).
import json
import os
import sys
import time

import torch
from pathlib import Path
from genserve.export.data.mnist import digit_split
from genserve.export.families.vae.model import VAEConfig
from genserve.export.families.vae.train import train_vae
from genserve.export.families.vae.build import judged_samples
from genserve.export.metrics.elbo import heldout_neg_elbo

torch.set_num_threads(1)
REPO = Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository"))
name = sys.argv[1]; epochs = int(sys.argv[2]); kw = json.loads(sys.argv[3])
config = VAEConfig(**kw)
x_train, y_train, x_held, y_held, _ = digit_split(None, None, 0)
t = time.time()
lr, batch, seed = float(os.environ.get("LR", "1e-3")), int(os.environ.get("BATCH", "64")), int(os.environ.get("SEED", "0"))
res = train_vae(config, x_train, y_train, epochs=epochs, batch_size=batch, lr=lr, seed=seed,
                checkpoint_dir=None, progress=False)
secs = time.time() - t
rep = heldout_neg_elbo(res.model, x_held, y_held, seed=0)
gen, _ = judged_samples(REPO, res.model, x_held, x_train, 0)
extra = {}
if res.model.prior is not None and not kw.get("learned_prior"):
    prior = res.model.prior; res.model.prior = None; res.model.config.prior_components = 0
    g0, _ = judged_samples(REPO, res.model, x_held, x_train, 0)
    extra = dict(IS_n01=round(g0["inception_score"], 2), FD_n01=round(g0["fd_digits"], 1), acc_n01=g0.get("conditional_accuracy"))
    res.model.prior = prior; res.model.config.prior_components = kw["prior_components"]
row = dict(name=name, epochs=epochs, lr=lr, batch=batch, secs=round(secs, 1), neg_elbo=round(rep.neg_elbo, 1), recon=round(rep.recon, 1), kl=round(rep.kl, 1),
           train_loss=round(res.history[-1]["loss"], 1),
           IS=round(gen["inception_score"], 2), IS_real=round(gen["inception_score_real"], 2),
           FD=round(gen["fd_digits"], 1), FD_rr=round(gen["fd_digits_real_vs_real"], 1),
           acc=gen.get("conditional_accuracy"), **extra, config=kw)
print(json.dumps(row))
