"""The one registry of model families: what `genserve train/export <family>` and the zoo read.

A family is a folder in `export/families/` plus one entry below: its CLI name, its ModelSpec
and its build (`build(options: BuildOptions) -> Path`), named as "module:attribute" and
imported only when used (so the CLI's help and `scripts/models.sh` read this table without
loading torch), the default repository name of its class-conditional variant, whether the
default zoo builds it, and the Hugging Face architecture `genserve import-hf` maps to it, if
any. The order of FAMILIES is the zoo's order: digits comes first, as it judges the
generators' samples when they are exported.

`python -m genserve.export.registry` prints the zoo, one "name family [--conditional]" a line.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genserve.export.core.options import BuildOptions

if TYPE_CHECKING:
    from genserve.export.core.spec import ModelSpec

_FAMILIES = "genserve.export.families"


@dataclass(frozen=True)
class Family:
    """One `genserve export <name>` family."""

    name: str  # the CLI name
    spec_ref: str  # "module:attribute" of its ModelSpec: kind, serving loop, config, ONNX graphs
    build_ref: str  # "module:function" of build(options): train (resuming); unless train_only, publish
    summary: str  # one line for `genserve export --help`
    conditional: str | None = None  # default repository name of the --conditional variant
    in_zoo: bool = True  # built by scripts/models.sh (the variant too, when there is one)
    judged: bool = False  # its build scores samples with the `digits` judge (export/zoo.py builds it first)
    hf_architecture: str | None = None  # the Hugging Face architecture `genserve import-hf` maps to it
    hf_importer: str | None = None  # "module:function" publishing that architecture
    hf_takes_data: bool = False  # its importer can score labelled held-out texts (--data)

    @property
    def spec(self) -> ModelSpec:
        return resolve(self.spec_ref)

    def build(self, options: BuildOptions) -> Path:
        return resolve(self.build_ref)(options)


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("digits", f"{_FAMILIES}.digits.model:CNN_SPEC", f"{_FAMILIES}.digits.build:build",
           "small CNN digit classifier; judges the digit generators"),
    Family("vae", f"{_FAMILIES}.vae.model:VAE_SPEC", f"{_FAMILIES}.vae.build:build",
           "VAE on the digits, mixture prior (--conditional: class-conditional, cvae)", conditional="cvae",
           judged=True),
    Family("dae", f"{_FAMILIES}.dae.model:DAE_SPEC", f"{_FAMILIES}.dae.build:build",
           "convolutional denoising autoencoder on noisy/clean digits"),
    Family("gan", f"{_FAMILIES}.dcgan.model:DCGAN_SPEC", f"{_FAMILIES}.dcgan.build:build",
           "digit DCGAN trained without labels (--conditional: class-conditional, cgan)", conditional="cgan",
           judged=True),
    Family("gan-mixture", f"{_FAMILIES}.dcgan.model:DCGAN_SPEC", f"{_FAMILIES}.dcgan.build:build_mixture",
           "digit DCGAN, a class mixture trained with labels; serves z only", in_zoo=False,
           judged=True),
    Family("faces", f"{_FAMILIES}.dcgan.model:DCGAN_SPEC", f"{_FAMILIES}.dcgan.faces:build",
           "face DCGAN on LFW's 25x25 faces (--data: a folder of face images)"),
    Family("gpt", f"{_FAMILIES}.gpt.model:GPT_SPEC", f"{_FAMILIES}.gpt.build:build",
           "small GPT on pydoc prose (--data: text files); --epochs counts passes over the tokens",
           hf_architecture="GPT2LMHeadModel", hf_importer=f"{_FAMILIES}.gpt.hf:import_gpt2"),
    Family("textclf", f"{_FAMILIES}.textclf.model:TEXT_CLASSIFIER_SPEC", f"{_FAMILIES}.textclf.build:build",
           "MiniLM-L6 fine-tuned on docstrings (--data: CSV/JSONL of text,label)",
           hf_architecture="BertForSequenceClassification",
           hf_importer=f"{_FAMILIES}.textclf.hf:import_bert_classifier", hf_takes_data=True),
)}

# `genserve import-hf`: Hugging Face architecture -> "module:function" of its importer
HF_IMPORTERS: dict[str, str] = {f.hf_architecture: f.hf_importer for f in FAMILIES.values()
                                if f.hf_architecture and f.hf_importer}
HF_TAKES_DATA = {f.hf_architecture for f in FAMILIES.values() if f.hf_takes_data}


def resolve(ref: str) -> Any:
    """The object a "module:attribute" reference names, importing its module."""
    module_name, attribute = ref.split(":")
    return getattr(importlib.import_module(module_name), attribute)


@cache
def specs() -> dict[str, ModelSpec]:
    """Manifest kind -> spec: how a published version is rebuilt in PyTorch (core/publishing.py)."""
    return {family.spec.kind: family.spec for family in FAMILIES.values()}


def default_name(family: str, conditional: bool) -> str:
    """The repository name `genserve export` uses without --name: the family, or its
    conditional variant's name ("c" + family when it names none)."""
    if not conditional:
        return family
    return FAMILIES[family].conditional or f"c{family}"


def zoo() -> list[str]:
    """The default zoo in build order, one "name family [--conditional]" per model."""
    lines = []
    for family in FAMILIES.values():
        if family.in_zoo:
            lines.append(f"{family.name} {family.name}")
            if family.conditional:
                lines.append(f"{family.conditional} {family.name} --conditional")
    return lines


def help_text() -> str:
    """The families and what each builds, for `genserve train/export --help`."""
    return "families:\n" + "\n".join(f"  {f.name:<8} {f.summary}" for f in FAMILIES.values())


def detect_architecture(hf_dir: Path) -> str:
    """The architecture named in hf_dir/config.json, if genserve has an importer for it."""
    from genserve.export.core.hf_weights import CONFIG, UnsupportedCheckpointError

    config_file = Path(hf_dir) / CONFIG
    if not config_file.is_file():
        raise UnsupportedCheckpointError(f"{hf_dir} has no config.json; pass a folder written by save_pretrained")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    supported = ", ".join(sorted(HF_IMPORTERS))
    if not architectures:
        raise UnsupportedCheckpointError(f"{config_file} names no architecture; supported: {supported}")
    if architectures[0] not in HF_IMPORTERS:
        raise UnsupportedCheckpointError(f"{config_file} is a {architectures[0]}; supported: {supported}")
    return architectures[0]


def import_hf(hf_dir: Path, repo_root: Path, name: str, *, data_path: Path | None = None) -> Path:
    """`genserve import-hf DIR --name NAME`: publish the next version of `name` from the local
    Hugging Face checkpoint in hf_dir (nothing is downloaded); returns its directory.

    The first architecture named in config.json picks the importer, which publishes a version
    exactly as a model built here would be (ONNX graphs with parity checked against PyTorch,
    manifest, tokenizer beside the graphs).
    """
    from genserve.export.core.hf_weights import UnsupportedCheckpointError

    architecture = detect_architecture(hf_dir)
    if data_path is not None and architecture not in HF_TAKES_DATA:
        raise UnsupportedCheckpointError(f"--data scores classifiers only; {hf_dir} is a {architecture}")
    try:
        importer = resolve(HF_IMPORTERS[architecture])
    except (ImportError, AttributeError) as exc:
        raise UnsupportedCheckpointError(f"the importer for {architecture} ({HF_IMPORTERS[architecture]}) "
                                         f"is not available: {exc}") from exc
    extra = {"data_path": Path(data_path)} if data_path is not None else {}
    return importer(Path(hf_dir), Path(repo_root), name, **extra)


if __name__ == "__main__":
    print("\n".join(zoo()))
