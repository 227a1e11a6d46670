"""docs/api.md is the API reference generated from the proto comments, and it is up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_api_reference_is_regenerated_from_the_protos():
    """scripts/api_docs.py --check passes: docs/api.md matches what the .proto files say (`make proto`)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_api_reference_carries_every_rpc_and_the_field_comments():
    """Every service method of the protos appears, with its comment; so do field comments."""
    text = (ROOT / "docs" / "api.md").read_text()
    for rpc in ("GenerateImages", "GenerateText", "ListModels", "GetModel", "SetDefaultVersion", "RescanRepository",
                "SubmitJob", "WatchJob"):
        assert f"| `{rpc}` |" in text
    assert "| `GenerateText` | [GenerateTextRequest](#generatetextrequest) | stream [GenerateTextChunk]" in text
    assert "| `ready` | `bool` | 17 | Whether this version can be served" in text
