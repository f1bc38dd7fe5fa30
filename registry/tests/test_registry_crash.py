"""Real processes: writers killed with SIGKILL at random instants, and writers racing each other.

The writers are separate Python processes (crash_writer.py) doing real fsyncs and renames;
the test is the only reader and checks the registry after every kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dv_registry import Registry

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX"),
    pytest.mark.real_fsync,
]

WRITER = Path(__file__).parent / "crash_writer.py"
KILLS = 100
WRITERS = 2


def start_writer(home: Path, prefix: str, *args: str) -> subprocess.Popen[str]:
    # stderr goes to a file: a pipe nobody reads could fill up and stall the writer.
    with (home.parent / f"{prefix}.stderr").open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WRITER), str(home), prefix, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def stderr_of(home: Path, prefix: str) -> str:
    return (home.parent / f"{prefix}.stderr").read_text()


def wait_ready(process: subprocess.Popen[str], home: Path, prefix: str) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        process.wait()
        raise AssertionError(f"writer {prefix} did not start: {line!r} {stderr_of(home, prefix)}")


class WriterPool:
    """Looping writer processes forked by one zygote process (see crash_writer.py)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.zygote = start_writer(home, "-", "zygote")
        wait_ready(self.zygote, home, "-")
        self.pids: dict[str, int] = {}

    def _ask(self, command: str) -> list[str]:
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.write(command + "\n")
        self.zygote.stdin.flush()
        return self.zygote.stdout.readline().split()

    def spawn(self, prefix: str) -> None:
        answer = self._ask(f"spawn {prefix}")
        assert answer[:2] == ["spawned", prefix], answer
        self.pids[prefix] = int(answer[2])

    def kill(self, prefix: str) -> list[dict[str, Any]]:
        """SIGKILL the writer, wait until it is gone, and return every event it wrote."""
        pid = self.pids.pop(prefix)
        os.kill(pid, signal.SIGKILL)
        answer = self._ask(f"reap {pid}")
        assert answer == ["reaped", str(pid), str(int(signal.SIGKILL))], (
            f"writer {prefix} died by itself: {answer} {stderr_of(self.home, '-')}"
        )
        lines = (self.home.parent / f"{prefix}.events").read_text().splitlines()
        # Only the last line can be cut short, and only if the kill landed inside a write.
        return [json.loads(line) for line in lines if line.endswith("}")]

    def close(self) -> None:
        for prefix in list(self.pids):
            self.kill(prefix)
        assert self.zygote.stdin is not None
        self.zygote.stdin.close()
        self.zygote.wait(timeout=30)


@dataclass
class Expectation:
    """What the registry must hold: every committed ref, and the one change that was in flight."""

    committed: dict[str, str | None] = field(default_factory=dict)  # ref -> digest, None = removed
    in_flight: list[dict[str, Any]] = field(default_factory=list)

    def record(self, writer_events: list[dict[str, Any]]) -> None:
        begun: dict[str, Any] | None = None
        for event in writer_events:
            if event["phase"] == "begin":
                begun = event
            else:
                self.committed.update(event["refs"])
                begun = None
        if begun is not None:
            self.in_flight.append(begun)

    def check(self, registry: Registry, moment: str) -> None:
        """Check the whole registry; every writer that touched it is dead by now."""
        problems = registry.verify()
        assert problems == [], f"{moment}: verify failed: {problems}"
        actual = {m.ref: m.digest for m in registry.list()}
        uncertain: set[str] = set()
        for change in self.in_flight:
            uncertain |= self._check_in_flight(change, actual, moment)
        for ref, digest in self.committed.items():
            if ref not in uncertain:
                assert actual.get(ref) == digest, f"{moment}: committed {ref} lost or changed"
        unexpected = set(actual) - {r for r, d in self.committed.items() if d} - uncertain
        assert not unexpected, f"{moment}: refs nobody committed: {sorted(unexpected)}"
        # The killed writers never come back, so what their last change left is now settled.
        for ref in uncertain:
            self.committed[ref] = actual.get(ref)
        self.in_flight.clear()

    def _check_in_flight(self, change: dict[str, Any], actual: dict[str, str], moment: str) -> set[str]:
        """Assert the interrupted change is wholly applied or wholly absent; return its refs."""
        name, op = change["name"], change["op"]
        v1, v2, latest, step1, keep = (f"{name}:{t}" for t in ("v1", "v2", "latest", "step1", "keep"))
        where = f"{moment}: {op} of {name} interrupted"
        if op == "add1":
            present = [ref in actual for ref in (v1, latest, step1)]
            assert all(present) or not any(present), f"{where}: partly applied {present}"
            if all(present):
                assert actual[latest] == actual[v1], where
            return {v1, latest, step1}
        if op == "add2":
            if v2 in actual:
                assert actual[latest] == actual[v2], f"{where}: v2 exists but latest was not moved"
            else:
                assert actual[latest] == self.committed[v1], f"{where}: latest moved without v2"
            return {v2, latest}
        if op == "tag":
            assert actual.get(keep) in (None, actual[v1]), where
            return {keep}
        if op == "rm":
            assert actual.get(step1) in (None, self.committed[step1]), where
            return {step1}
        if op == "drop":
            refs = {v1, v2, latest, keep}
            present = [ref in actual for ref in sorted(refs)]
            assert all(present) or not any(present), f"{where}: partly removed {present}"
            if all(present):
                assert all(actual[ref] == self.committed[ref] for ref in refs), where
            return refs
        return set()  # prune changes no ref


def test_sigkill_at_random_instants_never_breaks_the_registry(tmp_path: Path) -> None:
    """Rounds of two concurrent writers, each killed with SIGKILL at its own random instant.
    After every round the registry verifies clean, everything each victim committed is there,
    and each victim's interrupted change is wholly applied or wholly absent."""
    home = tmp_path / "home"
    home.mkdir()
    rng = random.Random(20240501)
    started = time.monotonic()
    pool = WriterPool(home)
    kills = committed_changes = 0
    interrupted: Counter[str] = Counter()
    try:
        while kills < KILLS:
            victims = [f"w{kills + n}" for n in range(WRITERS)]
            for victim in victims:
                pool.spawn(victim)
            expectation = Expectation()
            # Mostly early kills, sometimes late ones, so every kind of change gets interrupted.
            first = rng.uniform(0, 0.25) if rng.random() < 0.7 else rng.uniform(0.25, 0.8)
            for victim, delay in zip(victims, (first, rng.uniform(0, 0.1)), strict=True):
                time.sleep(delay)
                events = pool.kill(victim)
                kills += 1
                expectation.record(events)
                committed_changes += sum(1 for e in events if e["phase"] == "done")
            interrupted.update(change["op"] for change in expectation.in_flight)
            registry = Registry(home)
            expectation.check(registry, f"after kill {kills}")
            # Start each round empty, so that the registry, and each check, stay small.
            leftover = sorted({m.name for m in registry.list()})
            if leftover:
                registry.remove(leftover)
    finally:
        pool.close()
    assert Registry(home).verify() == []
    summary = f"{committed_changes} changes committed; interrupted: {dict(interrupted)}"
    print(summary)  # shown with -s: which kinds of change the kills landed in
    assert committed_changes > 50, f"the writers hardly committed anything: {summary}"
    assert interrupted["add1"] and interrupted["add2"], summary
    assert time.monotonic() - started < 120, summary


def test_eight_writers_at_once_lose_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    writers = [start_writer(home, f"p{k}", "burst", "10") for k in range(8)]
    for k, writer in enumerate(writers):
        wait_ready(writer, home, f"p{k}")
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    committed: dict[str, str] = {}
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        for line in out.splitlines():
            committed.update(json.loads(line)["refs"])
    assert len(committed) == 80
    assert len(set(committed.values())) == 80

    registry = Registry(home)
    assert registry.verify() == []
    actual = {m.ref: m.digest for m in registry.list()}
    for ref, digest in committed.items():
        assert actual[ref] == digest
    # Version numbers were handed out under the lock: no gaps, no duplicates, latest is the last.
    assert registry.tags("shared") == ["latest"] + [f"v{i}" for i in range(1, 41)]
    assert actual["shared:latest"] == actual["shared:v40"]
    for k in range(8):
        assert registry.tags(f"p{k}") == ["latest", "v1", "v2", "v3", "v4", "v5"]
    assert not (home / "journal.json").exists()
    assert not [p for p in os.listdir(home / "blobs") if p.startswith(".tmp-")]
