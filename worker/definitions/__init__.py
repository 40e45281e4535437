"""Workflow definitions: the YAML format, loading with located errors, expressions, hot reload."""

from worker.definitions.expressions import (
    check_expression,
    evaluate,
    find_expressions,
    is_template,
    referenced_roots,
    referenced_steps,
    render,
    single_expression,
    to_text,
    truthy,
)
from worker.definitions.loader import MAX_FILE_BYTES, load_bytes, load_file, load_text
from worker.definitions.model import CONTEXT_ROOTS, Definition, find_problems
from worker.definitions.registry import (
    WORKFLOW_SUFFIXES,
    Registry,
    RegistryChange,
    is_workflow_file,
    scan_directory,
)
from worker.definitions.watcher import watch_directory

__all__ = [
    "CONTEXT_ROOTS",
    "MAX_FILE_BYTES",
    "WORKFLOW_SUFFIXES",
    "Definition",
    "Registry",
    "RegistryChange",
    "check_expression",
    "evaluate",
    "find_expressions",
    "find_problems",
    "is_template",
    "is_workflow_file",
    "load_bytes",
    "load_file",
    "load_text",
    "referenced_roots",
    "referenced_steps",
    "render",
    "scan_directory",
    "single_expression",
    "to_text",
    "truthy",
    "watch_directory",
]
