"""The memory planner against a real run, on a GPU: `dv plan STAGE ... --json` against
`torch.cuda.max_memory_allocated` measured on the same stage, run by dv's own command
(`dreamvideo_cli.cli.main`) in this process. Part of the GPU checklist (scripts/gpu-checks.sh).

    python scripts/plan_vs_measured.py compare --backbone modelscope --results OUT/results.jsonl
    python scripts/plan_vs_measured.py compare --backbone wan --compose-frames 33 --results ...
    python scripts/plan_vs_measured.py gpu24 --backbone wan-14b --frames 33 --results ...

compare: for each case (default settings, --gradient-checkpointing, --fp8, --offload-activations,
--blocks-to-swap N) and stage: `dv subject learn --embedding-steps 2 --adapter-steps 2`,
`dv motion learn --adapter-steps 2`, `dv compose --sample-steps 2` (compose takes only --fp8 and
--blocks-to-swap), on small synthetic inputs made here (5 photos and one clip of the stage's
frames, as the planner makes them), with --random-weights. Defaults of every stage first, then
each lever on motion, subject and compose. The plans run at the same time in subprocesses on
the CPU (the planner needs no GPU; CUDA_VISIBLE_DEVICES is emptied for them).

gpu24: a 24 GB card on a bigger one. `torch.cuda.set_per_process_memory_fraction` for 24 GiB,
then `dv motion learn --fit 24GiB --adapter-steps 3` and `dv subject learn --fit 24GiB` (docs/memory.md
plans Wan 14B to fit: parts load to host memory and each visits the GPU only while it works),
the same with the levers that plan finds given outright; then,
without the fraction, the motion step with everything resident (--gradient-checkpointing)
against the same step with the levers (--fp8 --offload-activations as well), seconds per step
and the planner's estimate of the copies' slowdown, and the same pair for the subject stage.
A failure is a result (rc, the error line), not an error of this script.

How a run is measured: the engine's events (StageStarted, StageFinished, StepDone) split it
into segments; at each boundary the peak so far is read (`max_memory_allocated`) and reset, so
each segment has its own peak, and each StepDone is timed after `torch.cuda.synchronize()`.
The segment before the first stage ("start") holds loading, photo encoding and placing the
denoiser; --random-weights builds each part in float32 on the GPU before casting it, which no
plan of loading counts, so the headline comparison is the stage after loading (every segment
from the first stage on that the plan has a phase for), with the per-segment figures and the
whole run's peak beside it.

One JSON line per comparison or run is appended to --results as soon as it is known, so a run
cut short keeps what finished; a summary object is printed on stdout at the end. Without CUDA
(a dry run on a CPU) the commands and plans run and are timed and the peaks are null, with
"skipped": "no CUDA".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

GiB = 2**30
DV = [sys.executable, "-c", "from dreamvideo_cli.cli import run; run()"]
TARGET = 0.10  # the planner within 10% of the measurement
INTERRUPTED = 130  # dv's exit code after Ctrl-C or SIGTERM
NO_CUDA = "no CUDA: torch.cuda.max_memory_allocated needs a CUDA device; the command ran for its plumbing only"
RANDOM_LOAD = (
    "--random-weights builds each part in float32 on the device, then casts it: the load segment is "
    "not what loading real weights takes, and not compared"
)

# The memory settings compared: name -> flags ({swap}: --swap's value). Compose trains
# nothing: it takes no checkpointing or activation offload.
CASES: dict[str, list[str]] = {
    "default": [],
    "checkpointing": ["--gradient-checkpointing"],
    "fp8": ["--fp8"],
    "offload": ["--offload-activations"],
    "swap": ["--blocks-to-swap", "{swap}"],
}
TRAINING_ONLY = {"checkpointing", "offload"}

# Which measured segment each planned phase falls in (plan/stages.py's phase names; the
# segments are named by the engine's events, "start" before the first one).
SEGMENT_OF = {
    "load": "start",
    "encode photos": "start",
    "encode prompt": "start",
    "encode clips": "encoding",
    "textual inversion": "embedding",
    "identity adapter": "identity",
    "motion adapter": "motion",
    "sampling step": "sampling",
    "decode": "decoding",
}


def segment_of(stage: str, phase: str) -> str:
    if phase == "place denoiser":  # motion places it after encoding, subject before its first stage
        return "after encoding" if stage == "motion" else "start"
    return SEGMENT_OF.get(phase, phase)


# --- what one run measured ----------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """stderr as it is, with its last lines kept (the `--fit` choice, the error line)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.kept = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.kept = (self.kept + text)[-4000:]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class Segments:
    """The peaks between the engine's events, and each step's seconds."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.name = "start"
        self.peaks: dict[str, int | None] = {}
        self.reserved: dict[str, int | None] = {}  # max_memory_reserved: what the caching allocator held
        self.steps: dict[str, list[float]] = {}
        self.last = time.perf_counter()

    def event(self, event: Any) -> None:
        from dreamvideo_cli.events import StageFinished, StageStarted, StepDone

        if isinstance(event, StageStarted):
            self.close()
            self.name = str(event.stage)
            self.last = time.perf_counter()
        elif isinstance(event, StageFinished):
            self.close()
            self.name = f"after {event.stage}"
        elif isinstance(event, StepDone):
            if self.cuda:
                import torch

                torch.cuda.synchronize()
            now = time.perf_counter()
            self.steps.setdefault(str(event.stage), []).append(round(now - self.last, 4))
            self.last = now

    def close(self) -> None:
        peak = reserved = None
        if self.cuda:
            import torch

            peak, reserved = int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
        for kept, value in ((self.peaks, peak), (self.reserved, reserved)):
            old = kept.get(self.name)
            kept[self.name] = value if old is None or value is None else max(old, value)


@dataclass
class Measured:
    argv: list[str]
    rc: int
    seconds: float
    peaks: dict[str, int | None]
    reserved: dict[str, int | None]
    steps: dict[str, list[float]]
    error: str | None
    stderr_tail: str
    left_allocated: int | None  # bytes still allocated after the command (and gc)
    output: Any = None

    @property
    def whole(self) -> int | None:
        values = [v for v in self.peaks.values() if v is not None]
        return max(values) if values else None

    def per_step(self) -> dict[str, float]:
        """Seconds per step of each stage: the mean of the steps after the first (the first
        warms up), or the only one."""
        out = {}
        for stage, times in self.steps.items():
            later = times[1:] or times
            out[stage] = round(sum(later) / len(later), 4)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "dv " + shlex.join(self.argv),
            "rc": self.rc,
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "peak": self.whole,
            "peak_gib": gib(self.whole),
            "segments": {
                k: {"peak": v, "peak_gib": gib(v), "reserved_gib": gib(self.reserved.get(k))}
                for k, v in self.peaks.items()
            },
            "step_seconds": self.steps,
            "seconds_per_step": self.per_step(),
            "left_allocated": self.left_allocated,
        }


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / GiB, 3)


def cuda_ready(device: str) -> bool:
    import torch

    return device.startswith("cuda") and torch.cuda.is_available()


def measure(argv: list[str], cuda: bool, fraction_bytes: int | None = None) -> Measured:
    """Run `dv ARGV` in this process and measure it (see the module's docstring)."""
    import torch

    from dreamvideo_cli.cli import _progress, main

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, fraction_bytes / total) if fraction_bytes else 1.0)
        torch.cuda.reset_peak_memory_stats()
    segments = Segments(cuda)
    original = _progress.ProgressRenderer.__call__

    def call(self: Any, event: Any) -> None:
        segments.event(event)
        original(self, event)

    stdout, stderr = io.StringIO(), _Tee(sys.stderr)
    error = None
    started = time.perf_counter()
    _progress.ProgressRenderer.__call__ = call  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(argv)
    except Exception as exc:  # what dv does not turn into one line (a bug): a result too
        rc, error = 1, f"{type(exc).__name__}: {exc}"[:1000]
    finally:
        _progress.ProgressRenderer.__call__ = original  # type: ignore[method-assign]
    seconds = time.perf_counter() - started
    segments.close()
    if error is None and rc:
        lines = stderr.kept.strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        error = (errors or lines or [f"exit code {rc}"])[-1]
    left = None
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0)
        left = int(torch.cuda.memory_allocated())
    try:
        output = json.loads(stdout.getvalue())
    except ValueError:
        output = None
    return Measured(
        argv, rc, seconds, segments.peaks, segments.reserved, segments.steps, error or None, stderr.kept[-600:], left,
        output,
    )  # fmt: skip


# --- plans, in subprocesses on the CPU ----------------------------------------------------------


class Plans:
    """`dv plan ... --json` in subprocesses (CUDA hidden, one thread each), started at once."""

    def __init__(self, jobs: int, timeout: float) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        self.timeout = timeout
        self.futures: dict[tuple[str, ...], Future[dict[str, Any]]] = {}

    def submit(self, args: list[str]) -> None:
        key = tuple(args)
        if key not in self.futures:
            self.futures[key] = self.pool.submit(self._plan, args)

    def get(self, args: list[str], wait: float) -> dict[str, Any]:
        self.submit(args)
        try:
            return self.futures[tuple(args)].result(timeout=wait)
        except TimeoutError:
            return {"error": f"the plan did not finish within {wait:.0f} s of the measurement"}

    def _plan(self, args: list[str]) -> dict[str, Any]:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [*DV, "plan", *args, "--json"], capture_output=True, text=True, timeout=self.timeout, env=env
            )
        except subprocess.TimeoutExpired:
            return {"error": f"dv plan took more than {self.timeout:.0f} s"}
        seconds = round(time.perf_counter() - started, 1)
        if proc.returncode:
            return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1], "seconds": seconds}
        return {**json.loads(proc.stdout), "wall_seconds": seconds}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def plan_command(args: list[str]) -> str:
    return "dv plan " + shlex.join([*args, "--json"])


# --- inputs and output -------------------------------------------------------------------------


def make_inputs(folder: Path, frames: int, fps: int) -> tuple[Path, Path]:
    """5 photos and one clip of `frames` frames at `fps`, 64x64 random pixels (as the planner
    makes them: the engine resizes them to the backbone's size)."""
    import numpy as np
    from PIL import Image

    from dreamvideo_cli import media

    rng = np.random.default_rng(0)
    photos, clips = folder / "photos", folder / "clips"
    photos.mkdir(parents=True, exist_ok=True)
    clips.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / f"photo{i}.png")
    media.write_video(clips / "clip.mp4", rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8), fps)
    return photos, clips


class Results:
    def __init__(self, path: Path | None, device: str) -> None:
        self.path = path
        self.lines: list[dict[str, Any]] = []
        self.context = {"device": device, "date": time.strftime("%Y-%m-%d"), **versions()}

    def emit(self, line: dict[str, Any]) -> None:
        line = {**line, **self.context}
        self.lines.append(line)
        text = json.dumps(line)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(text + "\n")
        print(text[:400], file=sys.stderr, flush=True)


def versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def device_name(device: str) -> str:
    import torch

    if cuda_ready(device):
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / GiB:.0f} GiB)"
    return f"{device} (no CUDA)"


def ratio(measured: int | None, predicted: int | None) -> float | None:
    return round(measured / predicted, 4) if measured is not None and predicted else None


def comparison(stage: str, plan: dict[str, Any], run: Measured, cuda: bool) -> dict[str, Any]:
    """The planned phases against the measured segments, and the stage after loading."""
    if "plan" not in plan:
        return {"predicted": None, "measured": run.whole if cuda else None, "plan_error": plan.get("error")}
    planned = plan["plan"]
    by_segment: dict[str, list[dict[str, Any]]] = {}
    for phase in planned["phases"]:
        by_segment.setdefault(segment_of(stage, phase["name"]), []).append(phase)
    names = list(run.peaks) + [s for s in by_segment if s not in run.peaks]
    rows: list[dict[str, Any]] = []
    for name in names:
        phases = by_segment.get(name, [])
        predicted = max((p["gpu"]["peak"] for p in phases), default=None)
        measured = run.peaks.get(name)
        rows.append({
            "segment": name, "planned_phases": [p["name"] for p in phases], "predicted": predicted,
            "measured": measured, "predicted_gib": gib(predicted), "measured_gib": gib(measured),
            "ratio": ratio(measured, predicted),
        })  # fmt: skip
    after = [r for r in rows if r["segment"] != "start" and r["predicted"] is not None]
    predicted = max((r["predicted"] for r in after), default=None)
    measured_values = [r["measured"] for r in after if r["measured"] is not None]
    measured = max(measured_values) if measured_values else None
    r = ratio(measured, predicted)
    start = next((row for row in rows if row["segment"] == "start"), None)
    out: dict[str, Any] = {
        "predicted": predicted,
        "measured": measured,
        "predicted_gib": gib(predicted),
        "measured_gib": gib(measured),
        "ratio": r,
        "within_10pct": None if r is None or run.rc else abs(r - 1) <= TARGET,  # a failed run: not judged
        "basis": "the stage after loading: the largest of the segments from the first stage on that have a planned phase",
        "segments": rows,
        "load": {**(start or {}), "note": RANDOM_LOAD},
        "whole_run": {
            "predicted": planned["gpu_peak"],
            "measured": run.whole,
            "ratio": ratio(run.whole, planned["gpu_peak"]),
        },
        "host_predicted": planned["host_peak"],
        "peak_where": next((p["where"] for p in planned["phases"] if p["gpu"]["peak"] == planned["gpu_peak"]), ""),
        "plan_seconds": plan.get("wall_seconds"),
    }
    if not cuda:
        out["skipped"] = NO_CUDA
    return out


# --- compare -----------------------------------------------------------------------------------


@dataclass
class Job:
    stage: str
    case: str
    flags: list[str]
    plan_args: list[str]
    argv: list[str] = field(default_factory=list)


def jobs(args: argparse.Namespace) -> list[Job]:
    """Defaults of every stage first, then each lever on motion, subject, compose."""
    cases = sorted(args.cases.split(","), key=lambda c: c != "default")  # default first, the rest as given
    stages = args.stages.split(",")
    out = []
    for case in cases:
        order = stages if case == "default" else [s for s in ("motion", "subject", "compose") if s in stages]
        for stage in order:
            if stage == "compose" and case in TRAINING_ONLY:
                continue
            flags = [f.format(swap=args.swap) for f in CASES[case]]
            plan_args = [stage, "--backbone", args.backbone, *flags]
            if stage == "motion" and args.frames:
                plan_args += ["--frames", str(args.frames)]
            if stage == "compose" and args.compose_frames:
                plan_args += ["--frames", str(args.compose_frames)]
            out.append(Job(stage, case, flags, plan_args))
    return out


def command(
    job: Job, args: argparse.Namespace, photos: Path, clips: Path, tag: str, names: dict[str, str]
) -> list[str]:
    common = ["--backbone", args.backbone, "--random-weights", "--device", args.device, "--seed", "0"]
    name = f"{tag}-{args.backbone}-{job.case}-{job.stage}"
    if job.stage == "subject":
        argv = ["subject", "learn", str(photos), "--name", name, "--init-word", "dog"]
        argv += ["--embedding-steps", str(args.steps)]
        argv += ["--adapter-steps", str(args.steps), "--save-every", "0", *common]
    elif job.stage == "motion":
        argv = [
            "motion",
            "learn",
            str(clips),
            "--name",
            name,
            "--phrase",
            "walking",
            "--adapter-steps",
            str(args.steps),
        ]
        argv += ["--save-every", "0"]
        argv += [*common, *(["--frames", str(args.frames)] if args.frames else [])]
    else:
        argv = ["compose", names["subject"], names["motion"], "a dog walking", "--sample-steps", str(args.steps)]
        argv += ["--device", args.device, "--seed", "0", "-o", str(photos.parent / f"{name}.mp4")]
        argv += ["--frames", str(args.compose_frames)] if args.compose_frames else []
    return [*argv, *job.flags, "--json"]


def run_compare(args: argparse.Namespace, results: Results, plans: Plans) -> dict[str, Any]:
    from dreamvideo_cli.plugins import get_backbone

    cls = get_backbone(args.backbone)
    cuda = cuda_ready(args.device)
    todo = jobs(args)
    for job in todo:
        plans.submit(job.plan_args)
    tag = args.tag or time.strftime("pvm%H%M%S")
    names: dict[str, str] = {}
    done = within = 0
    with tempfile.TemporaryDirectory(prefix="dv-pvm-") as scratch:
        photos, clips = make_inputs(Path(scratch), args.frames or cls.motion_frames, cls.motion_fps)
        for job in todo:
            if job.stage == "compose" and len(names) < 2:
                results.emit({"check": "plan-vs-measured", "backbone": args.backbone, "stage": job.stage,
                              "case": job.case, "skipped": "no subject and motion learnt with default settings"})  # fmt: skip
                continue
            argv = command(job, args, photos, clips, tag, names)
            run = measure(argv, cuda)
            if run.rc == 0 and job.case == "default" and job.stage in ("subject", "motion"):
                names[job.stage] = argv[argv.index("--name") + 1]
            plan = plans.get(job.plan_args, args.plan_wait)
            line = {
                "check": "plan-vs-measured", "backbone": args.backbone, "stage": job.stage, "case": job.case,
                "flags": job.flags, "command": "dv " + shlex.join(argv), "plan_command": plan_command(job.plan_args),
                **comparison(job.stage, plan, run, cuda), "run": run.as_dict(),
            }  # fmt: skip
            results.emit(line)
            done += 1
            within += bool(line.get("within_10pct"))
            if run.rc == INTERRUPTED:
                break
    return {"compared": done, "within_10pct": within, "of": len(todo)}


# --- gpu24 -------------------------------------------------------------------------------------


def run_gpu24(args: argparse.Namespace, results: Results, plans: Plans) -> dict[str, Any]:
    """A `--fraction-gib` card on this one (see the module's docstring)."""
    from dreamvideo_cli.plugins import get_backbone

    cls = get_backbone(args.backbone)
    cuda = cuda_ready(args.device)
    fraction = int(args.fraction_gib * GiB)
    budget = f"{args.fraction_gib:g}GiB"
    frames = ["--frames", str(args.frames)] if args.frames else []
    resident = ["--gradient-checkpointing"]
    levers = [*resident, "--fp8", "--offload-activations"]
    subject_levers = [*levers, "--blocks-to-swap", str(args.swap)] if args.swap else levers
    steps = str(args.steps)
    # Plans: what the resident and lever runs should take, with a budget as large as the card
    # so that the fit's slowdown estimate is given; and the plan that fits the fraction.
    big = ["--gpu-memory", f"{args.card_gib:g}GiB"]
    plan_of = {
        "motion-resident": ["motion", "--backbone", args.backbone, *frames, *resident, *big],
        "motion-levers": ["motion", "--backbone", args.backbone, *frames, *levers, *big],
        "subject-resident": ["subject", "--backbone", args.backbone, *resident, *big],
        "subject-levers": ["subject", "--backbone", args.backbone, *subject_levers, *big],
        "motion-fit": ["motion", "--backbone", args.backbone, *frames, "--gpu-memory", budget],
        "subject-fit": ["subject", "--backbone", args.backbone, "--gpu-memory", budget],
    }  # fmt: skip
    for plan_args in plan_of.values():
        plans.submit(plan_args)
    tag = args.tag or time.strftime("g24%H%M%S")
    base = ["--backbone", args.backbone, "--random-weights", "--device", args.device, "--seed", "0"]
    base += ["--save-every", "0"]
    measured: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory(prefix="dv-g24-") as scratch:
        photos, clips = make_inputs(Path(scratch), args.frames or cls.motion_frames, cls.motion_fps)

        def motion(label: str, extra: list[str]) -> list[str]:
            return ["motion", "learn", str(clips), "--name", f"{tag}-{label}", "--phrase", "walking", "--adapter-steps",
                    steps, *frames, *base, *extra, "--json"]  # fmt: skip

        def subject(label: str, extra: list[str]) -> list[str]:
            return ["subject", "learn", str(photos), "--name", f"{tag}-{label}", "--init-word", "dog",
                    "--embedding-steps", steps, "--adapter-steps", steps, *base, *extra, "--json"]  # fmt: skip

        runs: list[tuple[str, list[str], int | None, str | None]] = [
            ("motion-fit", motion("motion-fit", ["--fit", budget]), fraction, None),
            ("subject-fit", subject("subject-fit", ["--fit", budget]), fraction, None),
            ("motion-resident", motion("motion-resident", resident), None, "motion-resident"),
            ("motion-levers", motion("motion-levers", levers), None, "motion-levers"),
            ("subject-resident", subject("subject-resident", resident), None, "subject-resident"),
            ("subject-levers", subject("subject-levers", subject_levers), None, "subject-levers"),
        ]
        for label, argv, limit, plan_key in runs:
            run = measure(argv, cuda, limit)
            measured[label] = run
            stage = argv[0]
            line: dict[str, Any] = {"check": "gpu24", "run_name": label, "backbone": args.backbone, "stage": stage}
            line["memory_fraction_gib"] = args.fraction_gib if limit else None
            line["ran"] = run.rc == 0
            if limit:
                line["peak_within_fraction"] = None if run.whole is None else run.whole <= limit
                line["fit_line"] = next(
                    (s for s in run.stderr_tail.splitlines() if s.startswith(("--fit", "error: nothing fits"))), None
                )
            if plan_key is not None:
                plan = plans.get(plan_of[plan_key], args.plan_wait)
                line["plan_command"] = plan_command(plan_of[plan_key])
                line |= comparison(stage, plan, run, cuda)
            line["run"] = run.as_dict()
            if not cuda:
                line["skipped"] = NO_CUDA
            results.emit(line)
            if run.rc == INTERRUPTED:
                break
            if label in ("motion-levers", "subject-levers"):
                results.emit(slowdown_line(label, measured, plans, plan_of))
    return {"runs": len(measured), "ran": sum(m.rc == 0 for m in measured.values())}


def slowdown_line(
    label: str, measured: dict[str, Measured], plans: Plans, plan_of: dict[str, list[str]]
) -> dict[str, Any]:
    """Seconds per step with the levers over the same step with everything resident, against
    the planner's estimate of what the levers' copies cost."""
    stage = label.split("-")[0]
    fast, slow = measured.get(f"{stage}-resident"), measured.get(label)
    line: dict[str, Any] = {"check": "gpu24-slowdown", "stage": stage}
    if fast is None or slow is None or fast.rc or slow.rc:
        return {**line, "skipped": "the resident run or the lever run did not finish"}
    keys = ["motion"] if stage == "motion" else ["embedding", "identity"]
    per_stage = {}
    for key in keys:
        a, b = fast.per_step().get(key), slow.per_step().get(key)
        per_stage[key] = {"resident_s": a, "levers_s": b, "slowdown": round(b / a, 3) if a and b else None}
    plan = plans.get(plan_of[label], 1)
    estimate = (plan.get("fit") or {}).get("slowdown") if "fit" in plan else None
    return {
        **line,
        "resident_command": "dv " + shlex.join(fast.argv),
        "levers_command": "dv " + shlex.join(slow.argv),
        "measured": per_stage,
        "planner_estimate": estimate,
        "note": "the estimate counts only the host-GPU copies (PCIe 4.0 x16 at 25 GB/s against 50% of an H100's "
        "bf16 peak); fp8's conversion inside each forward is not in it",
    }


# --- main --------------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (timeout's) between commands stops the script; during one, dv turns it into an
    interrupt (exit 130), after which the script stops too."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: Callable[[int, FrameType | None], Any] | int | None = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("compare", "gpu24"):
        p = sub.add_parser(name)
        p.add_argument("--backbone", required=True)
        p.add_argument("--device", default="cuda")
        p.add_argument("--frames", type=int, default=None, help="motion frames (default: the backbone's)")
        p.add_argument("--results", type=Path, default=None, help="append JSON lines here (and to stderr)")
        p.add_argument("--plan-jobs", type=int, default=max(1, min(6, (os.cpu_count() or 2) - 2)))
        p.add_argument("--plan-timeout", type=float, default=180)
        p.add_argument("--plan-wait", type=float, default=120, help="seconds to wait for a plan after its run")
        p.add_argument("--tag", default=None, help="prefix of the registry names (default: from the time)")
        if name == "compare":
            p.add_argument("--cases", default="default,checkpointing,fp8,offload,swap")
            p.add_argument("--stages", default="subject,motion,compose")
            p.add_argument("--swap", type=int, default=4, help="N of --blocks-to-swap")
            p.add_argument("--steps", type=int, default=2)
            p.add_argument("--compose-frames", type=int, default=None)
        else:
            p.add_argument("--fraction-gib", type=float, default=24)
            p.add_argument("--card-gib", type=float, default=80, help="the budget the resident runs are planned for")
            p.add_argument("--swap", type=int, default=25, help="blocks the subject's lever run swaps (0: none)")
            p.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    results = Results(args.results, device_name(args.device))
    plans = Plans(args.plan_jobs, args.plan_timeout)
    summary: dict[str, Any] = {"mode": args.mode, "backbone": args.backbone, "device": results.context["device"]}
    try:
        with stop_on_sigterm():
            summary |= run_compare(args, results, plans) if args.mode == "compare" else run_gpu24(args, results, plans)
    except KeyboardInterrupt:
        summary["interrupted"] = True
    finally:
        plans.close()
    summary["lines"] = len(results.lines)
    print(json.dumps(summary))
    return INTERRUPTED if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
