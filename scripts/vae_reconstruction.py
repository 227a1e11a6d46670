"""Reconstruction error of published VAEs through EncodeImages, on the held-out digits.

    .venv/bin/python scripts/vae_reconstruction.py --repository model_repository vae cvae

Starts the gateway in the embedded mode in this process (port 0), sends the held-out digits of
the build's split (digit_split, seed 0: the 500 digits no VAE trained on) through EncodeImages
with `reconstruct` (a cvae gets each digit's own label), and prints one row per model:

- mse / psnr: pixel mean squared error of decoder(posterior mean) against the digit, and the
  PSNR of that per image (mean over images, peak 1.0);
- bce: Bernoulli negative log-likelihood of the digit under the reconstruction, nats/image (the
  ELBO's reconstruction term, at the mean instead of a sampled z);
- shuffled_mse: the same error when each digit is compared with the decoding of another held-out
  digit's mean (a constant or broken encoder scores about this);
- wrong_label_mse (cvae): each digit encoded and decoded with label (y + 5) mod 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from genserve.aio_client import AsyncClient
from genserve.export.data.mnist import digit_split
from genserve.repository import ModelRepository
from genserve.services.server import create_server
from genserve.settings import GatewaySettings, Settings

CHUNK = 250  # images per EncodeImages call


def bce(x: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(axis=1).mean())


def psnr(x: np.ndarray, p: np.ndarray) -> float:
    per_image = ((x - p) ** 2).reshape(len(x), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(per_image, 1e-12))))


async def encode(client: AsyncClient, model: str, x: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(means, reconstructions) of all of x, CHUNK images per call."""
    means, images = [], []
    for start in range(0, len(x), CHUNK):
        rows = slice(start, start + CHUNK)
        got = await client.encode_images(model, x[rows], labels=None if labels is None else labels[rows].tolist(),
                                         reconstruct=True)
        means.append(got.mean)
        images.append(got.reconstructions)
    return np.concatenate(means), np.concatenate(images)


async def measure(repository: Path, models: list[str], seed: int) -> list[dict[str, object]]:
    _, _, x, y, dataset = digit_split(None, None, seed)
    settings = Settings(model_repository=repository, gateway=GatewaySettings(port=0))
    gateway = await create_server(settings)
    rows = []
    try:
        async with AsyncClient(f"127.0.0.1:{gateway.port}") as client:
            for model in models:
                repo = ModelRepository(repository)
                manifest = repo.resolve(model)
                labels = y if manifest.conditional else None
                means, recon = await encode(client, model, x, labels)
                decoder = ort.InferenceSession(str(repo.verified_path(manifest, "decoder")),
                                               providers=["CPUExecutionProvider"])
                feeds = {"latent": means[np.roll(np.arange(len(x)), 1)]}
                if labels is not None:
                    feeds["label"] = labels.astype(np.int64)  # the digit's own label, another digit's latent
                (shuffled,) = decoder.run(["image"], feeds)
                row = {"model": manifest.ref, "latent_dim": means.shape[1], "images": len(x),
                       "mse": round(float(((x - recon) ** 2).mean()), 5), "psnr_db": round(psnr(x, recon), 2),
                       "bce_nats": round(bce(x, recon), 1), "shuffled_mse": round(float(((x - shuffled) ** 2).mean()), 5)}
                if labels is not None:
                    _, wrong = await encode(client, model, x, (labels + 5) % 10)
                    row["wrong_label_mse"] = round(float(((x - wrong) ** 2).mean()), 5)
                rows.append(row)
    finally:
        await gateway.stop(0.5)
    print(f"# held-out digits: {dataset}, split seed {seed}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["vae", "cvae"])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--seed", type=int, default=0, help="the build's split seed")
    args = parser.parse_args()
    for row in asyncio.run(measure(args.repository, args.models, args.seed)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
