"""GAN alternatives: train on the digits, judge with the digits classifier (IS, FD, accuracy)."""
# usage: python scripts/gan_alternatives.py NAME EPOCHS CONFIG_JSON   (one thread; prints one JSON row)
# The judge is the latest `digits` in GENSERVE_MODEL_REPOSITORY (default model_repository).
import json
import os
import sys
import time

import torch
from pathlib import Path
from genserve.export.data.mnist import digit_split
from genserve.export.families.dcgan.model import GANConfig
from genserve.export.families.dcgan.build import train_gan, draw
from genserve.export.metrics.judge import digit_generation_metrics, latest_judge

torch.set_num_threads(1)
REPO = Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository"))
name = sys.argv[1]; epochs = int(sys.argv[2]); kw = json.loads(sys.argv[3])
config = GANConfig(**kw)
x_train, y_train, x_held, y_held, _ = digit_split(None, None, 0)
t = time.time()
res = train_gan(config, x_train, y_train, epochs=epochs, batch_size=64, seed=0, checkpoint_dir=None, progress=False)
secs = time.time() - t
clf, _ = latest_judge(REPO)
samples, requested = draw(res.model, 2000, 0)
m = digit_generation_metrics(clf, samples, x_held, x_train, requested)
row = dict(name=name, epochs=epochs, secs=round(secs, 1), IS=round(m["inception_score"], 2),
           IS_real=round(m["inception_score_real"], 2), FD=round(m["fd_digits"], 1),
           FD_rr=round(m["fd_digits_real_vs_real"], 1), acc=m.get("conditional_accuracy"), config=kw)
print(json.dumps(row))
