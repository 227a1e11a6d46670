"""Build the digit DCGANs: label-free, class-conditional or a class mixture (faces.py trains the
face one alike).

`build_gan` is what `genserve export gan [--conditional]` and `genserve export gan-mixture`
run, `faces.build_faces` what
`genserve export faces` runs. Both train adversarially (model.py says how training is
kept stable), re-estimate the generator's batch-norm statistics, measure the samples
(metrics/) and publish the generator as a latent_sampler.

The digit metrics need the digit classifier: the latest published `digits` model is the judge;
when the repository has none, `build_gan` builds it first (the same builder as
`genserve export digits`) and says so.

What was tried on the digits, 600-1,700 steps each on 2 CPU cores (Inception score with the
digit classifier; real digits 9.3-9.7): the DCGAN paper's recipe (BN in D, Adam 2e-4) 4.6; the
same with spectral norm + smoothing 4.8; hinge loss with TTUR 2.1; a stronger D (64 channels)
2.9; learning rate 1e-3 instead of 2e-4 5.4 at equal steps (6.5 after 2,100); nearest
upsampling instead of transposed convolutions removed the speckle; the auxiliary classifier
lifted the conditional GAN from 4.9 to 8.0 at equal steps; averaging G's weights and 24 epochs
brought it to 9.2 with 97% of samples in the requested class, 36 epochs to 9.6 with 98.6%.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genserve.export.core.options import BuildOptions, RunOptions
from genserve.export.core.publishing import digit_training_record, publish_model
from genserve.export.core.training import FitResult, autocast, fit, init_module, run_settings, training_precision
from genserve.export.data.mnist import digit_split
from genserve.export.families.dcgan.model import DCGAN_SPEC, GAN, GANConfig, class_of
from genserve.export.metrics.judge import JUDGE, digit_generation_metrics, latest_judge
from genserve.repository import ImageSpec

log = logging.getLogger(__name__)

DEFAULT_DIGIT_EPOCHS = 36  # 2,520 steps; 24 -> 36: gan FD 35.7 -> 29.0, cgan FD 27.8 -> 20.6 (README)
# cgan: 36 -> 48 epochs moved FD 22.2 -> 19.5 (2.10x -> 1.85x real vs real; IS 9.49 -> 9.56, 98.4% in
# class both), the label-free gan's only 29.5 -> 28.3 (2.80x -> 2.68x): only the cgan trains longer
# (scripts/gan_alternatives.py, 2-core AVX2 EPYC, 2026-12-03; README).
CONDITIONAL_DIGIT_EPOCHS = 48
DEFAULT_BATCH_SIZE = 64
METRIC_SAMPLES = 2000  # generated images the metrics compare with the real ones
# Training runs in channels-last layout (NHWC): oneDNN's convolutions and batch norm skip the
# layout reorders they need around every NCHW tensor. Measured per step on one thread: 2-core
# Intel Xeon (AVX-512) 134-144 vs 197-204 ms; 2-core AMD EPYC (AVX2), cgan, 40 steps + the
# recalibration, two rounds: 227 / 286 vs 331 / 302 ms, the same losses to 1e-3. The weights
# are the same numbers in another memory order; they go back to NCHW before the export.
TRAINING_LAYOUT = torch.channels_last
RECALIBRATE_BATCHES = 40  # batches of 250 z's to re-estimate batch-norm statistics
# The default digit GAN never sees a label: it is self-conditioned (Liu et al. 2020) on
# DIGIT_CLUSTERS k-means clusters of the training digits' pixels, which it reads from z[:, 0]
# like a class mixture, each cluster as often as the digits fall in it (k-means clusters hold
# 39-167 digits; equal shares drew 14% zeros and 7% ones). The longer average starts after 10
# epochs (the first steps' G is no digit), D learns four times as fast (two time-scale update
# rule) and both train on the hinge loss; the alternatives measured are in the README.
# 100 clusters with the hinge loss against 50 with BCE: FD 29.6 / 31.7 -> 25.8 / 23.8 (seeds
# 0 / 1, 36 epochs; 2.98x -> 2.41x real vs real), IS 8.84 / 8.68 -> 9.35 / 9.28 (real 9.32).
# 128 latents instead of 64 with D learning 4x as fast as G instead of 2x: FD 25.8 -> 20.2
# for seed 0 (1.91x real vs real), mean over seeds 0-2 26.5 -> 23.4 (2.50x -> 2.21x; the
# seeds spread by 7), IS within the real digits' (9.47), at the same training time; 256
# latents were worse (25.6, seed 1). 2-core AMD EPYC, 2026-12-04 (README).
# G 1.5x as wide (features 48: 96 -> 48 channels), D as it was (d_features 32): FD 20.7 / 23.5 /
# 26.1 -> 19.8 / 22.2 / 25.8 for seeds 0-2 (mean 2.27x -> 2.19x real vs real), 28% more
# training; twice as wide did no better (20.4 / 22.9). 2-core Intel Xeon, 2026-12-04 (README).
# The average's decay 0.999 -> 0.998 (about 500 steps of memory instead of 1,000), tracked
# beside the 0.999 one in the same fp32 runs: FD 22.0 / 25.0 / 26.8 -> 21.4 / 23.9 / 25.3 for
# seeds 0-2 (samples of seed 0; the same for seed 1's samples), IS 9.43 -> 9.24 (real 9.49);
# 0.997 scored the same, 0.996 worse. 2-core AMD EPYC (AVX-512), 2026-12-06 (README).
# Under bf16 autocast (GANConfig.mixed_precision, on CPUs with bf16) the gan's steps ran 1.5x
# faster and scored FD 21.1 / 22.8 / 24.2 for seeds 0-2 (fp32 with the 0.998 average: 21.4 /
# 23.9 / 25.3), IS 9.26 / 9.09 / 9.13; the same machine and day.
DIGIT_CLUSTERS = 100  # measured: 20 clusters IS 7.94, FD 57.4; 50: IS 8.33, FD 49.0 (before EMA/TTUR)
DIGIT_GAN = GANConfig(latent_dim=128, features=48, d_features=32, num_classes=DIGIT_CLUSTERS,
                      aux_classes=DIGIT_CLUSTERS, label_from_latent=True, clusters=True,
                      cluster_shares=True, average_decay=0.998, average_start=700, d_lr_scale=4.0,
                      loss="hinge")
# `gan-mixture`, the previous default: trained with the digits' labels, G reads the class from
# z[:, 0], so every digit is drawn equally often.
MIXTURE_DIGIT_GAN = GANConfig(num_classes=10, aux_classes=10, label_from_latent=True)
MIXTURE_DESCRIPTION = (
    "DCGAN, a class mixture: serves the (weight-averaged) generator z ~ N(0, I) -> digit in "
    "[0, 1]; the class is read from z[0] (each class 1/10), G was trained class-conditionally"
)
CLUSTER_DESCRIPTION = (
    "DCGAN trained without labels: serves the (weight-averaged) generator z ~ N(0, I) -> digit "
    "in [0, 1]; self-conditioned on k-means clusters of the training digits, read from z[0]"
)
# fp32: under bf16 autocast the cgan scored FD 18.7 -> 20.3 (seed 0) and 20.4 -> 21.9 (seed 1) at
# 48 epochs, 1.73x -> 1.88x and 1.89x -> 2.02x real vs real, for 1.35x faster steps, while the
# gan scored better under it (2-core AMD EPYC with AVX-512 BF16, 2026-12-06; README).
CONDITIONAL_DIGIT_GAN = GANConfig(num_classes=10, aux_classes=10, mixed_precision=False)


def train_gan(
    config: GANConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    checkpoint_dir: Path | None,
    progress: bool = True,
    desc: str = "train gan",
) -> FitResult:
    """One discriminator step, one generator step and one update of the averaged generator
    per batch, at a constant learning rate (the average does the annealing); resumable. The
    forward passes run under bf16 autocast where the CPU has bf16 (training_precision) unless
    the config opts out (mixed_precision=False: fp32)."""
    precision = training_precision() if config.mixed_precision else "fp32"
    if config.clusters:
        train_labels = cluster_labels(train_images, config.num_classes, seed)
        if config.cluster_shares:
            config = replace(config, class_weights=shares(train_labels, config.num_classes))
    gan = init_module(GAN, config, seed).to(memory_format=TRAINING_LAYOUT)
    betas = tuple(config.betas)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=config.lr * config.d_lr_scale, betas=betas)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=config.lr, betas=betas)
    images = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    images = images.contiguous(memory_format=TRAINING_LAYOUT)
    labels = torch.from_numpy(train_labels.astype(np.int64)) if needs_labels(config) else None

    def step(idx: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        real = images[idx]  # (B, C, H, W)
        real_class = None if labels is None else labels[idx]
        z = torch.randn(len(idx), config.latent_dim, generator=g)  # (B, D)
        fake_class = fake_classes(config, z, real_class)
        with autocast(precision):
            fake = gan.generator(z, fake_class)
            d_loss = gan.d_loss(real, fake.detach(), real_class, fake_class, g)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with autocast(precision):
            g_loss = gan.g_loss(fake, fake_class, g)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        gan.update_average(steps_taken(opt_g))
        return {"d": d_loss.item(), "g": g_loss.item()}

    data = [train_images] if labels is None else [train_images, train_labels]
    settings = run_settings(config, data, batch_size=batch_size, seed=seed, precision=precision)
    result = fit(gan, {"d": opt_d, "g": opt_g}, step, len(images), epochs=epochs,
                 batch_size=batch_size, seed=seed, settings=settings,
                 checkpoint_dir=checkpoint_dir, desc=desc, progress=progress)
    gan.to(memory_format=torch.contiguous_format)  # the exported graph and its parity check: NCHW
    recalibrate(gan, seed)
    result.precision = precision
    return result


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """How many steps an Adam optimizer has taken (its state is checkpointed, so this resumes)."""
    state = next(iter(optimizer.state.values()), None)
    return 0 if state is None else int(state["step"])


def cluster_labels(images: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means clusters of the images' pixels (N,): the classes of a self-conditioned GAN
    (Liu et al. 2020), which never sees a label of the data."""
    from sklearn.cluster import KMeans

    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)  # (N, C * H * W)
    return KMeans(k, n_init=4, random_state=seed).fit_predict(flat).astype(np.int64)


def shares(labels: np.ndarray, k: int) -> tuple[float, ...]:
    """Each of the k classes' share of the labels (K,), summing to 1."""
    counts = np.bincount(labels, minlength=k)
    return tuple(float(n) / len(labels) for n in counts)


def needs_labels(config: GANConfig) -> bool:
    return bool(config.num_classes or config.aux_classes)


def fake_classes(
    config: GANConfig, z: torch.Tensor, real_class: torch.Tensor | None
) -> torch.Tensor | None:
    """The classes the fakes of a batch are made as: a conditional G asks for the real batch's
    classes, a class mixture reads them from z, an unconditional G has none."""
    if not config.num_classes:
        return None
    if not config.label_from_latent:
        return real_class
    return class_of(z, config.num_classes, tuple(config.class_weights))


@torch.no_grad()
def recalibrate(gan: GAN, seed: int, batches: int = RECALIBRATE_BATCHES, batch: int = 250) -> None:
    """Set the averaged generator's batch-norm statistics to their exact mean over many batches.

    Its weights are an average and were never run during training, so no running statistics
    belong to them; served in eval mode (per sample, batch invariant) it must normalise with
    what these weights produce.
    """
    norms = [m for m in gan.average.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gan.average.train()
    g = torch.Generator().manual_seed(seed)
    classes = gan.config.num_classes
    for _ in range(batches):
        z = torch.randn(batch, gan.config.latent_dim, generator=g)
        label = torch.randint(classes, (batch,), generator=g) if classes else None
        gan.average(z, label)
    for m in norms:
        m.momentum = 0.1
    gan.eval()


def draw(gan: GAN, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray | None]:
    """n samples of the served generator and, for a conditional one, the classes asked for
    (class i % K for sample i)."""
    c = gan.config
    label = torch.arange(n) % c.num_classes if c.num_classes and not c.label_from_latent else None
    images = gan.sample(n, label, torch.Generator().manual_seed(seed))
    return images, None if label is None else label.numpy()


def optimizer(config: GANConfig) -> str:
    """The optimizers, for the manifest."""
    d_lr = f", D's learning rate {config.lr * config.d_lr_scale:g}" if config.d_lr_scale != 1.0 else ""
    return f"Adam, betas {tuple(config.betas)}{d_lr}"


def stabilisation(config: GANConfig) -> str:
    """How this GAN's training was kept stable, for the manifest."""
    aux = ", an auxiliary classifier head in D" if config.aux_classes else ""
    shares = ", drawn as often as the data has them" if config.cluster_shares else ""
    clusters = (f", classes = {config.num_classes} k-means clusters of the pixels (no labels){shares}"
                if config.clusters else "")
    loss = "hinge loss" if config.loss == "hinge" else f"one-sided label smoothing ({config.real_label})"
    start = f", from step {config.average_start}" if config.average_start else ""
    extras = "".join([", minibatch std in D" if config.minibatch_std else "",
                      f", DiffAugment ({config.augment})" if config.augment else ""])
    return (f"spectral norm in D{aux}{clusters}, {loss}{extras}, "
            f"served G = EMA ({config.average_decay}{start}) of G's weights with batch norm re-estimated")


def build_gan(
    repo_root: Path,
    *,
    name: str = "gan",
    config: GANConfig | None = None,
    epochs: int = DEFAULT_DIGIT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    run: RunOptions = RunOptions(),
    metric_samples: int = METRIC_SAMPLES,
) -> Path:
    """The digit DCGAN: train (resuming); unless train_only, judge with the digit classifier,
    export and publish the next version of `name` (train_only: the checkpoint directory)."""
    config = config or DIGIT_GAN
    seed = run.seed
    x_train, y_train, x_held, y_held, dataset = digit_split(run.data_path, run.limit, seed)
    result = train_gan(config, x_train, y_train, epochs=epochs, batch_size=batch_size, seed=seed,
                       checkpoint_dir=run.checkpoint_dir, progress=run.progress, desc=f"train {name}")
    if run.train_only:
        return run.trained(repo_root)
    classifier, judge_ref = judge_for(repo_root, run)
    samples, requested = draw(result.model, metric_samples, seed)
    metrics = digit_generation_metrics(classifier, samples, x_held, x_train, requested)
    classes = 0 if config.label_from_latent else config.num_classes  # labels a client can ask for
    grid = draw(result.model, 100 if classes else 64, seed + 1)[0]
    training = digit_training_record(
        dataset, x_train, x_held, seed, result, batch_size=batch_size, lr=config.lr, optimizer=optimizer(config),
        stabilisation=stabilisation(config), metrics_judge=judge_ref, metric_samples=metric_samples,
    )
    return publish_model(
        repo_root, name, DCGAN_SPEC, result.model,
        image=ImageSpec(channels=config.channels, height=config.height, width=config.width),
        labels=[str(k) for k in range(classes)], latent_dim=config.latent_dim,
        training=training, metrics=metrics, grid=(grid, 10 if classes else 8),
        description=description(config),
    )


def description(config: GANConfig) -> str | None:
    """The manifest's description when this GAN serves z alone but reads a class from it."""
    if not config.label_from_latent:
        return None
    return CLUSTER_DESCRIPTION if config.clusters else MIXTURE_DESCRIPTION


def judge_for(repo_root: Path, run: RunOptions) -> tuple[nn.Module, str]:
    """The digit classifier of the repository (building it when absent, on the same digits)
    and its reference."""
    found = latest_judge(repo_root)
    if found is None:
        from genserve.export.families.digits.build import build_digits

        log.warning("no %r classifier in %s to judge the digits; building it first",
                    JUDGE, repo_root)
        build_digits(repo_root, name=JUDGE, run=replace(run, checkpoint_dir=None, train_only=False))
        found = latest_judge(repo_root)
    return found


def build(options: BuildOptions) -> Path:
    """The label-free digit DCGAN, class-conditional with --conditional; judged by `digits`."""
    config = CONDITIONAL_DIGIT_GAN if options.conditional else DIGIT_GAN
    epochs = CONDITIONAL_DIGIT_EPOCHS if options.conditional else DEFAULT_DIGIT_EPOCHS
    return build_gan(options.repo_root, config=config, **{"epochs": epochs, **options.pipeline_kwargs()})


def build_mixture(options: BuildOptions) -> Path:
    """`genserve export gan-mixture`: the class mixture, trained with the digits' labels."""
    return build_gan(options.repo_root, config=MIXTURE_DIGIT_GAN, **options.pipeline_kwargs())

