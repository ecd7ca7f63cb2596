"""Errors of the ONNX importer; both are GraphcErrors, so the CLI and callers treat them alike."""
from __future__ import annotations

from ..ir.errors import GraphcError


class OnnxError(GraphcError):
    """The model cannot be read: missing, malformed or truncated file, invalid model."""


class UnsupportedOnnxError(OnnxError):
    """The model uses ops, attribute values or dtypes graphc does not import.

    `problems` lists every offending node as (node index, op type, node name, reason), so a
    user sees the whole list at once rather than fixing one node per attempt.
    """

    def __init__(self, message: str, problems: list[tuple[int, str, str, str]] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)
