"""GAN alternatives: train on the digits, judge with the digits classifier (IS, FD, accuracy)."""
# usage: python scripts/gan_alternatives.py NAME EPOCHS CONFIG_JSON   (one thread; one JSON row
# per milestone). EPOCHS may list milestones, "24,36,48": one run, resumed from its checkpoint
# after each (as exact as training straight to each), judged at each.
# CONFIG_JSON holds GANConfig fields; "seed": N trains (and draws) with another seed on the
# same split (seed 0's); "base": "gan" or "cgan" starts from that zoo config,
# "gan-previous" from the gan of 2026-12-02 before issue #15's measurements, "gan-bce50" from
# the gan of 2026-12-03 before the hinge loss and 100 clusters, "gan-z64" from the gan of
# 2026-12-03 before 128 latents and D's 4x learning rate, "gan-g32" from the gan of 2026-12-04
# before G went from 32 to 48 channels, "gan-ema999" from the gan of 2026-12-04 before its
# average's decay went from 0.999 to 0.998.
# Training runs in bf16 autocast where the CPU has bf16 (GENSERVE_TRAIN_PRECISION=auto);
# GENSERVE_TRAIN_PRECISION=fp32 reproduces the rows measured before 2026-12-06.
# The judge is the latest `digits` in GENSERVE_MODEL_REPOSITORY (default model_repository).
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from genserve.export.data.mnist import digit_split
from genserve.export.families.dcgan.build import CONDITIONAL_DIGIT_GAN, DIGIT_GAN, draw, train_gan
from genserve.export.families.dcgan.model import GANConfig
from genserve.export.metrics.judge import digit_generation_metrics, latest_judge

torch.set_num_threads(1)
REPO = Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository"))
EMA999_GAN = replace(DIGIT_GAN, average_decay=0.999)  # the zoo's gan before the 0.998 average
G32_GAN = replace(EMA999_GAN, features=32, d_features=0)  # the zoo's gan before G had 48 channels
Z64_GAN = replace(G32_GAN, latent_dim=64, d_lr_scale=2.0)  # the zoo's gan before 2026-12-04
# the zoo's gan of 2026-12-03 before the hinge loss and 100 clusters
BCE_GAN = replace(Z64_GAN, num_classes=50, aux_classes=50, loss="bce")
PREVIOUS_GAN = replace(BCE_GAN, cluster_shares=False, average_decay=0.995, average_start=0, d_lr_scale=1.0)
BASES = {"gan": DIGIT_GAN, "cgan": CONDITIONAL_DIGIT_GAN, "gan-ema999": EMA999_GAN, "gan-g32": G32_GAN,
         "gan-z64": Z64_GAN,
         "gan-bce50": BCE_GAN, "gan-previous": PREVIOUS_GAN}
name = sys.argv[1]; milestones = [int(e) for e in sys.argv[2].split(",")]; kw = json.loads(sys.argv[3])
base = kw.pop("base", None)
seed = int(kw.pop("seed", 0))
config = replace(BASES[base], **kw) if base else GANConfig(**kw)
x_train, y_train, x_held, y_held, _ = digit_split(None, None, 0)
clf, _ = latest_judge(REPO)
secs = 0.0
with tempfile.TemporaryDirectory() as checkpoints:
    for epochs in milestones:
        res = train_gan(config, x_train, y_train, epochs=epochs, batch_size=64, seed=seed,
                        checkpoint_dir=Path(checkpoints), progress=False)
        secs += res.seconds
        samples, requested = draw(res.model, 2000, seed)
        m = digit_generation_metrics(clf, samples, x_held, x_train, requested)
        row = dict(name=name, epochs=epochs, secs=round(secs, 1), load=round(os.getloadavg()[1], 1),
                   IS=round(m["inception_score"], 2), IS_real=round(m["inception_score_real"], 2),
                   FD=round(m["fd_digits"], 1), FD_rr=round(m["fd_digits_real_vs_real"], 1),
                   acc=m.get("conditional_accuracy"), base=base, seed=seed, config=kw)
        print(json.dumps(row), flush=True)
