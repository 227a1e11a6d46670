"""The family registry: the zoo, the CLI's names, and what export may import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genserve.export.registry import FAMILIES, HF_IMPORTERS, default_name, resolve, specs, zoo
from genserve.protocol import LOOP_NAMES

# What scripts/models.sh built before it read the registry, in its order: digits judges the rest.
ZOO = ["digits digits", "vae vae", "cvae vae --conditional", "dae dae", "gan gan",
       "cgan gan --conditional", "faces faces", "gpt gpt", "textclf textclf"]


def test_the_zoo_starts_with_the_judge_and_lists_every_variant() -> None:
    """`python -m genserve.export.registry` prints the zoo scripts/models.sh loops over."""
    assert zoo() == ZOO
    printed = subprocess.run([sys.executable, "-m", "genserve.export.registry"], capture_output=True,
                             text=True, check=True).stdout
    assert printed.splitlines() == ZOO


@pytest.mark.parametrize(("family", "conditional", "name"), [
    ("vae", False, "vae"), ("vae", True, "cvae"), ("gan", True, "cgan"), ("digits", True, "cdigits"),
])
def test_default_names_are_the_family_or_its_conditional_variant(family: str, conditional: bool, name: str) -> None:
    """Without --name a build publishes under the family, or the variant's name with --conditional."""
    assert default_name(family, conditional) == name


def test_every_entry_resolves_to_a_spec_with_a_known_loop_and_a_build() -> None:
    """Each family's spec and build import; the spec's loop is one the workers serve."""
    for family in FAMILIES.values():
        assert family.spec.loop in LOOP_NAMES and isinstance(family.spec.loop, str)
        assert callable(resolve(family.build_ref))
    assert set(specs()) == {"cnn_classifier", "vae", "dae", "dcgan", "gpt", "text_classifier"}
    assert all(callable(resolve(ref)) for ref in HF_IMPORTERS.values())


def test_the_registry_loads_without_torch_and_export_never_imports_workers_or_services() -> None:
    """The CLI reads the registry without torch; no export module pulls in the serving side."""
    script = """
import importlib, pkgutil, sys
import genserve.export.registry
assert "torch" not in sys.modules, "the registry imported torch"
import genserve.export
for info in pkgutil.walk_packages(genserve.export.__path__, "genserve.export."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
leaks = sorted(m for m in sys.modules if m.startswith(("genserve.workers", "genserve.services")))
assert not leaks, leaks
"""
    subprocess.run([sys.executable, "-c", script], check=True)
