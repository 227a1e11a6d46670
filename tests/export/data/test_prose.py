"""The GPT's training-only prose: stdlib docstrings, tests skipped, held-out split untouched."""

from pathlib import Path

from genserve.export.data.prose import stdlib_docstrings, training_prose

LONG = "A docstring long enough to keep. " * 10


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_docstrings_of_modules_classes_and_methods_but_not_tests_nested_or_short(tmp_path: Path) -> None:
    write(tmp_path, "pkg/mod.py", f'''"""{LONG}"""
class C:
    """{LONG}"""
    def method(self):
        """{LONG}"""
        def nested():
            """{LONG}"""
def short():
    """Too short."""
''')
    write(tmp_path, "test/test_mod.py", f'"""{LONG}"""\n')
    write(tmp_path, "pkg/tests/t.py", f'"""{LONG}"""\n')
    write(tmp_path, "broken.py", "def (:\n")
    docs = stdlib_docstrings(root=tmp_path)
    assert [d.name for d in docs] == ["pkg/mod.py", "pkg/mod.py:C", "pkg/mod.py:C.method"]
    assert all(d.text.startswith("A docstring long enough") and len(d.text) >= 200 for d in docs)


def test_only_the_whole_default_corpus_gets_them(tmp_path: Path) -> None:
    assert training_prose(tmp_path, None) == []
    assert training_prose(None, 12) == []
