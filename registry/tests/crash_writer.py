"""Registry writer processes for test_registry_crash.py (run as a script, never imported).

    crash_writer.py HOME PREFIX burst N   wait for "go" on stdin, add N versions, exit
    crash_writer.py HOME - zygote         a fork server: imports once, then on stdin
        "spawn PREFIX" forks a writer process that changes the registry forever (until the
                       test kills it) and answers "spawned PREFIX PID";
        "reap PID"     waits for that (killed) writer and answers "reaped PID SIGNAL".
    Forking from a process that has already imported everything makes a new writer cost
    milliseconds instead of a Python start-up, so a test can afford a hundred kills.

Every change is announced as a JSON line before it starts ("begin") and after it has returned
("done", with the refs it made and their digests), so the test knows what was committed before
it killed the writer and which single change may have been in flight. Looping writers write
these lines to HOME/../PREFIX.events (no fsync needed: SIGKILL does not lose written data).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import zlib
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).parent))

from dvreg_testutil import motion_entry, small_subject_entry

from dv_registry import Registry

EVENTS: IO[str] = sys.stdout


def emit(phase: str, name: str, op: str, refs: dict[str, str | None] | None = None) -> None:
    EVENTS.write(json.dumps({"phase": phase, "name": name, "op": op, "refs": refs or {}}) + "\n")
    EVENTS.flush()


def seed_for(text: str) -> int:
    return zlib.crc32(text.encode())


def loop(registry: Registry, prefix: str) -> None:
    i = 0
    while True:
        name = f"{prefix}-{i}"
        seed = seed_for(name)
        emit("begin", name, "add1")
        v1 = registry.add_version(
            "subject",
            name,
            small_subject_entry(seed),
            checkpoints={"step1": small_subject_entry(seed + 1)},
        )
        step1 = registry.resolve(f"{name}:step1").digest
        emit(
            "done",
            name,
            "add1",
            {f"{name}:v1": v1.digest, f"{name}:latest": v1.digest, f"{name}:step1": step1},
        )

        emit("begin", name, "add2")
        v2 = registry.add_version("subject", name, small_subject_entry(seed + 2))
        emit("done", name, "add2", {f"{name}:v2": v2.digest, f"{name}:latest": v2.digest})

        emit("begin", name, "tag")
        keep = registry.tag(f"{name}:v1", f"{name}:keep")
        emit("done", name, "tag", {f"{name}:keep": keep.digest})

        emit("begin", name, "rm")
        registry.remove(f"{name}:step1")
        emit("done", name, "rm", {f"{name}:step1": None})

        if i % 2 == 0:
            # Every other name is removed whole again, which also keeps the registry small.
            emit("begin", name, "drop")
            registry.remove(name)
            tags = ("v1", "v2", "latest", "keep")
            emit("done", name, "drop", {f"{name}:{tag}": None for tag in tags})

            emit("begin", name, "prune")
            registry.prune()
            emit("done", name, "prune")
        i += 1


def burst(registry: Registry, prefix: str, count: int) -> None:
    sys.stdin.readline()  # "go": every writer starts at once
    for i in range(count):
        # Half to the writer's own name, half to one name every writer shares.
        name = prefix if i % 2 == 0 else "shared"
        seed = seed_for(f"{prefix}-{i}")
        manifest = registry.add_version("motion", name, motion_entry(seed, description=f"{prefix}-{i}"))
        emit("done", name, "add", {manifest.ref: manifest.digest})


def zygote(home: Path) -> None:
    global EVENTS
    for command in sys.stdin:
        verb, argument = command.split()
        if verb == "reap":
            _, status = os.waitpid(int(argument), 0)
            signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            print(f"reaped {argument} {signal_number}", flush=True)
            continue
        prefix = argument
        pid = os.fork()
        if pid == 0:
            try:
                EVENTS = (home.parent / f"{prefix}.events").open("w")
                loop(Registry(home, lock_timeout=120), prefix)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)  # a writer only ever ends by being killed
        print(f"spawned {prefix} {pid}", flush=True)


def main() -> None:
    home, prefix, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if mode == "zygote":
        zygote(home)
    else:
        burst(Registry(home, lock_timeout=120), prefix, int(sys.argv[4]))


if __name__ == "__main__":
    main()
