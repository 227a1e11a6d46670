"""The zoo builder's plan and runner (export/zoo.py), with a stand-in `genserve export` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from genserve.export.zoo import BUILD_SECONDS, build_zoo, plan, zoo_builds

# Stands in for `genserve`: `export FAMILY [--conditional] --name N --repository R ...` writes
# R/N/1/manifest.json and records its OMP_NUM_THREADS, or fails when N is in $FAIL.
FAKE = """
import json, os, sys, time
args = sys.argv[1:]
name, repo = args[args.index("--name") + 1], args[args.index("--repository") + 1]
print("building", name)
if name in os.environ.get("FAIL", "").split(","):
    print("boom: the build of", name, "failed"); sys.exit(3)
time.sleep(0.05)
os.makedirs(f"{repo}/{name}/1", exist_ok=True)
json.dump({"threads": os.environ["OMP_NUM_THREADS"]}, open(f"{repo}/{name}/1/manifest.json", "w"))
"""


def publish(repo: Path, name: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "manifest.json").write_text("{}")


def test_the_judge_goes_first_alone_and_the_rest_longest_first(tmp_path: Path) -> None:
    first, rest = plan(zoo_builds(), tmp_path)
    assert [b.name for b in first] == ["digits"]
    names = [b.name for b in rest]
    assert set(names) == {b.name for b in zoo_builds()} - {"digits"}
    assert [BUILD_SECONDS[n] for n in names] == sorted((BUILD_SECONDS[n] for n in names), reverse=True)


def test_a_judged_model_alone_brings_the_judge_only_when_it_is_missing(tmp_path: Path) -> None:
    first, rest = plan(zoo_builds(["gan"]), tmp_path)
    assert [b.name for b in first] == ["digits"] and [b.name for b in rest] == ["gan"]
    assert plan(zoo_builds(["gpt"]), tmp_path)[0] == []  # the GPT needs no judge
    publish(tmp_path, "digits")
    publish(tmp_path, "gan")
    first, rest = plan(zoo_builds(["gan", "cgan"]), tmp_path)
    assert first == [] and [b.name for b in rest] == ["cgan"]  # published models are kept


def test_an_unknown_name_is_refused_with_the_zoo_listed() -> None:
    with pytest.raises(SystemExit, match="not in the zoo: nope .*digits"):
        zoo_builds(["gan", "nope"])


def test_builds_run_in_parallel_with_their_share_of_the_cores(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    repo = tmp_path / "repo"
    code = build_zoo(["digits", "gan", "gpt", "dae"], repo, tmp_path / "ck", jobs=2, cores=4,
                     genserve=[sys.executable, str(fake)])
    assert code == 0
    threads = {n: json.loads((repo / n / "1" / "manifest.json").read_text())["threads"]
               for n in ("digits", "gan", "gpt", "dae")}
    assert threads == {"digits": "4", "gan": "2", "gpt": "2", "dae": "2"}  # the judge alone gets them all
    assert "building gpt" in (tmp_path / "ck" / "logs" / "gpt.log").read_text()
    assert "== zoo: 4 built, 0 failed" in capsys.readouterr().out


def test_a_failed_build_shows_its_log_starts_nothing_new_and_exits_1(tmp_path: Path, capsys, monkeypatch) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    repo = tmp_path / "repo"
    monkeypatch.setenv("FAIL", "gpt")
    code = build_zoo(["gpt", "gan", "dae", "faces"], repo, tmp_path / "ck", jobs=2, cores=2,
                     genserve=[sys.executable, str(fake)])
    assert code == 1
    err = capsys.readouterr().err
    assert "gpt: FAILED (exit 3)" in err and "boom: the build of gpt failed" in err
    assert (repo / "gan" / "1" / "manifest.json").exists()  # started beside gpt: finished
    assert not (repo / "dae").exists() and not (repo / "faces").exists()  # never started


def test_the_judge_failing_stops_the_zoo(tmp_path: Path, capsys, monkeypatch) -> None:
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE)
    monkeypatch.setenv("FAIL", "digits")
    code = build_zoo(["vae", "gpt"], tmp_path / "repo", tmp_path / "ck", jobs=2, cores=2,
                     genserve=[sys.executable, str(fake)])
    assert code == 1 and not (tmp_path / "repo" / "gpt").exists()
