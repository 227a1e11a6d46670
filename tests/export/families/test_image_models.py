"""The image families' modules: registry entries, shapes, output ranges, losses, the noise model."""

from __future__ import annotations

import pytest
import torch

from genserve.export.families.dae.model import DAE, DAEConfig, add_noise
from genserve.export.families.dcgan.model import GAN, GANConfig, class_of
from genserve.export.core.layers import shift
from genserve.export.families.digits.model import CNNClassifier, CNNConfig
from genserve.export.registry import specs
from genserve.protocol import LOOP_NAMES


@pytest.mark.parametrize(
    ("kind", "loop", "module"),
    [("dae", "image_to_image", DAE), ("cnn_classifier", "image_classifier", CNNClassifier), ("dcgan", "latent_sampler", GAN)],
)
def test_image_families_are_registered_with_their_loops(kind: str, loop: str, module: type) -> None:
    """Each family maps to its serving loop and builds its module from the default config."""
    spec = specs()[kind]
    assert spec.loop == loop and loop in LOOP_NAMES
    assert isinstance(spec.build(spec.config_class()), module)


@pytest.mark.parametrize("config", [DAEConfig(), DAEConfig(arch="dense", hidden=(64,)), DAEConfig(height=25, width=25)])
def test_denoiser_maps_images_to_images_in_unit_range(config: DAEConfig) -> None:
    """Both architectures (and a side that is not a multiple of 4) keep the image's shape."""
    model = DAE(config).eval()
    out = model(torch.rand(3, 1, config.height, config.width))
    assert out.shape == (3, 1, config.height, config.width)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert model.loss(torch.rand(3, 1, config.height, config.width), torch.rand(3, 1, config.height, config.width)) > 0


def test_unknown_denoiser_architecture_is_refused() -> None:
    """The config names the allowed architectures."""
    with pytest.raises(ValueError, match="arch must be one of"):
        DAEConfig(arch="unet")


def test_noise_is_seeded_clipped_and_of_the_asked_strength() -> None:
    """Same generator seed, same noise; pixels stay in [0, 1]; sigma per image is honoured."""
    clean = torch.full((2, 1, 28, 28), 0.5)
    sigma = torch.tensor([0.0, 0.2])
    a = add_noise(clean, sigma, torch.Generator().manual_seed(1))
    b = add_noise(clean, sigma, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(a[0], clean[0])
    assert (a[1] - clean[1]).std().item() == pytest.approx(0.2, rel=0.1)


def test_classifier_gives_logits_and_features() -> None:
    """Logits (B, K) for the serving graph, features (B, F) for the generation metrics."""
    model = CNNClassifier(CNNConfig(widths=(8, 16), features=24)).eval()
    x = torch.rand(4, 1, 28, 28)
    assert model(x).shape == (4, 10) and model.features(x).shape == (4, 24)
    assert model.loss(x, torch.tensor([0, 1, 2, 3])).item() > 0


def test_shift_translates_by_whole_pixels_with_zero_fill() -> None:
    """Every shifted image is the original moved by at most 2 pixels, nothing else."""
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    moved = shift(x, torch.Generator().manual_seed(0), 2)
    assert moved.shape == x.shape and torch.equal(moved.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    rows = moved[:, 0].sum(dim=2).argmax(dim=1)  # first row of the block in each image
    assert ((rows - 10).abs() <= 2).all() and len(set(rows.tolist())) > 1


@pytest.mark.parametrize("config", [GANConfig(features=8), GANConfig(features=8, num_classes=10, aux_classes=10), GANConfig(features=8, height=25, width=25)])
def test_generator_draws_images_of_the_configured_shape(config: GANConfig) -> None:
    """z (and a label when conditional) -> (B, 1, H, W) in [0, 1], also for 25x25 faces."""
    gan = GAN(config).eval()
    label = torch.arange(5) % config.num_classes if config.num_classes else None
    images = gan.sample(5, label, torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, config.height, config.width)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_gan_losses_are_finite_and_the_average_follows_the_generator() -> None:
    """D and G losses (with the auxiliary classifier) are finite; update_average moves the EMA."""
    gan = GAN(GANConfig(features=8, num_classes=10, aux_classes=10))
    real, label = torch.rand(6, 1, 28, 28), torch.arange(6)
    fake = gan.generator(torch.randn(6, 64), label)
    assert torch.isfinite(gan.d_loss(real, fake.detach(), label, label))
    assert torch.isfinite(gan.g_loss(fake, label))
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(1.0)
    before = [p.clone() for p in gan.average.parameters()]
    gan.update_average()
    moved = [(after - old).mean().item() for after, old in zip(gan.average.parameters(), before)]
    assert all(m == pytest.approx(1.0 - gan.config.average_decay, abs=1e-6) for m in moved)


def test_the_average_copies_the_generator_until_average_start() -> None:
    """Before average_start G's steps the EMA is G itself; after it, it moves by 1 - decay."""
    gan = GAN(GANConfig(latent_dim=8, features=4, average_start=3))
    for step, expected in [(3, 1.0), (4, 1.0 - gan.config.average_decay)]:
        with torch.no_grad():
            for p in gan.generator.parameters():
                p.add_(1.0)
        before = [p.clone() for p in gan.average.parameters()]
        gan.update_average(step)
        target = [live - old for live, old in zip(gan.generator.parameters(), before)]
        moved = [((a - o) / t).mean().item() for a, o, t in zip(gan.average.parameters(), before, target)]
        assert all(m == pytest.approx(expected, abs=1e-5) for m in moved)


def test_generator_and_discriminator_weigh_the_auxiliary_loss_apart() -> None:
    """aux_weight_g scales only G's classification loss; aux_weight keeps D's."""
    torch.manual_seed(0)
    base = GAN(GANConfig(latent_dim=8, features=4, num_classes=10, aux_classes=10)).eval()
    heavy = GAN(GANConfig(latent_dim=8, features=4, num_classes=10, aux_classes=10, aux_weight_g=3.0)).eval()
    heavy.load_state_dict(base.state_dict())
    real, label = torch.rand(6, 1, 28, 28), torch.arange(6)
    fake = base.generator(torch.randn(6, 8), label).detach()
    aux = torch.nn.functional.cross_entropy(base.discriminator.classifier(base.discriminator.features(fake)), label)
    assert heavy.d_loss(real, fake, label, label).item() == pytest.approx(base.d_loss(real, fake, label, label).item(), abs=1e-5)
    assert (heavy.g_loss(fake, label) - base.g_loss(fake, label)).item() == pytest.approx(2.0 * aux.item(), abs=1e-4)

def test_a_class_mixture_reads_every_class_equally_often_from_z() -> None:
    """class_of(z) is uniform over the classes for z ~ N(0, I); the mixture's G takes z alone."""
    z = torch.randn(50_000, 8, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(class_of(z, 10), minlength=10).double() / len(z)
    assert counts.min() > 0.09 and counts.max() < 0.11
    mixture = GAN(GANConfig(latent_dim=8, features=4, num_classes=10, label_from_latent=True)).eval()
    graph = specs()["dcgan"].graphs(mixture)["model"]
    assert list(graph.make_inputs(2, torch.Generator())) == ["z"]
    one = z[:1].repeat(2, 1)
    one[1, 0] = -one[1, 0] + 0.5  # another class, same remaining latent
    assert class_of(one, 10)[0] != class_of(one, 10)[1]
    assert not torch.equal(*mixture.average(one))


def test_diff_augment_moves_and_cuts_but_keeps_the_gradient() -> None:
    """Translation shifts by whole pixels within 1/8 of the side, cutout zeroes a half-side
    square, and the generator's gradient flows through both."""
    from genserve.export.families.dcgan.augment import augment, cutout, translate

    dot = torch.zeros(16, 1, 16, 16)
    dot[:, 0, 8, 8] = 1.0
    moved = translate(dot, torch.Generator().manual_seed(0))
    where = moved[:, 0].flatten(1).argmax(dim=1)
    rows, cols = where // 16, where % 16
    assert moved.sum().item() == 16.0 and (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 3
    cut = cutout(torch.ones(4, 1, 16, 16), torch.Generator().manual_seed(0))
    assert ((cut == 0).flatten(1).sum(dim=1) == 64).all()  # an 8 x 8 square each
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    augment(x, "translation,cutout", torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_minibatch_std_and_hinge_loss_train_the_discriminator() -> None:
    """D with a minibatch-std feature scores a varied batch differently from a collapsed one;
    the hinge losses are zero exactly when D's margins hold."""
    torch.manual_seed(0)
    gan = GAN(GANConfig(latent_dim=8, features=4, minibatch_std=True, loss="hinge"))
    d = gan.discriminator
    varied, same = torch.rand(8, 1, 28, 28), torch.rand(1, 1, 28, 28).repeat(8, 1, 1, 1)
    assert not torch.allclose(d(same)[:1], d(torch.cat([same[:1], varied[1:]]))[:1])
    loss = gan.d_loss(varied, same)
    assert loss.item() == pytest.approx(2.0, abs=0.5)  # relu(1 - ~0) + relu(1 + ~0) near init
    assert gan.g_loss(same).item() == pytest.approx(-d(same).mean().item(), abs=1e-5)


def test_d_features_widens_the_discriminator_alone() -> None:
    """d_features sets D's channels (its class embedding and head follow); G keeps `features`."""
    narrow = GAN(GANConfig(latent_dim=8, features=4, num_classes=3, aux_classes=3))
    wide = GAN(GANConfig(latent_dim=8, features=4, d_features=12, num_classes=3, aux_classes=3))
    assert [p.shape for p in wide.generator.parameters()] == [p.shape for p in narrow.generator.parameters()]
    first = wide.discriminator.body[0]
    assert first.weight.shape[0] == 12 and narrow.discriminator.body[0].weight.shape[0] == 4
    images, labels = torch.rand(5, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1])
    assert wide.discriminator.features(images).shape == (5, 2 * 12 * 7 * 7)
    assert wide.discriminator(images, labels).shape == (5,)


def test_cluster_labels_are_balanced_enough_and_reproducible() -> None:
    """k-means on pixels gives every cluster members, the same ones for the same seed."""
    from genserve.export.families.dcgan.build import cluster_labels

    images = torch.rand(200, 1, 28, 28).numpy()
    a, b = cluster_labels(images, 5, seed=0), cluster_labels(images, 5, seed=0)
    assert (a == b).all() and set(a.tolist()) == set(range(5))


def test_class_weights_set_how_often_z_picks_each_class() -> None:
    """With class_weights, class_of(z) picks class k with probability weights[k], in the
    served graph too (shares() measures them from labels)."""
    from genserve.export.families.dcgan.build import shares

    weights = shares(torch.tensor([0] * 5 + [1] * 2 + [2] * 3).numpy(), 3)
    assert weights == pytest.approx((0.5, 0.2, 0.3))
    z = torch.randn(50_000, 8, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(class_of(z, 3, weights), minlength=3).double() / len(z)
    assert counts.tolist() == pytest.approx([0.5, 0.2, 0.3], abs=0.01)
    gan = GAN(GANConfig(latent_dim=8, features=4, num_classes=3, label_from_latent=True, class_weights=weights))
    assert gan.generator(z[:4]).shape == (4, 1, 28, 28)
