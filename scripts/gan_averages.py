"""Weight averages of one gan run: the zoo's average and others tracked beside it, each judged."""
# usage: python scripts/gan_averages.py NAME EPOCHS DECAY_EPOCHS CONFIG_JSON   (one thread)
# CONFIG_JSON holds DIGIT_GAN fields to change; "seed": N trains with another seed on seed 0's
# split; "extras": [[decay, start_step], ...] are the averages tracked beside the config's own
# (default: 0.998/0.9995 from step 700, 0.9995/0.9998 from step 1,400). DECAY_EPOCHS > 0 decays
# both learning rates linearly to 0 over the last DECAY_EPOCHS epochs. Every average gets its
# own batch-norm recalibration and is judged on 2,000 samples of seed s and of seed s + 1 (one
# JSON row each). The judge is the latest `digits` in GENSERVE_MODEL_REPOSITORY; training
# precision follows GENSERVE_TRAIN_PRECISION (auto: bf16 where the CPU has it).
import copy
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from genserve.export.data.mnist import digit_split
from genserve.export.families.dcgan import build as b
from genserve.export.families.dcgan import model as m
from genserve.export.metrics.judge import digit_generation_metrics, latest_judge

torch.set_num_threads(1)
REPO = Path(os.environ.get("GENSERVE_MODEL_REPOSITORY", "model_repository"))
name, epochs, decay_epochs, kw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
seed = int(kw.pop("seed", 0))
extras = [tuple(e) for e in kw.pop("extras", [[0.998, 700], [0.9995, 700], [0.9995, 1400], [0.9998, 1400]])]
config = replace(b.DIGIT_GAN, **kw)
x_train, y_train, x_held, y_held, _ = digit_split(None, None, 0)
total = epochs * (len(x_train) // 64)
decay_steps = decay_epochs * (len(x_train) // 64)


class DecayingAdam(torch.optim.Adam):
    """Adam whose learning rate falls linearly to 0 over the last decay_steps steps."""

    def step(self, closure=None):
        state = next(iter(self.state.values()), None)
        taken = 0 if state is None else int(state["step"])
        if decay_steps and taken >= total - decay_steps:
            for group in self.param_groups:
                group.setdefault("base_lr", group["lr"])
                group["lr"] = group["base_lr"] * (total - taken) / decay_steps
        return super().step(closure)


b.torch.optim.Adam = DecayingAdam
AVERAGES: dict[tuple[float, int], torch.nn.Module] = {}
zoo_update = m.GAN.update_average


@torch.no_grad()
def update_average(self, step=None):
    zoo_update(self, step)
    if not AVERAGES:
        for key in extras:
            AVERAGES[key] = copy.deepcopy(self.generator).requires_grad_(False)
    for (decay, start), average in AVERAGES.items():
        weight = 1.0 if step is not None and step <= start else 1.0 - decay
        for mean, live in zip(average.parameters(), self.generator.parameters()):
            mean.lerp_(live, weight)


m.GAN.update_average = update_average
started = time.perf_counter()
gan = b.train_gan(config, x_train, y_train, epochs=epochs, batch_size=64, seed=seed, checkpoint_dir=None,
                  progress=False).model
secs = round(time.perf_counter() - started)
judge, _ = latest_judge(REPO)


def score(label: str) -> None:
    fds, scores = [], []
    for s in (seed, seed + 1):
        samples, _ = b.draw(gan, 2000, s)
        metrics = digit_generation_metrics(judge, samples, x_held, x_train)
        fds.append(metrics["fd_digits"])
        scores.append(metrics["inception_score"])
        rr = metrics["fd_digits_real_vs_real"]
    print(json.dumps(dict(name=name, average=label, epochs=epochs, decay_epochs=decay_epochs, seed=seed, secs=secs,
                          FD=[round(f, 2) for f in fds], mean_ratio=round(sum(fds) / 2 / rr, 3),
                          IS=[round(i, 2) for i in scores], config=kw)), flush=True)


score(f"the config's: {config.average_decay} from step {config.average_start}")
for (decay, start), average in AVERAGES.items():
    gan.average = average.to(memory_format=torch.contiguous_format)
    b.recalibrate(gan, seed)
    score(f"{decay} from step {start}")
