"""The artifact manifest's schema, written once: what `gc.load` accepts, key by key.

`MANIFEST` below is the whole format: every key, its type and range, and whether it is
*bound*, i.e. also compiled into the shared library (`<prefix>_artifact_facts()`), so that
after the verified library is loaded the manifest must agree with it. Only the library
and header checksums (written after linking) and the timings and pass report (which
nothing runs from) are not bound. `validate` checks a parsed manifest against the table
and the rules that tie keys together (sizes against shape x dtype, tensors inside the
weights file, 64-byte aligned, not overlapping, unique names) before any file of the
artifact is used; every refusal is an ArtifactError naming the file and the key.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .backends.llvm.shared import ArtifactError
from .ir.dtypes import BY_NAME as DTYPES

FORMAT = "graphc-artifact"
FORMAT_VERSION = 3  # 3: outputs carry the user's names; output_dict
WEIGHT_ALIGNMENT = 64
MAX_BYTES = 1 << 48     # no weights file or tensor is larger (256 TiB)
MAX_RANK = 32


class _Kind:
    """One node of the schema: problem(value, path) -> (key path, what was expected), or None."""
    expected = "a value"

    def problem(self, value: Any, path: str) -> tuple[str, str] | None:
        raise NotImplementedError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Int(_Kind):
    lo: int = 0
    hi: int = MAX_BYTES

    @property
    def expected(self) -> str:
        return f"an integer in {self.lo}..{self.hi}"

    def problem(self, value, path):
        return None if _is_int(value) and self.lo <= value <= self.hi else (path, self.expected)


@dataclass(frozen=True)
class Seconds(_Kind):
    expected = "a non-negative number of seconds"

    def problem(self, value, path):
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value >= 0
        return None if ok else (path, self.expected)


@dataclass(frozen=True)
class Bool(_Kind):
    expected = "true or false"

    def problem(self, value, path):
        return None if isinstance(value, bool) else (path, self.expected)


@dataclass(frozen=True)
class Str(_Kind):
    pattern: str = ""           # a full-match regular expression, "" for any string
    expected: str = "a string"

    def problem(self, value, path):
        if not isinstance(value, str) or (self.pattern and not re.fullmatch(self.pattern, value)):
            return path, self.expected
        return None


@dataclass(frozen=True)
class OneOf(_Kind):
    choices: tuple[Any, ...]

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(json.dumps(c) for c in self.choices)

    def problem(self, value, path):
        ok = isinstance(value, str) and value in self.choices
        return None if ok else (path, self.expected)


@dataclass(frozen=True)
class List(_Kind):
    item: _Kind
    max_len: int = 1 << 20

    @property
    def expected(self) -> str:
        return f"a list (at most {self.max_len} items), each {self.item.expected}"

    def problem(self, value, path):
        if not isinstance(value, list) or len(value) > self.max_len:
            return path, self.expected
        for i, v in enumerate(value):
            p = self.item.problem(v, f"{path}[{i}]")
            if p:
                return p
        return None


@dataclass(frozen=True)
class Record(_Kind):
    """A JSON object with exactly these keys."""
    fields: Mapping[str, _Kind]
    expected = "an object"

    def problem(self, value, path):
        if not isinstance(value, dict):
            return path, f"an object with keys {', '.join(self.fields)}"
        for k, kind in self.fields.items():
            where = f"{path}.{k}" if path else k
            if k not in value:
                return where, kind.expected
            p = kind.problem(value[k], where)
            if p:
                return p
        for k in value:
            if k not in self.fields:
                return (f"{path}.{k}" if path else str(k)), f"no such key (format version {FORMAT_VERSION} has none)"
        return None


@dataclass(frozen=True)
class Table(_Kind):
    """A JSON object mapping any names to values of one kind."""
    value: _Kind
    expected = "an object of names to numbers"

    def problem(self, value, path):
        if not isinstance(value, dict):
            return path, self.expected
        for k, v in value.items():
            p = self.value.problem(v, f"{path}.{k}")
            if p:
                return p
        return None


SHA256 = Str(r"[0-9a-f]{64}", "a sha256 digest (64 lowercase hex digits)")
NAME = Str(r"[^\x00]{1,4096}", "a non-empty name")
DTYPE = OneOf(tuple(DTYPES))
SHAPE = List(Int(0, MAX_BYTES), max_len=MAX_RANK)
TENSOR = Record({"name": NAME, "dtype": DTYPE, "shape": SHAPE})
WEIGHT = Record({"name": NAME, "kind": OneOf(("param", "const")), "dtype": DTYPE, "shape": SHAPE,
                 "offset": Int(0, MAX_BYTES), "nbytes": Int(0, MAX_BYTES), "sha256": SHA256})


@dataclass(frozen=True)
class Key:
    kind: _Kind
    bound: bool = True          # compiled into the library too, compared after loading it


MANIFEST: dict[str, Key] = {
    "format": Key(OneOf((FORMAT,))),
    "format_version": Key(Int(0, 1 << 31)),
    "graphc_version": Key(Str(r"[0-9A-Za-z.+_-]{1,64}", "a version string")),
    "name": Key(NAME),
    "graph": Key(NAME),
    "c_prefix": Key(Str(r"[A-Za-z_][A-Za-z0-9_]{0,200}", "a C identifier")),
    "target": Key(Record({"triple": Str(r"[A-Za-z0-9_.-]+", "a target triple"), "cpu": Str(),
                          "features": List(Str(r"[A-Za-z0-9_.-]+", "an LLVM feature name")),
                          "llvm": Str()})),
    "max_threads": Key(Int(1, 1 << 16)),
    "opt_level": Key(Int(0, 3)),
    "single_output": Key(Bool()),
    "output_dict": Key(Bool()),   # the call returns {outputs[i].name: array} (a traced dict)
    "ir_sha256": Key(SHA256),
    "library_sha256": Key(SHA256, bound=False),   # the library cannot hold its own checksum
    "header_sha256": Key(SHA256, bound=False),    # the header is written after linking
    "weights_bytes": Key(Int(0, MAX_BYTES)),
    "weights_sha256": Key(SHA256),
    "inputs": Key(List(TENSOR)),
    "outputs": Key(List(TENSOR)),
    "updates": Key(List(NAME)),
    "tensors": Key(List(WEIGHT)),
    "compile_seconds": Key(Seconds(), bound=False),
    "stage_seconds": Key(Table(Seconds()), bound=False),
    "ledger": Key(Str(), bound=False),
}
INFORMATIONAL = tuple(k for k in MANIFEST if k not in ("library_sha256", "header_sha256")
                      and not MANIFEST[k].bound)


def _refuse(file: str, key: str, expected: str, value: Any = ...) -> ArtifactError:
    return ArtifactError(f"{file}: manifest key {key!r} {'is missing' if value is ... else 'is ' + _short(value)}; "
                         f"expected {expected}. The manifest is damaged or was edited: export the artifact again")


def _short(value: Any) -> str:
    if value is ...:
        return "absent"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError):
            return ...
    return node


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse(data: bytes, file: str) -> dict:
    """The manifest file's bytes -> a dict, refusing non-UTF-8, invalid JSON (duplicate
    keys, NaN included) and anything but an object."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{file} is not UTF-8 text (byte {e.start}): not a graphc manifest, or damaged") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{file} holds a JSON {type(doc).__name__}, not a graphc artifact manifest "
                            "(an object)")
    return doc


def validate(doc: dict, file: str, graphc_version: str) -> dict:
    """doc if it is a manifest of this format version, else an ArtifactError naming the key."""
    if doc.get("format") != FORMAT:
        raise ArtifactError(f"{file} is not a graphc artifact manifest: key 'format' is "
                            f"{_short(doc.get('format'))}, expected {json.dumps(FORMAT)}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION or not _is_int(version):
        raise ArtifactError(f"{file} has artifact format version {version!r} (key 'format_version'; "
                            f"written by graphc {doc.get('graphc_version')}); this graphc {graphc_version} "
                            f"reads version {FORMAT_VERSION}: export it again with this graphc")
    problem = Record({k: key.kind for k, key in MANIFEST.items()}).problem(doc, "")
    if problem:
        path, expected = problem
        raise _refuse(file, path, expected, _lookup(doc, path))
    _check_rules(doc, file)
    return doc


def _check_rules(m: dict, file: str) -> None:
    """What ties keys together: each tensor's size, place and name."""
    for group in ("inputs", "tensors"):
        seen: dict[tuple, int] = {}
        for i, t in enumerate(m[group]):
            ident = (t.get("kind"), t["name"])
            if ident in seen:
                raise _refuse(file, f"{group}[{i}].name", f"a name not used by {group}[{seen[ident]}]",
                              t["name"])
            seen[ident] = i
    end, previous = 0, None
    for i, t in sorted(enumerate(m["tensors"]), key=lambda it: it[1]["offset"]):
        where = f"tensors[{i}]"
        want = math.prod(t["shape"]) * DTYPES[t["dtype"]].itemsize
        if t["nbytes"] != want:
            raise _refuse(file, f"{where}.nbytes", f"{want}, the size that '{where}.shape' {t['shape']} x "
                          f"'{where}.dtype' {t['dtype']} make", t["nbytes"])
        if t["offset"] % WEIGHT_ALIGNMENT:
            raise _refuse(file, f"{where}.offset", f"a multiple of {WEIGHT_ALIGNMENT}", t["offset"])
        if t["offset"] + t["nbytes"] > m["weights_bytes"]:
            raise _refuse(file, f"{where}.offset",
                          f"a tensor inside the weights file ({m['weights_bytes']} bytes, key 'weights_bytes'); "
                          f"offset + nbytes is {t['offset'] + t['nbytes']}", t["offset"])
        if t["offset"] < end:
            raise _refuse(file, f"{where}.offset", f"a tensor not overlapping {previous} (which ends at {end})",
                          t["offset"])
        end, previous = t["offset"] + t["nbytes"], where
    if m["weights_bytes"] % WEIGHT_ALIGNMENT:
        raise _refuse(file, "weights_bytes", f"a multiple of {WEIGHT_ALIGNMENT}", m["weights_bytes"])
    params = {t["name"] for t in m["tensors"] if t["kind"] == "param"}
    for i, name in enumerate(m["updates"]):
        if name not in params or name in m["updates"][:i]:
            raise _refuse(file, f"updates[{i}]", "a parameter of the tensor table, listed once", name)
    if m["single_output"] and len(m["outputs"]) != 1:
        raise _refuse(file, "single_output", f"false for a graph with {len(m['outputs'])} outputs", True)
    if m["single_output"] and m["output_dict"]:
        raise _refuse(file, "output_dict", "false when 'single_output' is true", True)
    names = [o["name"] for o in m["outputs"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _refuse(file, f"outputs[{i}].name", "a name no other output has", name)


def bound_facts(manifest: Mapping[str, Any]) -> dict:
    """The keys the library is built with (see Key.bound)."""
    return {k: manifest[k] for k, key in MANIFEST.items() if key.bound}


def facts_text(manifest: Mapping[str, Any]) -> str:
    """bound_facts as the canonical JSON text compiled into the library."""
    return json.dumps(bound_facts(manifest), sort_keys=True, separators=(",", ":"))


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k, ...), b.get(k, ...), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if type(a) is type(b) and a == b else path


def check_against_library(manifest: Mapping[str, Any], library_facts: str, file: str, library: str) -> None:
    """The manifest must say what the (verified) library was built with."""
    try:
        facts = json.loads(library_facts)
    except ValueError:
        raise ArtifactError(f"{library} holds no readable artifact facts") from None
    diff = _first_difference(bound_facts(manifest), facts, "")
    if diff:
        raise ArtifactError(
            f"{file}: manifest key {diff!r} is {_short(_lookup(dict(manifest), diff))}, but {library} was "
            f"built with {_short(_lookup(facts, diff))}: the manifest was edited or comes from another export")
