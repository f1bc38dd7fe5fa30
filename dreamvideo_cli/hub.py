"""Where backbone weights come from: a local folder, the Hugging Face cache, or the Hub.

Shared by every backbone plugin whose weights live in Hugging Face repositories. The rules,
in order:
1. the cache first, without any network access (read straight from its folder layout);
2. a download only when `HF_HUB_OFFLINE` is not set, with huggingface_hub's own progress bars;
3. anything that goes wrong on the way (no network, a gated repo, a missing file) becomes one
   `MissingWeightsError` that names what is missing and the `hf download` command that fetches it.

Only this module talks to huggingface_hub, and it imports it lazily: registering a plugin
must stay cheap. The environment is read at call time rather than through huggingface_hub's
constants, which are frozen when it is first imported (tests and notebooks set HF_HOME later).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from dreamvideo_cli.errors import MissingWeightsError

__all__ = [
    "FP16_PICKLE",
    "FP16_SAFETENSORS",
    "OPEN_CLIP_CONFIG",
    "OPEN_CLIP_WEIGHTS",
    "PICKLE",
    "SAFETENSORS",
    "HubSource",
    "Layout",
    "Library",
    "OpenCLIPLayout",
    "PipelineLayout",
    "Plan",
    "WeightsFormat",
    "find_weights",
    "folder_digest",
    "formats_in_order",
    "has_tokenizer",
    "hub_cache",
    "list_files",
    "local_identity",
    "missing_weights_error",
    "offline",
    "repo_folder",
    "resolve",
    "snapshot_identity",
]

Library = Literal["diffusers", "transformers"]

_TRUE = {"1", "on", "yes", "true"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Bytes read from the end of each weight file for a local folder's digest: enough to tell
# two fine-tunes of the same architecture apart without hashing gigabytes.
_TAIL_BYTES = 1 << 20


def offline() -> bool:
    """True when huggingface_hub must not touch the network (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub would compute it now."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(os.path.expanduser(env[var])))
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HOME"]))) / "hub"
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def repo_folder(repo_id: str) -> Path:
    """The cache folder of a model repository (`models--org--name`)."""
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def snapshot_identity(folder: Path) -> tuple[str, str] | None:
    """(hub id, commit) when `folder` is a snapshot inside a Hugging Face cache, else None."""
    folder = folder.resolve()
    repo = folder.parent.parent.name
    if folder.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo.removeprefix("models--").replace("--", "/"), folder.name


# --- what a folder must hold -----------------------------------------------------------------


@dataclass(frozen=True)
class WeightsFormat:
    """How one component's weights are stored: a variant (`fp16`) and safetensors or pickle."""

    variant: str | None
    safetensors: bool

    def filename(self, library: Library) -> str:
        if library == "diffusers":
            stem, ext = "diffusion_pytorch_model", ("safetensors" if self.safetensors else "bin")
        else:
            stem, ext = ("model", "safetensors") if self.safetensors else ("pytorch_model", "bin")
        return f"{stem}.{self.variant}.{ext}" if self.variant else f"{stem}.{ext}"

    def index_filename(self, library: Library) -> str:
        """The index of a sharded checkpoint. diffusers and transformers put the variant just
        before `.json` (`model.safetensors.index.fp16.json`), and in the shards' names before
        the shard number (`model.fp16-00001-of-00002.safetensors`)."""
        index = f"{WeightsFormat(None, self.safetensors).filename(library)}.index.json"
        return f"{index.removesuffix('.json')}.{self.variant}.json" if self.variant else index

    def patterns(self, folder: str, library: Library) -> list[str]:
        """The file and, for sharded checkpoints, its index and shards."""
        name = self.filename(library)
        stem, ext = name.rsplit(".", 1)
        return [f"{folder}/{name}", f"{folder}/{self.index_filename(library)}", f"{folder}/{stem}-*-of-*.{ext}"]


FP16_SAFETENSORS = WeightsFormat("fp16", safetensors=True)
SAFETENSORS = WeightsFormat(None, safetensors=True)
FP16_PICKLE = WeightsFormat("fp16", safetensors=False)
PICKLE = WeightsFormat(None, safetensors=False)


def formats_in_order(preferred: WeightsFormat) -> list[WeightsFormat]:
    """`preferred` first, then safetensors before pickles, half precision before full."""
    others = [f for f in (FP16_SAFETENSORS, SAFETENSORS, FP16_PICKLE, PICKLE) if f != preferred]
    return [preferred, *others]


def find_weights(files: set[str], folder: str, library: Library, preferred: WeightsFormat) -> WeightsFormat | None:
    """The best format of `folder`'s weights among `files` (paths relative to the repo root)."""
    for fmt in formats_in_order(preferred):
        if f"{folder}/{fmt.filename(library)}" in files or f"{folder}/{fmt.index_filename(library)}" in files:
            return fmt
    return None


@dataclass(frozen=True)
class Plan:
    """What to download from a repository and what it lacks."""

    patterns: list[str]
    missing: list[str]


class Layout(Protocol):
    """The files a loader needs from one repository or folder."""

    def plan(self, files: set[str]) -> Plan: ...

    def expected_patterns(self) -> list[str]: ...


def has_tokenizer(files: set[str], folder: str = "tokenizer") -> bool:
    """A fast tokenizer (tokenizer.json) or a BPE vocabulary (vocab.json + merges.txt)."""
    return f"{folder}/tokenizer.json" in files or {f"{folder}/vocab.json", f"{folder}/merges.txt"} <= files


@dataclass(frozen=True)
class PipelineLayout:
    """A diffusers pipeline folder: model_index.json, scheduler/, tokenizer/, and one sub-folder
    per model, each with its config.json and weights.

    `models` maps those sub-folders to the library that saved them, e.g. {"unet": "diffusers",
    "vae": "diffusers", "text_encoder": "transformers"}: the two name their weight files
    differently. `sharded` adds the index and shard patterns to the `hf download` command, for
    repositories whose big models are split into shards (the command cannot list the repository
    first, unlike `HubSource.download`, so it has to name both forms)."""

    preferred: WeightsFormat
    models: Mapping[str, Library]
    sharded: bool = False

    def plan(self, files: set[str]) -> Plan:
        patterns = ["model_index.json", "scheduler/*", "tokenizer/*"]
        missing: list[str] = []
        for folder, library in self.models.items():
            fmt = find_weights(files, folder, library, self.preferred)
            if f"{folder}/config.json" not in files or fmt is None:
                missing.append(folder)
            patterns.append(f"{folder}/config.json")
            patterns += (fmt or self.preferred).patterns(folder, library)
        if not has_tokenizer(files):
            missing.append("tokenizer")
        return Plan(patterns, missing)

    def expected_patterns(self) -> list[str]:
        patterns = ["model_index.json", "scheduler/*", "tokenizer/*", "*/config.json"]
        for folder, library in self.models.items():
            if self.sharded:
                patterns += self.preferred.patterns(folder, library)
            else:
                patterns.append(f"{folder}/{self.preferred.filename(library)}")
        return patterns


# How OpenCLIP hub repositories (e.g. laion/CLIP-ViT-H-14-laion2B-s32B-b79K) hold a model;
# `dreamvideo_cli.appearance` loads them. The names are open_clip's own (HF_SAFE_WEIGHTS_NAME,
# HF_WEIGHTS_NAME); a repository may hold either or both (laion's older ones certainly the
# pickle), and the loader takes the first it finds, in this order.
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class OpenCLIPLayout:
    """An OpenCLIP hub repository: open_clip_config.json and one checkpoint.

    A download lists the repository first and fetches one checkpoint; the `hf download`
    command cannot, so it includes every name the loader accepts (whichever is there)."""

    def plan(self, files: set[str]) -> Plan:
        missing = [] if OPEN_CLIP_CONFIG in files else [OPEN_CLIP_CONFIG]
        weights = next((w for w in OPEN_CLIP_WEIGHTS if w in files), None)
        if weights is None:
            missing.append(OPEN_CLIP_WEIGHTS[0])
        return Plan([OPEN_CLIP_CONFIG, weights or OPEN_CLIP_WEIGHTS[0]], missing)

    def expected_patterns(self) -> list[str]:
        return [OPEN_CLIP_CONFIG, *OPEN_CLIP_WEIGHTS]


def list_files(root: Path, depth: int = 2) -> set[str]:
    """Files under `root` (at most `depth` levels), as relative posix paths. Broken links
    (a cache entry whose blob is gone) do not count."""
    found: set[str] = set()

    def walk(folder: Path, level: int) -> None:
        for entry in folder.iterdir():
            if entry.is_dir() and level < depth:
                walk(entry, level + 1)
            elif entry.is_file():
                found.add(entry.relative_to(root).as_posix())

    if root.is_dir():
        walk(root, 1)
    return found


# --- resolving a repository to a folder on this machine -----------------------------------------


@dataclass(frozen=True)
class HubSource:
    """One hub repository a backbone needs, and how it is described to the user.

    `aliases` are other ids of the same repository (an organisation renamed on the Hub keeps
    redirecting its old id, and caches filled through it sit under `models--<old>`). The cache
    is searched under `repo_id` first, then each alias; downloads and the `hf download`
    command always use `repo_id`."""

    repo_id: str
    revision: str
    layout: Layout
    what: str  # e.g. "ModelScopeT2V weights"
    aliases: tuple[str, ...] = ()

    def command(self) -> str:
        includes = " ".join(f"--include '{p}'" for p in self.layout.expected_patterns())
        revision = "" if self.revision == "main" else f" --revision {self.revision}"
        return f"hf download {self.repo_id}{revision} {includes}"

    def _snapshot(self, repo_id: str) -> Path | None:
        """The cached snapshot of `revision` under `repo_id`, or None; read straight from the
        cache layout (refs/<revision> -> snapshots/<commit>), so it never touches the network
        and does not mind the files of the repository we chose not to download."""
        repo = repo_folder(repo_id)
        if _COMMIT.fullmatch(self.revision):
            commit = self.revision
        else:
            ref = repo / "refs" / self.revision
            if not ref.is_file():
                return None
            commit = ref.read_text().strip()
        folder = repo / "snapshots" / commit
        return folder if commit and folder.is_dir() else None

    def cached(self) -> tuple[str, Path] | None:
        """(the id it was found under, the snapshot folder) of the cached copy, or None: the
        first complete snapshot among `repo_id` and its aliases, else the first there is (so
        that what it lacks can be named)."""
        found = [(repo_id, folder) for repo_id in (self.repo_id, *self.aliases) if (folder := self._snapshot(repo_id))]
        complete = next(((r, f) for r, f in found if not self.missing_in(f)), None)
        return complete or (found[0] if found else None)

    def cached_folder(self) -> Path | None:
        """The snapshot folder of `cached()`, or None."""
        cached = self.cached()
        return cached[1] if cached is not None else None

    def missing_in(self, folder: Path | None) -> list[str]:
        if folder is None:
            return ["everything"]
        return self.layout.plan(list_files(folder)).missing

    def cached_identity(self) -> tuple[str, str] | None:
        """(hub id, commit) of the cached copy, or None: what a fingerprint records."""
        cached = self.cached()
        return (cached[0], cached[1].name) if cached is not None else None

    def cached_revision(self) -> str | None:
        folder = self.cached_folder()
        return folder.name if folder is not None else None

    def remote_plan(self) -> Plan:
        """What to download, from the repository's file list on the Hub (no download); every
        failure is a MissingWeightsError."""
        from huggingface_hub import HfApi

        try:
            files = set(HfApi().list_repo_files(self.repo_id, revision=self.revision))
        except Exception as exc:  # a gated or unknown repo, a lost connection
            raise self._download_error(exc) from exc
        plan = self.layout.plan(files)
        if plan.missing:
            raise MissingWeightsError(
                f"{self.repo_id} (revision {self.revision}) on the Hugging Face Hub has no {', '.join(plan.missing)}",
                "pass --backbone-path DIR with a diffusers folder of the model",
            )
        return plan

    def _download_error(self, exc: Exception) -> MissingWeightsError:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return MissingWeightsError(
            f"could not download {self.what} ({self.repo_id}): {reason}",
            f"fetch them with `{self.command()}`, or pass --backbone-path DIR",
        )

    def download(self, plan: Plan | None = None) -> Path:
        """Fetch what the layout needs (the cache is reused); every failure is a MissingWeightsError."""
        from huggingface_hub import snapshot_download

        try:
            plan = plan or self.remote_plan()
            folder = Path(
                snapshot_download(
                    self.repo_id, revision=self.revision, cache_dir=hub_cache(), allow_patterns=plan.patterns
                )
            )
        except MissingWeightsError:
            raise
        except Exception as exc:  # no network, a gated repo, a full disk: say what and how to fix it
            raise self._download_error(exc) from exc
        missing = self.missing_in(folder)
        if missing:
            raise MissingWeightsError(
                f"the download of {self.what} ({self.repo_id}) is incomplete: no {', '.join(missing)}",
                f"fetch them with `{self.command()}`",
            )
        return folder


def missing_weights_error(
    sources: Iterable[tuple[HubSource, list[str]]], alternative: str = "pass --backbone-path DIR", why: str = ""
) -> MissingWeightsError:
    """One line naming every missing repository (and which parts) and the commands that fetch
    them; `why` says why they cannot be downloaded now (default: HF_HUB_OFFLINE, if set)."""
    sources = list(sources)
    parts = []
    for source, missing in sources:
        detail = "" if missing == ["everything"] else f": no {', '.join(missing)}"
        parts.append(f"{source.what} ({source.repo_id}{detail})")
    verb = "is" if len(parts) == 1 else "are"
    why = why or (" and HF_HUB_OFFLINE is set" if offline() else "")
    message = f"{' and '.join(parts)} {verb} not in the Hugging Face cache {hub_cache()}{why}"
    commands = " && ".join(source.command() for source, _ in sources)
    return MissingWeightsError(message, f"fetch with `{commands}`, or {alternative}")


def resolve(sources: list[HubSource], alternative: str = "pass --backbone-path DIR") -> list[Path]:
    """A local folder for each source: from the cache, else downloaded (unless offline).

    Every source is checked before anything is downloaded, so an offline machine hears about
    all of them in one line."""
    folders = [source.cached_folder() for source in sources]
    absent = [(s, s.missing_in(f)) for s, f in zip(sources, folders, strict=True)]
    absent = [(s, missing) for s, missing in absent if missing]
    if absent and offline():
        raise missing_weights_error(absent, alternative)
    plans = _remote_plans([source for source, _ in absent], alternative)
    resolved: list[Path] = []
    for source, folder in zip(sources, folders, strict=True):
        if folder is None or source.missing_in(folder):
            folder = source.download(plans.get(source.repo_id))
        resolved.append(folder)
    return resolved


HUB_TIMEOUT_S = 15.0  # how long to wait for the Hub's file lists before saying it is unreachable


def _remote_plans(sources: list[HubSource], alternative: str) -> dict[str, Plan]:
    """Every repository's file list, before any download: one that cannot be fetched is said
    now, with the others, not after the first has downloaded for an hour. A Hub that does not
    answer within DV_HUB_TIMEOUT seconds (default 15) is one line naming everything missing,
    not huggingface_hub's retries and their log lines."""
    import logging
    import threading

    if not sources:
        return {}
    try:
        timeout = float(os.environ.get("DV_HUB_TIMEOUT", HUB_TIMEOUT_S))
    except ValueError:
        timeout = HUB_TIMEOUT_S
    found: dict[str, Plan | MissingWeightsError] = {}

    def ask() -> None:
        for source in sources:
            try:
                found[source.repo_id] = source.remote_plan()
            except MissingWeightsError as exc:
                found[source.repo_id] = exc

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # "Retrying in 1s [Retry 1/5]": we say what happened, once
    try:
        asking = threading.Thread(target=ask, name="dv-hub-file-lists", daemon=True)
        asking.start()
        asking.join(timeout)
    finally:
        hub_log.setLevel(level)
    if asking.is_alive():
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        why = f" and the Hugging Face Hub ({endpoint}) did not answer within {timeout:g} s"
        raise missing_weights_error([(s, s.missing_in(s.cached_folder())) for s in sources], alternative, why)
    failures = [result for result in found.values() if isinstance(result, MissingWeightsError)]
    if failures:
        message = "; ".join(exc.message for exc in failures)
        hint = "; ".join(dict.fromkeys(exc.hint for exc in failures if exc.hint))
        raise MissingWeightsError(message, hint or None)
    return {repo_id: plan for repo_id, plan in found.items() if isinstance(plan, Plan)}


# --- local folders -------------------------------------------------------------------------------

_TEXT_SUFFIXES = (".json", ".txt", ".model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def folder_digest(root: Path, parts: Iterable[str]) -> str:
    """A digest of a local model folder that is cheap to compute and survives copying.

    It covers the configs and tokenizer files in full, and each weight file's name, size and
    last megabyte: two folders agree only if they hold the same architecture and almost
    surely the same weights. Files in sub-folders other than `parts` are ignored, so notes
    or outputs kept beside the model do not change its identity."""
    parts = set(parts)
    digest = hashlib.sha256()
    for rel in sorted(list_files(root)):
        top = rel.split("/", 1)[0]
        if "/" in rel and top not in parts:
            continue
        path = root / rel
        if rel.endswith(_TEXT_SUFFIXES):
            digest.update(f"{rel}\0".encode())
            digest.update(path.read_bytes())
        elif rel.endswith(_WEIGHT_SUFFIXES):
            size = path.stat().st_size
            digest.update(f"{rel}\0{size}\0".encode())
            with open(path, "rb") as f:
                f.seek(max(0, size - _TAIL_BYTES))
                digest.update(f.read())
    return digest.hexdigest()


def local_identity(root: Path, parts: Iterable[str]) -> tuple[str, str]:
    """(model id, revision) naming a local model folder: its hub id and commit when it is a
    snapshot folder of a Hugging Face cache, else "local" and a digest of its content (never
    its place, so a copied folder keeps its name)."""
    snapshot = snapshot_identity(root)
    if snapshot is not None:
        return snapshot
    return "local", f"local-sha256:{folder_digest(root, parts)[:12]}"
