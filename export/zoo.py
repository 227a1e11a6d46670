"""Build the default model zoo: every build a `genserve export` process, several at once.

`scripts/models.sh` (and so `make models` and the compose `models` builder) runs
`python -m genserve.export.zoo [NAME ...]`. Models already in the repository are kept. The
judge (`digits`) is built first, alone, whenever a model it judges is to be built and the
repository has none; the rest run `jobs` at a time, longest first (BUILD_SECONDS), each with
`cores // jobs` torch threads (OMP_NUM_THREADS; at least one).

Why in parallel: the zoo's models are small, and a small model's training step does not keep
two threads busy. Measured on 2 cores: the zoo one build after another with two threads each
took 741.6 s (AMD EPYC); two builds at once with one thread each took 869 s on a slower 2-core Intel Xeon (2026-12-02), within 2% of a perfect split of its builds.

Each build's output goes to `<checkpoints>/logs/<name>.log`; a failed build prints its log's
tail, no new build starts, the running ones finish, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from genserve.export.registry import FAMILIES, zoo

JUDGE = "digits"  # genserve.export.metrics.judge.JUDGE, which imports torch; the registry's first family
# Whole-build seconds of each zoo model, one thread each, two builds at a time: the order
# builds start in, longest first, so that the last one to start is short. Measured in the
# whole zoo build of 2026-12-06 22:47 (2-core AMD EPYC with AVX-512 BF16, bf16 training: 616 s;
# README).
BUILD_SECONDS = {"cgan": 239, "gpt": 214, "vae": 201, "gan": 198, "cvae": 155, "textclf": 98,
                 "faces": 47, "dae": 22, "digits": 24}
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Build:
    name: str  # the repository name
    args: list[str]  # what `genserve export` builds it from: family [--conditional]

    @property
    def judged(self) -> bool:
        return FAMILIES[self.args[0]].judged


def zoo_builds(names: list[str] | None = None) -> list[Build]:
    """The zoo's builds in the registry's order, or only those named."""
    builds = [Build(name, args) for name, *args in map(str.split, zoo())]
    if names:
        unknown = sorted(set(names) - {b.name for b in builds})
        if unknown:
            raise SystemExit(f"not in the zoo: {', '.join(unknown)} (the zoo: {', '.join(b.name for b in builds)})")
        builds = [b for b in builds if b.name in names]
    return builds


def published(repo: Path, name: str) -> bool:
    return any((repo / name).glob("*/manifest.json"))


def plan(builds: list[Build], repo: Path) -> tuple[list[Build], list[Build]]:
    """(built first, alone; then in parallel, longest first) for the builds not yet published."""
    todo = [b for b in builds if not published(repo, b.name)]
    first = [b for b in todo if b.name == JUDGE]
    if not first and not published(repo, JUDGE) and any(b.judged for b in todo):
        first = zoo_builds([JUDGE])  # asked for a judged model only: the judge comes first anyway
    rest = sorted((b for b in todo if b.name != JUDGE), key=lambda b: -BUILD_SECONDS.get(b.name, 0))
    return first, rest


def default_jobs(cores: int) -> int:
    """Builds at once: one per core, at most 8."""
    return max(1, min(cores, 8))


class Runner:
    """Starts `genserve export` processes and reports them as they end."""

    def __init__(self, genserve: list[str], repo: Path, checkpoints: Path, threads: int) -> None:
        self.genserve, self.repo, self.checkpoints, self.threads = genserve, repo, checkpoints, threads
        self.logs = checkpoints / "logs"
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}
        self.failed: list[str] = []

    def start(self, build: Build, threads: int | None = None) -> None:
        threads = threads or self.threads
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        argv = [*self.genserve, "export", *build.args, "--name", build.name, "--repository", str(self.repo),
                "--checkpoints", str(self.checkpoints)]
        log = open(self.logs / f"{build.name}.log", "w")  # noqa: SIM115 (closed by the child's exit)
        print(f"== building {build.name} ({threads} thread{'s' if threads > 1 else ''}; log {log.name})", flush=True)
        self.running[build.name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env),
                                    time.monotonic())
        log.close()

    def wait_one(self) -> None:
        """Block until a running build ends; report every build that has ended by then, so that
        a failure is seen before anything new starts, whichever of them ended first."""
        while True:
            ended = [(name, proc, started) for name, (proc, started) in self.running.items()
                     if proc.poll() is not None]
            for name, proc, started in ended:
                del self.running[name]
                self.report(name, proc.returncode, time.monotonic() - started)
            if ended:
                return
            time.sleep(0.2)

    def report(self, name: str, code: int, seconds: float) -> None:
        if code == 0:
            print(f"== {name}: built in {seconds:.0f} s", flush=True)
            return
        self.failed.append(name)
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()][-LOG_TAIL_LINES:]  # progress bars: \r
        print(f"== {name}: FAILED (exit {code}) after {seconds:.0f} s; the end of its log:", file=sys.stderr)
        print("\n".join(f"   {line}" for line in lines), file=sys.stderr, flush=True)


def build_zoo(names: list[str] | None, repo: Path, checkpoints: Path, jobs: int, cores: int,
              genserve: list[str]) -> int:
    """Build what is missing; 0 when every build succeeded."""
    builds = zoo_builds(names)
    for b in builds:
        if published(repo, b.name):
            print(f"== {b.name}: already in {repo}", flush=True)
    first, rest = plan(builds, repo)
    threads = max(1, cores // jobs)
    runner = Runner(genserve, repo, checkpoints, threads)
    started = time.monotonic()
    for build in first:
        runner.start(build, threads=cores)
        runner.wait_one()
    queue = [] if runner.failed else list(rest)
    while queue or runner.running:
        while queue and len(runner.running) < jobs and not runner.failed:
            runner.start(queue.pop(0))
        if runner.running:
            runner.wait_one()
        if runner.failed:
            queue.clear()
    built = len(first) + len(rest) - len(runner.failed)
    print(f"== zoo: {built} built, {len(runner.failed)} failed, in {time.monotonic() - started:.0f} s "
          f"({jobs} at a time on {cores} cores)", flush=True)
    return 1 if runner.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genserve.export.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="only these zoo models (default: all)")
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("GENSERVE_MODEL_REPOSITORY",
                                                                                "model_repository")))
    parser.add_argument("--checkpoints", type=Path, default=Path(os.environ.get("CHECKPOINTS", "checkpoints")))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MODEL_JOBS", "0")),
                        help="builds at once (MODEL_JOBS; 0: one per core, at most 8)")
    parser.add_argument("--genserve", default=os.environ.get("GENSERVE", "genserve"),
                        help="the genserve command (default: genserve on PATH)")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    jobs = args.jobs if args.jobs > 0 else default_jobs(cores)
    return build_zoo(args.names, args.repository, args.checkpoints, jobs, cores, args.genserve.split())


if __name__ == "__main__":
    sys.exit(main())
