"""The text-classification data: standard-library docstrings by family, and users' files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genserve.export.data.labelled_texts import (
    FAMILIES,
    MIN_WORDS,
    load_docstrings,
    load_labelled_file,
)


@pytest.fixture(scope="module")
def docstrings():
    return load_docstrings()


def test_docstring_families_are_ten_deduplicated_and_sized(docstrings) -> None:
    """Ten families of 100+ unique texts of 12+ words each, about 2,800 in all."""
    counts = docstrings.counts()
    assert list(counts) == list(FAMILIES) and len(counts) == 10
    assert min(counts.values()) >= 100 and 2_300 <= len(docstrings.texts) <= 3_300
    assert len(set(docstrings.texts)) == len(docstrings.texts)
    assert min(len(t.split()) for t in docstrings.texts) >= MIN_WORDS
    assert all("\n" not in t and "  " not in t for t in docstrings.texts)


def test_docstring_extraction_is_deterministic(docstrings) -> None:
    """A second extraction gives the same texts in the same order and the same source line."""
    again = load_docstrings()
    assert again.texts == docstrings.texts and again.source == docstrings.source
    assert (again.labels == docstrings.labels).all()


def test_known_docstrings_carry_their_module_family(docstrings) -> None:
    """os.makedirs's docstring is labelled os and json.dumps's formats."""
    for obj, family in ((os.makedirs, "os"), (json.dumps, "formats")):
        text = " ".join(obj.__doc__.split())
        assert docstrings.label_names[docstrings.labels[docstrings.texts.index(text)]] == family


def test_csv_and_jsonl_give_the_same_dataset(tmp_path: Path) -> None:
    """Both formats give texts in file order and labels indexed in sorted label order."""
    rows = [("a sunny day", "weather"), ("stocks went up", "finance"), ("rain tomorrow", "weather")]
    (tmp_path / "d.csv").write_text("label,text\n" + "".join(f'{label},"{text}"\n' for text, label in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    for name in ("d.csv", "d.jsonl"):
        data = load_labelled_file(tmp_path / name)
        assert data.texts == [t for t, _ in rows] and data.label_names == ["finance", "weather"]
        assert data.labels.tolist() == [1, 0, 1] and data.counts() == {"finance": 1, "weather": 2}


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("d.csv", "text,tag\nhello,x\n", "row 1 must have 'text' and 'label'"),
        ("d.csv", "text,label\nhello,x\nworld,x\n", "at least 2 distinct labels"),
        ("d.jsonl", '{"text": "", "label": "x"}\n', "row 1 has an empty text or label"),
        ("d.txt", "hello", "must be .csv"),
    ],
)
def test_bad_data_files_say_what_is_wrong(tmp_path: Path, name: str, content: str, needle: str) -> None:
    """Missing columns, one label, empty texts and unknown formats are refused with a reason."""
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=needle):
        load_labelled_file(tmp_path / name)
