"""Registry commands: list, show, rm, tag, export, import, verify, prune, du."""

from __future__ import annotations

import enum
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import info, iso_utc, out, print_json

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from dreamvideo_cli.runs import RunsUsage
    from dv_registry import Manifest, PruneReport, Registry, Usage

# rich and dv_registry (pydantic) are imported inside the commands so that `dv --help` stays fast.

JSON = typer.Option(False, "--json", help="Print JSON on stdout.")
PANEL = "Registry"


class KindChoice(enum.StrEnum):
    subject = "subject"
    motion = "motion"


def install(app: typer.Typer) -> None:
    app.command("list", cls=GroupedCommand, rich_help_panel=PANEL)(list_command)
    app.command("show", cls=GroupedCommand, rich_help_panel=PANEL)(show_command)
    app.command("rm", cls=GroupedCommand, rich_help_panel=PANEL)(rm_command)
    app.command("tag", cls=GroupedCommand, rich_help_panel=PANEL)(tag_command)
    app.command("export", cls=GroupedCommand, rich_help_panel=PANEL)(export_command)
    app.command("import", cls=GroupedCommand, rich_help_panel=PANEL)(import_command)
    app.command("verify", cls=GroupedCommand, rich_help_panel=PANEL)(verify_command)
    app.command("prune", cls=GroupedCommand, rich_help_panel=PANEL)(prune_command)
    app.command("du", cls=GroupedCommand, rich_help_panel=PANEL)(du_command)


def _registry() -> Registry:
    from dv_registry import Registry

    return Registry()


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _print_table(table: Table) -> None:
    # Piped, `out` neither cuts a name or a path to fit 80 columns nor pads lines.
    out.print(table)


def _text(value: object) -> Text:
    from rich.text import Text

    # Text, not str: names, descriptions and paths may contain [brackets] that rich would parse.
    return Text(str(value))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


_VERSION_TAG = re.compile(r"v([1-9][0-9]*)")  # the tags `add_version` hands out
_DIGITS = re.compile(r"([0-9]+)")


def tag_order(tag: str) -> tuple[int, list[str | int], str]:
    """latest, then v1, v2, ..., then every other tag in natural order: `step50` before
    `step100`, `v1-step500` before `v1-step1000`."""
    if tag == "latest":
        return (0, [], tag)
    parts: list[str | int] = [int(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(tag))]
    return (1 if _VERSION_TAG.fullmatch(tag) else 2, parts, tag)


def _in_order(manifests: list[Manifest]) -> list[Manifest]:
    return sorted(manifests, key=lambda m: (m.name, tag_order(m.tag), m.kind))


def _created(manifest: Manifest) -> str:
    return manifest.created.astimezone().strftime("%Y-%m-%d %H:%M")


def _backbone_label(manifest: Manifest) -> str:
    fingerprint = manifest.backbone
    label = str(fingerprint.get("backbone") or fingerprint.get("model_id") or "?")
    if fingerprint.get("random_weights"):
        label += " (random weights)"
    return label


def summary(manifest: Manifest) -> dict[str, Any]:
    """One row of `dv list --json` (and of the other commands' JSON lists)."""
    return {
        "ref": manifest.ref,
        "kind": manifest.kind,
        "name": manifest.name,
        "tag": manifest.tag,
        "digest": manifest.digest,
        "created": iso_utc(manifest.created),
        "size": manifest.size,
        "backbone": manifest.backbone,
        "description": manifest.description,
    }


def _print_manifest_rows(manifests: list[Manifest]) -> None:
    table = _table("name", "kind", "digest", "size", "created", "backbone", "description")
    for manifest in manifests:
        table.add_row(
            _text(manifest.ref),
            manifest.kind,
            manifest.short_digest,
            human_size(manifest.size),
            _created(manifest),
            _text(_backbone_label(manifest)),
            _text(manifest.description),
        )
    _print_table(table)


# Intermediate checkpoints kept while learning (`--save-every`): `step500`, `v1-step500`.
_CHECKPOINT_TAG = re.compile(r"(v\d+-)?step\d+")


def list_command(
    names: list[str] = typer.Argument(None, metavar="[NAME]...", help="Only these names (default: every name)."),
    kind: KindChoice | None = typer.Option(None, "--kind", help="Only subjects or only motions."),
    all_tags: bool = typer.Option(
        False, "--all", "-a", help="Also the intermediate checkpoints (tags stepK, vN-stepK) learning kept."
    ),
    json: bool = JSON,
) -> None:
    """List subjects and motions, one row per version and tag; checkpoints with --all."""
    manifests = _in_order(_registry().list(kind.value if kind is not None else None))
    if names:
        manifests = [m for m in manifests if m.name in names]
    hidden = 0 if all_tags else sum(bool(_CHECKPOINT_TAG.fullmatch(m.tag)) for m in manifests)
    if hidden:
        manifests = [m for m in manifests if not _CHECKPOINT_TAG.fullmatch(m.tag)]
    if json:
        print_json([summary(m) for m in manifests])
    elif not manifests and not hidden:
        what = f"{kind.value}s" if kind is not None else "subjects or motions"
        if names:
            info(f"no {what} named {', '.join(names)}; `dv list` shows every name")
        else:
            info(f"no {what} yet; learn one with `dv subject learn` or `dv motion learn`")
        return
    else:
        _print_manifest_rows(manifests)
    if hidden and not json:
        info(f"{hidden} checkpoint tag{'' if hidden == 1 else 's'} not shown (`dv list --all` lists them)")


def show_command(
    ref: str = typer.Argument(..., help="name, name:tag or name@sha256:<prefix>."),
    json: bool = JSON,
) -> None:
    """Show everything recorded about one subject or motion."""
    registry = _registry()
    manifest = registry.resolve(ref)
    same_as = sorted((tag for tag in registry.tags_for(manifest) if tag != manifest.tag), key=tag_order)
    checkpoints = _checkpoints(registry, manifest, same_as)
    if json:
        print_json(
            {"ref": manifest.ref, "digest": manifest.digest, "same_as": same_as, "checkpoints": checkpoints}
            | manifest.model_dump(mode="json")
        )
        return
    from rich.text import Text

    header = Text()
    header.append(manifest.ref, style="bold")
    header.append(f"  {manifest.kind}  {manifest.digest}")
    if same_as:
        header.append("  (same as " + ", ".join(same_as) + ")")
    out.print(header)
    from rich.table import Table

    fields = Table(box=None, pad_edge=False, show_header=False)
    fields.add_column(style="bold")
    fields.add_column()
    for label, value in _detail_rows(manifest):
        fields.add_row(label, _text(value))
    _print_table(fields)
    if checkpoints:
        steps = _table("checkpoint", "step", "compose it with")
        for point in checkpoints:
            steps.add_row(_text(point["tag"]), str(point["step"]), _text(f"{manifest.name}:{point['tag']}"))
        _print_table(steps)
    files = _table("role", "file", "size", "type", "digest")
    for entry in manifest.files:
        files.add_row(
            _text(entry.role),
            _text(entry.filename),
            human_size(entry.size),
            entry.media_type,
            entry.digest.removeprefix("sha256:")[:12],
        )
    _print_table(files)


def _checkpoints(registry: Any, manifest: Manifest, same_as: list[str]) -> list[dict[str, Any]]:
    """The intermediate checkpoints kept with this version (tags `vN-stepK`), by step: what a
    user passes to a compose sweep (`dv compose dog:v1-step500,dog:v1 ...`)."""
    versions = [t for t in (manifest.tag, *same_as) if re.fullmatch(r"v\d+", t)]
    if not versions:
        return []
    pattern = re.compile(rf"{re.escape(versions[0])}-step(\d+)")
    found = [(int(m.group(1)), tag) for tag in registry.tags(manifest.name) if (m := pattern.fullmatch(tag))]
    return [{"tag": tag, "step": step} for step, tag in sorted(found)]


def _detail_rows(manifest: Manifest) -> list[tuple[str, str]]:
    rows = [("created", manifest.created.astimezone().isoformat(timespec="seconds"))]
    rows.append(("backbone", ", ".join(f"{k}={v}" for k, v in manifest.backbone.items()) or "?"))
    if manifest.token is not None:
        word = f" (init word {manifest.init_word!r})" if manifest.init_word else ""
        rows.append(("token", manifest.token + word))
    if manifest.phrase is not None:
        rows.append(("phrase", manifest.phrase))
    rows.append(("parameters", f"{manifest.parameter_count:,}"))
    if manifest.adapter:
        rows.append(("adapter", _inline(manifest.adapter)))
    if manifest.training:
        rows.append(("training", _inline(manifest.training)))
    if manifest.seed is not None:
        rows.append(("seed", str(manifest.seed)))
    if manifest.dataset_digest:
        rows.append(("dataset", manifest.dataset_digest))
    if manifest.duration_s is not None:
        rows.append(("duration", f"{manifest.duration_s:.1f} s"))
    if manifest.metrics:
        rows.append(("metrics", ", ".join(f"{k}={v:.4g}" for k, v in manifest.metrics.items())))
    if manifest.description:
        rows.append(("description", manifest.description))
    rows.append(("size", human_size(manifest.size)))
    return rows


def _inline(mapping: dict[str, Any]) -> str:
    """All of it: the table wraps a long row on a terminal and keeps it whole in a pipe."""
    return ", ".join(f"{key}={value}" for key, value in mapping.items())


def rm_command(
    refs: list[str] = typer.Argument(
        ..., metavar="REF...", help="NAME removes every tag of NAME; NAME:TAG removes one tag."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json: bool = JSON,
) -> None:
    """Remove subjects, motions or single tags. Their files are freed by `dv prune`."""
    from dv_registry import RegistryError

    registry = _registry()
    planned_refs = registry.remove(refs, dry_run=True)  # fails if any ref is unknown
    if dry_run:
        if json:
            print_json({"dry_run": True, "removed": planned_refs})
        for ref in planned_refs:
            info(f"would remove {ref}")
        return
    if not yes:
        if not _stdin_is_tty():
            raise RegistryError(
                f"refusing to remove {len(planned_refs)} tag(s) without confirmation",
                hint="pass --yes, or --dry-run to see what would go",
            )
        info("this removes: " + ", ".join(planned_refs))
        typer.confirm("Remove them?", abort=True, err=True)
    removed = registry.remove(refs)
    if json:
        print_json({"dry_run": False, "removed": removed})
    for ref in removed:
        info(f"removed {ref}")
    usage = registry.du()
    if usage.unreferenced_bytes:
        info(f"{human_size(usage.unreferenced_bytes)} is now unused; `dv prune` frees it")


def tag_command(
    src: str = typer.Argument(..., help="The existing entry: name, name:tag or name@sha256:<prefix>."),
    new: str = typer.Argument(..., help="The new tag, name:tag (a bare name means name:latest)."),
    json: bool = JSON,
) -> None:
    """Give an entry another tag, or move a tag such as `latest` to another version."""
    registry = _registry()
    source = registry.resolve(src)
    tagged = registry.tag(src, new)
    if json:
        print_json(summary(tagged))
        return
    info(f"tagged {tagged.ref} -> {source.ref} ({tagged.short_digest})")


def export_command(
    ref: str = typer.Argument(..., help="NAME exports every tag of NAME; NAME:TAG one tag."),
    file: Path = typer.Argument(..., help="The .dvpack file to write (.dvpack.gz to compress)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite FILE if it exists."),
    json: bool = JSON,
) -> None:
    """Write entries and their files to one portable .dvpack file."""
    manifests = _registry().export(ref, file, overwrite=force)
    blob_bytes = {e.digest: e.size for m in manifests for e in m.files}
    if json:
        print_json({"output": str(file), "manifests": [summary(m) for m in manifests]})
        return
    refs = ", ".join(m.ref for m in manifests)
    info(f"exported {refs} ({len(blob_bytes)} files, {human_size(sum(blob_bytes.values()))}) to {file}")


def import_command(
    file: Path = typer.Argument(..., help="A .dvpack file written by `dv export`."),
    json: bool = JSON,
) -> None:
    """Add the entries of a .dvpack file; nothing is written unless all of it checks out."""
    manifests = _registry().import_(file)
    if json:
        print_json([summary(m) for m in manifests])
        return
    info(f"imported {', '.join(m.ref for m in manifests)} from {file}")


def verify_command(json: bool = JSON) -> None:
    """Re-hash every stored file and check every manifest; exits non-zero on damage."""
    from dv_registry import RegistryError

    registry = _registry()
    problems = registry.verify()
    usage = registry.du()
    if json:
        print_json(
            {
                "ok": not problems,
                "home": str(registry.home),
                "manifests": usage.manifest_count,
                "blobs": usage.blob_count,
                "problems": [{"ref": p.ref, "path": p.path, "message": p.message} for p in problems],
            }
        )
    elif problems:
        table = _table("entry", "problem", "path")
        for problem in problems:
            table.add_row(_text(problem.ref or "-"), _text(problem.message), _text(problem.path))
        _print_table(table)
    else:
        out.print(
            f"ok: {usage.manifest_count} manifests and {usage.blob_count} files verified in {registry.home}",
            markup=False,
        )
    if problems:
        damaged = sorted({p.ref for p in problems if p.ref})
        raise RegistryError(
            f"the registry has {len(problems)} problem(s)" + (f": {', '.join(damaged)}" if damaged else ""),
            hint="remove damaged entries with `dv rm` and import or learn them again",
        )


def prune_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json: bool = JSON,
) -> None:
    """Remove files no entry uses any more and leftovers of interrupted writes."""
    registry = _registry()
    report = registry.prune(dry_run=dry_run)
    if json:
        print_json(_prune_json(report))
        return
    verb = "would remove" if dry_run else "removed"
    for item in report.blobs:
        info(f"{verb} unused file {item.digest} ({human_size(item.size)})")
    for item in report.leftovers:
        info(f"{verb} leftover {item.path} ({human_size(item.size)})")
    if not report.blobs and not report.leftovers:
        out.print("nothing to prune", markup=False)
    else:
        freed = "would free" if dry_run else "freed"
        out.print(f"{freed} {human_size(report.bytes_freed)}", markup=False)
    runs = _runs_usage(registry)
    if runs.prunable_bytes:
        info(
            f"finished training runs keep {human_size(runs.prunable_bytes)} of resumable state "
            "that `dv runs prune` frees"
        )


def _runs_usage(registry: Registry) -> RunsUsage:
    from dreamvideo_cli.runs import find_runs, runs_usage

    return runs_usage(find_runs(registry.home, registry.list()), registry.home)


def _prune_json(report: PruneReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "bytes_freed": report.bytes_freed,
        "blobs": [{"digest": b.digest, "path": b.path, "size": b.size} for b in report.blobs],
        "leftovers": [{"path": item.path, "size": item.size} for item in report.leftovers],
    }


def du_command(json: bool = JSON) -> None:
    """Disk space used by the registry, per name, and by training runs, and what pruning frees."""
    registry = _registry()
    usage = registry.du()
    runs = _runs_usage(registry)
    if json:
        print_json(_du_json(usage) | {"runs": runs.to_json()})
        return
    if usage.names:
        table = _table("name", "kind", "tags", "size")
        for name in usage.names:
            table.add_row(_text(name.name), name.kind, str(len(name.tags)), human_size(name.bytes))
        _print_table(table)
    out.print(
        f"{human_size(usage.total_bytes)} in {usage.home} ({usage.blob_count} files, "
        f"{usage.manifest_count} manifests); `dv prune` would free "
        f"{human_size(usage.reclaimable_bytes)}",
        markup=False,
    )
    out.print(
        f"{human_size(runs.bytes)} in {runs.count} training run(s) in {runs.folder}; "
        f"`dv runs prune` would free {human_size(runs.prunable_bytes)}",
        markup=False,
    )


def _du_json(usage: Usage) -> dict[str, Any]:
    return {
        "home": str(usage.home),
        "total_bytes": usage.total_bytes,
        "blob_count": usage.blob_count,
        "blob_bytes": usage.blob_bytes,
        "manifest_count": usage.manifest_count,
        "manifest_bytes": usage.manifest_bytes,
        "unreferenced_blob_count": usage.unreferenced_blob_count,
        "unreferenced_bytes": usage.unreferenced_bytes,
        "leftover_bytes": usage.leftover_bytes,
        "reclaimable_bytes": usage.reclaimable_bytes,
        "names": [
            {
                "kind": n.kind,
                "name": n.name,
                "tags": sorted(n.tags, key=tag_order),
                "bytes": n.bytes,
            }
            for n in usage.names
        ],
    }
