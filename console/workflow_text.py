"""Display helpers for workflow files: where a file's error is (file:line:column), the offending line with a caret,
the files table's and the reload history's cells, and the lines of a diff between two versions. Pure, like
console/formatting.py (split from it)."""

from __future__ import annotations

from console.formatting import ELLIPSIS, short_id, truncate
from worker.models import WorkflowEvent, WorkflowInfo


def workflow_location(wf: WorkflowInfo) -> str:
    """`workflows/broken.yaml:12:5`, as an editor understands it."""
    if wf.error_line is None:
        return wf.path
    if wf.error_column is None:
        return f"{wf.path}:{wf.error_line}"
    return f"{wf.path}:{wf.error_line}:{wf.error_column}"


def truncate_left(text: str, width: int) -> str:
    """Cut from the left, keeping the end (a path's file name): `…/workflows/hello.yaml`."""
    if width <= 0:
        return ""
    return text if len(text) <= width else ELLIPSIS + text[len(text) - width + 1:]


def workflow_summary(wf: WorkflowInfo, width: int) -> str:
    """One table cell: the file (end kept), or for an invalid one `name.yaml:12:5: reason`."""
    if wf.status != "invalid":
        return truncate_left(wf.path, width)
    where = workflow_location(wf).replace("\\", "/").rsplit("/", 1)[-1]
    return truncate(f"{where}: {wf.error or 'invalid'}", width)


def excerpt_window(line: str, column: int | None, width: int) -> tuple[str, int | None]:
    """The part of an offending line that fits `width` cells, and where the caret goes in it.

    One cell per character (tabs and control characters become one cell), so the caret lines up; a
    long line is cut around the column with ellipses. The caret offset is None without a column.
    """
    text = "".join(c if c.isprintable() else "·" for c in line.replace("\t", " "))
    width = max(width, 8)
    if column is None or column < 1:
        return truncate(text, width), None
    col = column - 1
    if len(text) <= width:
        return text, min(col, len(text), width - 1)
    start = 0 if col < width - 1 else col - width // 2
    piece = text[start:start + width]
    if start > 0:
        piece = ELLIPSIS + piece[1:]
    if start + width < len(text):
        piece = piece[:-1] + ELLIPSIS
    return piece, min(col - start, len(piece) - 1)


def reload_summary(event: WorkflowEvent, width: int) -> str:
    """One history cell: `hello.yaml → fcde2b2e`, or for an invalid save `broken.yaml:3:9: reason`."""
    file = event.path.replace("\\", "/").rsplit("/", 1)[-1]
    if event.kind == "invalid":
        error = (event.error or "invalid").replace("\\", "/")
        where = error.split(": ", 1)
        text = f"{where[0].rsplit('/', 1)[-1]}: {where[1]}" if len(where) == 2 and file in where[0] else error
        return truncate(text, width)
    if event.kind == "loaded" and event.def_hash:
        return truncate(f"{file} → {short_id(event.def_hash)}", width)
    return truncate(file, width)


def diff_line_style(line: str) -> str:
    """A Rich style for one line of a unified diff (the +/- prefix carries the meaning without colour)."""
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("@@"):
        return "cyan"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return ""
