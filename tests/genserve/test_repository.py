"""The model repository: model references, atomic publish, version resolution, checksums."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genserve.errors import InvalidArgumentError, ModelNotFoundError, ModelNotReadyError
from genserve.repository import (
    MANIFEST,
    Manifest,
    ModelRepository,
    OnnxFile,
    TensorSpec,
    next_version,
    parse_model_ref,
    publish,
    sha256_file,
)
from tests.support import tiny_onnx


def manifest(
    name: str = "vae", version: str = "1", roles: tuple[str, ...] = ("model",)
) -> Manifest:
    spec = OnnxFile(
        path="",
        sha256="",
        inputs=[TensorSpec(name="z", shape=[-1, 4], dtype="float32")],
        outputs=[TensorSpec(name="image", shape=[-1, 1, 2, 2], dtype="float32")],
    )
    return Manifest(
        name=name,
        version=version,
        kind="vae",
        loop="latent_sampler",
        latent_dim=4,
        files={role: spec.model_copy(deep=True) for role in roles},
    )


def onnx_bytes(tmp_path: Path, content: bytes = b"not really onnx", name: str = "src.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def publish_version(root: Path, tmp_path: Path, name: str, version: str) -> Path:
    return publish(
        root, manifest(name, version), {"model": onnx_bytes(tmp_path, f"{name}{version}".encode())}
    )


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("vae", ("vae", None)),
        ("vae:3", ("vae", "3")),
        ("c-vae_2", ("c-vae_2", None)),
        ("vae:123456789", ("vae", "123456789")),
    ],
)
def test_parse_model_ref_accepts_names_and_versions(
    ref: str, expected: tuple[str, str | None]
) -> None:
    """'name' and 'name:version' split into (name, version or None)."""
    assert parse_model_ref(ref) == expected


@pytest.mark.parametrize(
    "ref, message",
    [
        ("", "model must be a name such as 'vae' or 'vae:1', got ''"),
        ("../x", "model name must match"),
        ("VAE", "got 'VAE'"),
        ("vae:0", "model version must be a positive integer, got '0'"),
        ("vae:x", "model version must be a positive integer, got 'x'"),
        ("vae:01", "model version must be a positive integer, got '01'"),
        ("vae/..", "model name must match"),
    ],
)
def test_parse_model_ref_rejects_bad_refs_with_a_message(ref: str, message: str) -> None:
    """Paths, upper case, zero or non-numeric versions and '' are INVALID_ARGUMENT with a reason."""
    with pytest.raises(InvalidArgumentError) as info:
        parse_model_ref(ref)
    assert message in str(info.value)


def test_publish_writes_files_and_manifest_with_sha256(tmp_path: Path) -> None:
    """publish copies each role's file, fills path and sha256, and writes manifest.json."""
    root = tmp_path / "repo"
    src = onnx_bytes(tmp_path, b"graph bytes")
    extra = onnx_bytes(tmp_path, b"png", "grid.png")
    final = publish(
        root,
        manifest(roles=("model", "encoder")),
        {"model": src, "encoder": src},
        extra_files={"samples.png": extra},
    )
    assert final == root / "vae" / "1"
    assert sorted(p.name for p in final.iterdir()) == [
        "encoder.onnx",
        MANIFEST,
        "model.onnx",
        "samples.png",
    ]
    assert (final / "model.onnx").read_bytes() == b"graph bytes"
    written = Manifest.model_validate_json((final / MANIFEST).read_text())
    assert (
        written.files["model"].path == "model.onnx"
        and written.files["encoder"].path == "encoder.onnx"
    )
    assert (
        written.files["model"].sha256 == sha256_file(src)
        and len(written.files["model"].sha256) == 64
    )
    assert written.created  # an ISO timestamp is filled in


def test_publish_leaves_no_staging_directory(tmp_path: Path) -> None:
    """After publish only the final version directory exists next to other versions."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    assert [p.name for p in (root / "vae").iterdir()] == ["1"]


def test_publish_failure_cleans_up_and_publishes_nothing(tmp_path: Path) -> None:
    """A publish that fails half-way leaves neither the version nor a temporary directory."""
    root = tmp_path / "repo"
    with pytest.raises(FileNotFoundError):
        publish(root, manifest(), {"model": tmp_path / "missing.onnx"})
    assert list((root / "vae").iterdir()) == []
    assert ModelRepository(root).versions("vae") == []


def test_publish_refuses_to_overwrite_an_existing_version(tmp_path: Path) -> None:
    """Versions are immutable: publishing vae:1 twice raises and keeps the first files."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    with pytest.raises(FileExistsError, match="already exists; versions are immutable"):
        publish(root, manifest(), {"model": onnx_bytes(tmp_path, b"other")})
    assert (root / "vae" / "1" / "model.onnx").read_bytes() == b"vae1"


def test_publish_rejects_an_invalid_name(tmp_path: Path) -> None:
    """A manifest whose name would escape the repository is refused before anything is written."""
    with pytest.raises(InvalidArgumentError):
        publish(tmp_path / "repo", manifest(name="../evil"), {"model": onnx_bytes(tmp_path)})
    assert not (tmp_path / "repo").exists()


def test_resolve_picks_the_numerically_latest_version(tmp_path: Path) -> None:
    """With versions 2 and 10, 'vae' resolves to 10 (not the string-sorted 2)."""
    root = tmp_path / "repo"
    for version in ("2", "10", "9"):
        publish_version(root, tmp_path, "vae", version)
    repo = ModelRepository(root)
    assert repo.versions("vae") == ["2", "9", "10"]
    assert repo.resolve("vae").ref == "vae:10"
    assert repo.resolve("vae:2").ref == "vae:2"
    assert next_version(root, "vae") == "11"


def test_resolve_unknown_model_lists_available_models(tmp_path: Path) -> None:
    """NOT_FOUND for an unknown name lists the models the repository holds."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    publish_version(root, tmp_path, "cvae", "1")
    with pytest.raises(ModelNotFoundError) as info:
        ModelRepository(root).resolve("gan")
    assert str(info.value) == "model 'gan' not found; available models: cvae, vae"


def test_resolve_in_an_empty_repository_says_none(tmp_path: Path) -> None:
    """NOT_FOUND in a repository that does not exist yet says there are no models."""
    with pytest.raises(ModelNotFoundError, match="available models: none$"):
        ModelRepository(tmp_path / "nowhere").resolve("vae")


def test_resolve_unknown_version_lists_versions(tmp_path: Path) -> None:
    """NOT_FOUND for a missing version lists the versions that exist, in numeric order."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "10")
    publish_version(root, tmp_path, "vae", "2")
    with pytest.raises(ModelNotFoundError) as info:
        ModelRepository(root).resolve("vae:3")
    assert str(info.value) == "model 'vae' has no version 3; versions: 2, 10"


def test_verified_path_accepts_an_unmodified_file(tmp_path: Path) -> None:
    """verified_path returns the file's path when its sha256 matches the manifest."""
    root = tmp_path / "repo"
    publish(root, manifest(), {"model": tiny_onnx(tmp_path / "src.onnx")})
    repo = ModelRepository(root)
    assert repo.verified_path(repo.resolve("vae")) == root / "vae" / "1" / "model.onnx"


def test_verified_path_refuses_a_modified_file(tmp_path: Path) -> None:
    """A file changed after publish raises ModelNotReadyError mentioning the sha256 mismatch."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    (root / "vae" / "1" / "model.onnx").write_bytes(b"tampered")
    repo = ModelRepository(root)
    with pytest.raises(ModelNotReadyError) as info:
        repo.verified_path(repo.resolve("vae"))
    assert "vae:1: sha256 of model.onnx is" in str(info.value)
    assert "refusing to load it" in str(info.value)


def test_verified_path_reports_a_missing_file(tmp_path: Path) -> None:
    """A deleted ONNX file raises ModelNotReadyError naming the file."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    (root / "vae" / "1" / "model.onnx").unlink()
    repo = ModelRepository(root)
    with pytest.raises(ModelNotReadyError, match="file model.onnx is missing"):
        repo.verified_path(repo.resolve("vae"))


def test_broken_manifest_is_skipped_by_listing_but_fails_on_load(tmp_path: Path) -> None:
    """manifests() skips an unreadable manifest; resolving that version is ModelNotReadyError."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    publish_version(root, tmp_path, "vae", "2")
    (root / "vae" / "2" / MANIFEST).write_text("{not json")
    repo = ModelRepository(root)
    assert [m.ref for m in repo.manifests()] == ["vae:1"]
    with pytest.raises(ModelNotReadyError, match="manifest of vae:2 is invalid"):
        repo.resolve("vae")


def test_manifest_missing_a_field_is_not_ready(tmp_path: Path) -> None:
    """Valid JSON that lacks required manifest fields is also ModelNotReadyError on load."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    (root / "vae" / "1" / MANIFEST).write_text(json.dumps({"name": "vae"}))
    with pytest.raises(ModelNotReadyError, match="manifest of vae:1 is invalid"):
        ModelRepository(root).load("vae", "1")


def test_listing_ignores_foreign_directories(tmp_path: Path) -> None:
    """Names and versions that do not match the patterns, or lack a manifest, are not listed."""
    root = tmp_path / "repo"
    publish_version(root, tmp_path, "vae", "1")
    (root / "Upper").mkdir()
    (root / ".hidden").mkdir()
    (root / "vae" / "3").mkdir()  # no manifest yet
    (root / "vae" / ".4-tmp").mkdir()  # a publish in progress
    repo = ModelRepository(root)
    assert repo.names() == ["vae"]
    assert repo.versions("vae") == ["1"]


def test_conditional_means_a_latent_sampler_with_labels() -> None:
    """A latent sampler with labels is conditional; without labels, or another loop, it is not."""
    plain = manifest()
    assert plain.ref == "vae:1" and not plain.conditional
    assert plain.model_copy(update={"labels": ["0", "1"]}).conditional
    assert not plain.model_copy(update={"labels": ["0"], "loop": "image_classifier"}).conditional


def test_empty_version_after_colon_is_rejected() -> None:
    """"vae:" is a typo, not a request for the latest version."""
    with pytest.raises(InvalidArgumentError, match="positive integer"):
        parse_model_ref("vae:")


def test_a_pin_decides_what_the_bare_name_resolves_to(tmp_path: Path) -> None:
    """'vae' goes to the pinned version while it exists; unpinned, a pin to a deleted version
    or a garbled pin file: the newest. The pin file is written atomically and readable by all."""
    root = tmp_path / "repo"
    for version in ("1", "2"):
        publish_version(root, tmp_path, "vae", version)
    repo = ModelRepository(root)
    repo.pin("vae", "1")
    assert (root / "vae" / "default_version").read_text() == "1\n"
    assert (root / "vae" / "default_version").stat().st_mode & 0o777 == 0o644
    assert repo.resolve("vae").ref == "vae:1" and repo.default_version("vae", ["1", "2"]) == ("1", True)
    assert repo.resolve("vae:2").ref == "vae:2", "an explicit version ignores the pin"
    assert [p.name for p in (root / "vae").iterdir() if p.name.startswith(".")] == [], "no staging file left"
    assert repo.default_version("vae", ["2"]) == ("2", False), "a pin to a version that is gone is ignored"
    (root / "vae" / "default_version").write_text("../../etc\n")
    assert repo.pinned_version("vae") is None and repo.resolve("vae").ref == "vae:2"
    repo.pin("vae", None)
    repo.pin("vae", None)  # removing an absent pin is fine
    assert not (root / "vae" / "default_version").exists() and repo.resolve("vae").ref == "vae:2"
    with pytest.raises(InvalidArgumentError):
        repo.pin("../vae", "1")
    assert repo.names() == ["vae"] and repo.versions("vae") == ["1", "2"], "the pin file is no model or version"
