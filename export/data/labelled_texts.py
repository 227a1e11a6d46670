"""Offline text-classification data: standard-library docstrings by family, or your own file.

The default data set is human-written text with real labels that every Python install
carries: the docstrings of the standard library, labelled by the family of the module they
document. The ten families are chapters of the Python Library Reference, a few merged so
that each has 100+ examples (FAMILIES below lists every module). Extraction is
deterministic: modules in the order listed (a "pkg.*" entry adds the package's submodules,
sorted), then the module docstring, then its public classes and functions in name order,
each class followed by its own methods in name order. A text is the docstring with its
whitespace collapsed; it is kept when it has at least MIN_WORDS words, once (exact
duplicates collapse), and not at all when the same text documents modules of two families
(`__init__` boilerplate, inherited protocol docs). Docstrings change between Python versions,
so the manifest records the version, the count and a sha256 of the texts.

Your own data: a CSV with a header holding `text` and `label` columns, or JSON Lines with
"text" and "label" keys. Labels are strings; their sorted order gives the class indices.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import inspect
import json
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_WORDS = 12  # shorter docstrings ("Return self+value.") say too little to classify

# family -> modules whose docstrings it labels. Chapters of the 3.11 Library Reference.
FAMILIES: dict[str, tuple[str, ...]] = {
    # Text Processing Services, plus codecs and struct (Binary Data Services)
    "text": ("string", "re", "difflib", "textwrap", "unicodedata", "stringprep", "codecs",
             "struct", "locale", "gettext", "shlex"),
    # Data Types and Functional Programming Modules
    "datatypes": ("datetime", "calendar", "collections", "collections.abc", "heapq", "bisect",
                  "array", "weakref", "types", "copy", "pprint", "reprlib", "enum", "graphlib",
                  "itertools", "functools", "operator"),
    # Numeric and Mathematical Modules
    "numeric": ("numbers", "math", "cmath", "decimal", "fractions", "random", "statistics"),
    # File and Directory Access, Data Compression and Archiving
    "files": ("pathlib", "os.path", "fileinput", "stat", "filecmp", "tempfile", "glob",
              "fnmatch", "linecache", "shutil", "zlib", "gzip", "bz2", "lzma", "zipfile",
              "tarfile"),
    # Data Persistence, File Formats, Internet Data Handling, Structured Markup Processing
    "formats": ("pickle", "copyreg", "shelve", "marshal", "dbm", "sqlite3", "csv", "configparser",
                "tomllib", "netrc", "plistlib", "json.*", "email.*", "mailbox", "mimetypes",
                "base64", "binascii", "quopri", "html.*", "xml.dom.*", "xml.sax.*",
                "xml.etree.ElementTree"),
    # Generic Operating System Services (the command-line and logging parts included)
    "os": ("os", "io", "time", "argparse", "optparse", "getopt", "logging.*", "getpass",
           "platform", "errno"),
    # Concurrent Execution, plus asyncio and the event-loop primitives of Networking and IPC
    "concurrency": ("threading", "multiprocessing.*", "concurrent.futures.*", "subprocess",
                    "sched", "queue", "contextvars", "asyncio.*", "selectors", "signal"),
    # Internet Protocols and Support, plus socket and ssl
    "internet": ("socket", "ssl", "webbrowser", "wsgiref.*", "urllib.*", "http.*", "ftplib",
                 "poplib", "imaplib", "smtplib", "uuid", "socketserver", "xmlrpc.*",
                 "ipaddress"),
    # Development Tools, Debugging and Profiling
    "devtools": ("typing", "pydoc", "doctest", "unittest.*", "bdb", "faulthandler", "pdb",
                 "cProfile", "profile", "pstats", "timeit", "trace", "tracemalloc"),
    # Python Runtime Services, Importing Modules, Python Language Services
    "language": ("sys", "sysconfig", "warnings", "dataclasses", "contextlib", "abc",
                 "atexit", "traceback", "gc", "inspect", "site", "code", "codeop", "zipimport",
                 "pkgutil", "modulefinder", "runpy", "importlib.*", "ast", "symtable", "token",
                 "keyword", "tokenize", "tabnanny", "pyclbr", "py_compile", "compileall", "dis",
                 "pickletools"),
}
SKIP_SUBMODULES = ("test", "tests", "__main__", "windows_events", "windows_utils", "popen_spawn_win32")


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels indexing `label_names`, and where they came from."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64
    label_names: list[str]
    source: str  # one line for the manifest

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == k).sum()) for k, name in enumerate(self.label_names)}


def load_texts(path: Path | None = None) -> TextDataset:
    """The standard-library docstrings without `path`; a CSV or JSONL of (text, label) with it."""
    return load_docstrings() if path is None else load_labelled_file(Path(path))


# --- the standard library's docstrings ----------------------------------------------------


def load_docstrings(min_words: int = MIN_WORDS) -> TextDataset:
    """Every qualifying docstring of the modules in FAMILIES, labelled by family."""
    rows: list[tuple[str, str]] = []  # (family, text), in extraction order
    for family, entries in FAMILIES.items():
        for module in expand_modules(entries):
            rows += [(family, text) for text in module_docstrings(module)]
    families_of: dict[str, set[str]] = {}
    for family, text in rows:
        families_of.setdefault(text, set()).add(family)
    names = list(FAMILIES)
    texts, labels, seen = [], [], set()
    for family, text in rows:
        if len(text.split()) < min_words or len(families_of[text]) > 1 or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(names.index(family))
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    version = ".".join(map(str, sys.version_info[:3]))
    source = (f"Python {version} standard-library docstrings, {len(names)} module families, "
              f"{len(texts)} texts of {min_words}+ words (sha256 {digest})")
    return TextDataset(texts, np.array(labels, dtype=np.int64), names, source)


def expand_modules(entries: tuple[str, ...]) -> list[object]:
    """The modules named by `entries`; "pkg.*" is the package and its submodules, sorted.

    A module that does not import on this platform (a Windows-only helper) is left out.
    """
    modules = []
    for entry in entries:
        names = [entry.removesuffix(".*")]
        if entry.endswith(".*"):
            package = _import(names[0])
            if package is None:
                continue
            found = pkgutil.walk_packages(package.__path__, prefix=f"{names[0]}.", onerror=lambda _: None)
            names += sorted(m.name for m in found if not set(m.name.split(".")) & set(SKIP_SUBMODULES))
        modules += [m for m in map(_import, names) if m is not None]
    return modules


def _import(name: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn on import
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


def module_docstrings(module: Any) -> list[str]:
    """Module, public classes and functions defined there (name order), each class's methods."""
    found = [module.__doc__]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            found.append(obj.__doc__)
            found += [_doc(member) for _, member in sorted(vars(obj).items())]
        elif inspect.isroutine(obj):
            found.append(obj.__doc__)
    return [" ".join(doc.split()) for doc in found if isinstance(doc, str) and doc.strip()]


def _doc(member: Any) -> str | None:
    """The docstring of a method, classmethod, staticmethod or property; None otherwise."""
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    return member.__doc__ if inspect.isroutine(member) else None


# --- a user's own file --------------------------------------------------------------------


def load_labelled_file(path: Path) -> TextDataset:
    """(text, label) rows from a CSV with a header or from JSON Lines; labels sorted by name."""
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        raise ValueError(f"{path.name}: data must be .csv (text,label header) or .jsonl, got {suffix or 'no suffix'}")
    pairs = [_row(record, path, i) for i, record in enumerate(records)]
    names = sorted({label for _, label in pairs})
    if len(names) < 2:
        raise ValueError(f"{path.name}: a classifier needs at least 2 distinct labels, got {names}")
    labels = np.array([names.index(label) for _, label in pairs], dtype=np.int64)
    return TextDataset([text for text, _ in pairs], labels, names,
                       f"{path.name}: {len(pairs)} texts, {len(names)} labels")


def _row(record: Any, path: Path, index: int) -> tuple[str, str]:
    if not isinstance(record, dict) or "text" not in record or "label" not in record:
        raise ValueError(f"{path.name}: row {index + 1} must have 'text' and 'label', got {str(record)[:80]}")
    text, label = str(record["text"] or "").strip(), str(record["label"] or "").strip()
    if not text or not label:
        raise ValueError(f"{path.name}: row {index + 1} has an empty text or label")
    return text, label
