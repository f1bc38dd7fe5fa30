"""No import cycle inside dreamvideo_cli, counting every import statement: those inside
functions and under `if TYPE_CHECKING:` too (grimp reads them all), so a cycle cannot be
hidden by importing lazily. The layers themselves are checked by `lint-imports` (.ci/run)."""

from __future__ import annotations

import grimp


def test_no_import_cycle_in_dreamvideo_cli() -> None:
    graph = grimp.build_graph("dreamvideo_cli")
    cycles = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            # A direct import a -> b closes a cycle exactly when b leads back to a.
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                lines = ", ".join(
                    f"l.{d['line_number']}" for d in graph.get_import_details(importer=importer, imported=imported)
                )
                cycles.add(f"{' -> '.join((importer, *back))}  ({importer} imports {imported} at {lines})")
    assert not cycles, "\n".join(sorted(cycles))
