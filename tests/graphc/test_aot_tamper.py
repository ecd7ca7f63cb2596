"""Tampered artifacts are refused, never trusted: every file of a small exported MLP is
damaged in many ways, then loaded by `gc.load` (in worker subprocesses, so a signal is a
test failure and not a dead pytest) and by a C program through the generated C API.

Each damaged artifact must be refused (Python: an ArtifactError naming the file, and the
key for a manifest edit; C: the API's error code and a message), or, only where the damage
cannot change what runs, load and compute exactly what the untampered artifact computes
(two training steps: outputs and parameters). Harmless is allowed only for:
  * byte damage to mlp.json that still parses to the same facts (cutting the final newline);
  * other values (of the right type) for the manifest's informational keys compile_seconds,
    stage_seconds and ledger: timings and the pass report, which nothing runs from;
  * for C, the header: the C compiler reads it, so a damaged one must fail to compile or
    build a program that refuses or matches. (A C program never reads mlp.json or
    mlp.gcir: those are checked in Python only.)
Every other mutation must be refused.

Mutations are batched: one worker process loads many, announcing each before it starts,
so when a worker dies the mutation that killed it is known and a new worker carries on.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

HERE = pathlib.Path(__file__).parent
NAME = "tmlp"
FILES = ("so", "weights", "json", "gcir", "h")
INFORMATIONAL = ("compile_seconds", "stage_seconds", "ledger")
STEPS = 2
GARBAGE = b"\x00\xffgarbage{]\x7f" * 3


# --- the model -------------------------------------------------------------------------------

def build_model():
    """A two-layer MLP training step: parameters, folded constants and SGD updates."""
    import graphc as gc
    g = gc.Graph(NAME)
    with g:
        x = gc.placeholder("x", (4, 3), "f32")
        t = gc.placeholder("t", (4, 2), "f32")
        w1 = gc.param("w1", (3, 8), init=gc.init.normal(0.5, seed=1))
        b1 = gc.param("b1", (8,), value=np.linspace(-0.1, 0.1, 8, dtype=np.float32))
        w2 = gc.param("w2", (8, 2), init=gc.init.normal(0.5, seed=2))
        h = gc.relu(x @ w1 + b1)
        y = (h @ w2) * gc.constant(np.array([[0.5, 2.0]], np.float32)) \
            + gc.constant(np.array([1.0, -1.0], np.float32))
        loss = ((y - t) * (y - t)).mean()
        g.set_outputs([y, loss], updates=gc.optim.SGD(0.1).updates(loss))
    return g


def model_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)]


# --- mutations -------------------------------------------------------------------------------
# A mutation is a JSON-able dict, applied to a fresh copy of the untampered files:
#   {"file": ext, "op": "truncate", "at": n} | {"op": "flip", "at": i, "mask": m}
#   {"op": "delete"} | {"op": "empty"} | {"op": "append"}  (garbage bytes)
#   {"file": "json", "op": "raw", "hex": ...}             (the manifest file's whole content)
#   {"file": "json", "op": "del", "path": [...]} | {"op": "set", "path": [...], "value": v}

def _offsets(size: int) -> list[int]:
    """Header, early, middle and end bytes of a file."""
    return sorted({i for i in (0, 4, 17, 40, size // 4, size // 2, 3 * size // 4, size - 8, size - 1)
                   if 0 <= i < size})


def byte_mutations(ext: str, size: int) -> list[dict]:
    out = [{"file": ext, "op": "truncate", "at": n} for n in sorted({1, 16, size // 2, size - 1}) if 0 < n < size]
    out += [{"file": ext, "op": "flip", "at": i, "mask": mask} for i in _offsets(size) for mask in (0x01, 0xFF)]
    out += [{"file": ext, "op": op} for op in ("delete", "empty", "append")]
    return out


def header_mutations(header: bytes) -> list[dict]:
    """The last digit of the library size and checksum the header's loader compares with:
    a C program built against such a header must refuse the (intact) library."""
    out = []
    for define in (b"_LIBRARY_BYTES ", b"_LIBRARY_CHECKSUM "):
        at = header.index(b"ull", header.index(define)) - 1
        out.append({"file": "h", "op": "flip", "at": at, "mask": 0x01, "must_refuse_in_c": True})
    return out


def _paths(value: Any, path: tuple = ()):
    """Every (path, value) below value: all keys of dicts, all items of lists of dicts, the
    first item of other lists."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list) and value:
        items = range(len(value)) if isinstance(value[0], dict) else range(1)
        for i in items:
            yield from _paths(value[i], path + (i,))


def _other_type(v: Any) -> Any:
    """A value of another JSON type than v (a string where a list is expected, ...)."""
    if isinstance(v, bool):
        return 1
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "0.5"
    if isinstance(v, str):
        return 7
    if isinstance(v, list):
        return "a string"
    if isinstance(v, dict):
        return [1]
    return 0


def manifest_mutations(manifest: dict) -> list[dict]:
    out: list[dict] = []
    for path, v in _paths(manifest):
        if not path:
            continue
        p = list(path)
        if isinstance(path[-1], str):
            out.append({"file": "json", "op": "del", "path": p})
        out.append({"file": "json", "op": "set", "path": p, "value": None})
        out.append({"file": "json", "op": "set", "path": p, "value": _other_type(v)})
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append({"file": "json", "op": "set", "path": p, "value": -1})
            out.append({"file": "json", "op": "set", "path": p, "value": 10 ** 20})
    tensors = manifest["tensors"]
    last = len(tensors) - 1
    targeted = [
        (["tensors", 1, "name"], tensors[0]["name"]),            # duplicate tensor names
        (["inputs", 1, "name"], manifest["inputs"][0]["name"]),
        (["tensors", 0, "nbytes"], tensors[0]["nbytes"] + 4),    # size disagrees with shape x dtype
        (["tensors", 0, "shape"], tensors[0]["shape"] + [1, 2]),
        (["tensors", 0, "dtype"], "f13"),                        # unknown dtype
        (["tensors", 0, "dtype"], "f64"),                        # a known one that disagrees
        (["tensors", 1, "offset"], tensors[1]["offset"] + 4),    # misaligned
        (["tensors", last, "offset"], manifest["weights_bytes"]),  # past the weights file
        (["tensors", 1, "offset"], tensors[0]["offset"]),        # overlapping another tensor
        (["tensors", 0, "kind"], "buffer"),
        (["tensors", 0, "sha256"], "0" * 64),
        (["inputs", 0, "shape"], [3, 4]),
        (["outputs", 0, "dtype"], "f64"),
        (["single_output"], not manifest["single_output"]),
        (["max_threads"], manifest["max_threads"] + 1),
        (["c_prefix"], "evil; rm -rf"),
        (["c_prefix"], "other"),
        (["target", "triple"], "aarch64-unknown-linux-gnu"),
        (["target", "features"], manifest["target"]["features"] + ["avx512notreal"]),
        (["updates"], []),
        (["library_sha256"], "f" * 64),
        (["ir_sha256"], "A" * 64),
        (["extra_key"], 1),
    ]
    out += [{"file": "json", "op": "set", "path": p, "value": v} for p, v in targeted]
    raw = [b"", b"{", b"[]", b"\"manifest\"", b"null", b"17", b"\xff\xfe{}", b"{\"format\": \"graphc-artifact\"}",
           json.dumps(manifest).encode().replace(b"{", b"{\"format\": 1, ", 1)]  # a duplicate key
    out += [{"file": "json", "op": "raw", "hex": r.hex()} for r in raw]
    return out


def combined_mutations(sizes: dict[str, int]) -> list[dict]:
    """A file damaged and the manifest's checksum of it deleted (the fuzzer's case: without
    library_sha256 an old loader dlopened a damaged library)."""
    pairs = [("so", "library_sha256"), ("h", "header_sha256"), ("gcir", "ir_sha256"),
             ("weights", "weights_sha256"), ("weights", "weights_bytes")]
    out = []
    for ext, key in pairs:
        for at in (sizes[ext] // 2, 17):
            out.append({"file": "json", "op": "combo",
                        "parts": [{"file": ext, "op": "flip", "at": at, "mask": 0xFF},
                                  {"file": "json", "op": "del", "path": [key]}]})
    out.append({"file": "json", "op": "combo",
                "parts": [{"file": "weights", "op": "flip", "at": 0, "mask": 0x01},
                          {"file": "json", "op": "del", "path": ["tensors", 0, "sha256"]},
                          {"file": "json", "op": "del", "path": ["weights_sha256"]}]})
    return out


def describe(m: dict) -> str:
    if m["op"] == "combo":
        return " + ".join(describe(part) for part in m["parts"])
    if m["op"] in ("del", "set"):
        what = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in m["path"]).lstrip(".")
        return f"json {m['op']} {what}" + (f" = {json.dumps(m['value'])[:40]}" if m["op"] == "set" else "")
    if m["op"] == "raw":
        return f"json raw {bytes.fromhex(m['hex'])[:24]!r}"
    args = "".join(f" {k}={m[k]}" for k in ("at", "mask") if k in m)
    return f"{m['file']} {m['op']}{args}"


def key_path(m: dict) -> str | None:
    """The dotted key a manifest-edit's error must name (None for byte damage)."""
    if m["op"] not in ("del", "set"):
        return None
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in m["path"]).lstrip(".")


def _json_type(v: Any) -> str:
    return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__


def may_be_harmless(m: dict) -> bool:
    """Whether the mutation may leave the artifact loading and computing the same: only
    byte damage to the manifest (it may still parse to the same facts) and, under the
    informational keys, another value of the same JSON type or a deleted stage timing."""
    if m["op"] in ("del", "set", "raw", "combo"):
        if m["op"] in ("raw", "combo") or m["path"][0] not in INFORMATIONAL:
            return False
        if m["op"] == "del":
            return len(m["path"]) > 1  # one stage's timing; the key itself is required
        return (_json_type(m["value"]) == _json_type(_pristine_value(m["path"])) and _non_negative(m["value"]))
    return m["file"] == "json" and m["op"] in ("truncate", "flip", "append")


_PRISTINE_MANIFEST: dict = {}


def _pristine_value(path: list) -> Any:
    v: Any = _PRISTINE_MANIFEST
    for k in path:
        v = v[k]
    return v


def _non_negative(v: Any) -> bool:
    return not isinstance(v, (int, float)) or v >= 0


def apply(m: dict, pristine: dict[str, bytes], manifest: dict, directory: str) -> None:
    """Write the untampered artifact into directory, then damage it as m says."""
    base = os.path.join(directory, NAME)
    for ext, data in pristine.items():
        with open(f"{base}.{ext}", "wb") as f:
            f.write(data)
    if m["op"] == "combo":
        manifest = copy.deepcopy(manifest)
        for part in m["parts"]:
            if part["op"] == "del":  # edits accumulate in one manifest
                _edit(manifest, part)
            else:
                _damage(part, pristine[part["file"]], base)
        if any(part["op"] == "del" for part in m["parts"]):
            pathlib.Path(base + ".json").write_bytes((json.dumps(manifest, indent=1) + "\n").encode())
        return
    _damage(m, pristine[m["file"]], base, manifest)


def _edit(doc: dict, m: dict) -> None:
    *parent, last = m["path"]
    node = doc
    for k in parent:
        node = node[k]
    if m["op"] == "del":
        del node[last]
    else:
        node[last] = m["value"]


def _damage(m: dict, data: bytes, base: str, manifest: dict | None = None) -> None:
    file = f"{base}.{m['file']}"
    op = m["op"]
    if op == "delete":
        os.remove(file)
        return
    if op == "truncate":
        data = data[:m["at"]]
    elif op == "flip":
        b = bytearray(data)
        b[m["at"]] ^= m["mask"]
        data = bytes(b)
    elif op == "empty":
        data = b""
    elif op == "append":
        data = data + GARBAGE
    elif op == "raw":
        data = bytes.fromhex(m["hex"])
    elif op in ("del", "set"):
        doc = copy.deepcopy(manifest)
        _edit(doc, m)
        data = (json.dumps(doc, indent=1) + "\n").encode()
    with open(file, "wb") as f:
        f.write(data)


# --- the Python side: worker processes -----------------------------------------------------------

def _run_loaded(exe) -> list[np.ndarray]:
    outs: Any = None
    for _ in range(STEPS):
        outs = exe(*model_inputs())
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    return [np.asarray(o) for o in outs] + [np.array(exe.params[k]) for k in sorted(exe.params)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in zip(a, b))


def worker(spec_file: str) -> None:
    """Load each mutated artifact of the spec in this process; one JSON line per result."""
    import graphc as gc
    from graphc.aot import ArtifactError
    spec = json.loads(pathlib.Path(spec_file).read_text())
    pristine = {ext: bytes.fromhex(h) for ext, h in spec["pristine"].items()}
    scratch = spec["scratch"]
    for ext, data in pristine.items():
        pathlib.Path(scratch, f"{NAME}.{ext}").write_bytes(data)
    want = _run_loaded(gc.load(os.path.join(scratch, NAME)))
    print("PRISTINE", flush=True)
    for i in range(spec["start"], len(spec["mutations"])):
        m = spec["mutations"][i]
        print("BEGIN", i, flush=True)
        apply(m, pristine, spec["manifest"], scratch)
        result: dict[str, Any] = {"i": i}
        try:
            got = _run_loaded(gc.load(os.path.join(scratch, NAME)))
        except ArtifactError as e:
            result.update(outcome="refused", message=str(e))
        except gc.GraphcError as e:
            result.update(outcome="other GraphcError", message=f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - what the test looks for
            result.update(outcome="exception", message=f"{type(e).__name__}: {e}")
        else:
            result.update(outcome="equal" if _same(got, want) else "different", message="")
        print("END", json.dumps(result), flush=True)


def run_python(mutations: list[dict], pristine: dict[str, bytes], manifest: dict, tmp: pathlib.Path
               ) -> list[dict]:
    """Every mutation's result; a worker that dies is replaced after the mutation it died on."""
    spec = {"pristine": {k: v.hex() for k, v in pristine.items()}, "manifest": manifest,
            "mutations": mutations, "scratch": str(tmp / "py"), "start": 0}
    os.makedirs(spec["scratch"], exist_ok=True)
    results: dict[int, dict] = {}
    env = {**os.environ, "GRAPHC_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    while spec["start"] < len(mutations):
        spec_file = tmp / "spec.json"
        spec_file.write_text(json.dumps(spec))
        r = subprocess.run([sys.executable, __file__, "--worker", str(spec_file)], capture_output=True,
                           text=True, timeout=300, env=env, cwd=str(HERE.parent.parent))
        begun = None
        for line in r.stdout.splitlines():
            if line.startswith("BEGIN "):
                begun = int(line.split()[1])
            elif line.startswith("END "):
                res = json.loads(line[4:])
                results[res["i"]] = res
                begun = None
        if "PRISTINE" not in r.stdout:
            raise AssertionError(f"the untampered artifact does not load in a worker:\n{r.stderr[-3000:]}")
        if r.returncode == 0 and begun is None:
            break
        if begun is None:  # died between two mutations: blame the next one
            begun = max((i for i in results if i >= spec["start"]), default=spec["start"] - 1) + 1
            if begun >= len(mutations):
                raise AssertionError(f"the worker failed after the last mutation:\n{r.stderr[-3000:]}")
        died = begun
        how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
        results[died] = {"i": died, "outcome": "crash", "message": f"{how}: {r.stderr.strip()[-300:]}"}
        spec["start"] = died + 1
    return [results[i] | {"mutation": m} for i, m in enumerate(mutations)]


# --- the C side ------------------------------------------------------------------------------------

def cc() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def build_c_driver(directory: str, out: str) -> subprocess.CompletedProcess:
    """Compile aot_driver.c against directory/tmlp.h (it loads the library at run time)."""
    return subprocess.run([cc(), "-std=c11", "-O1", f"-DPREFIX={NAME}", f'-DHEADER="{NAME}.h"', f"-I{directory}",
                           str(HERE / "aot_driver.c"), "-o", out, "-ldl"],
                          capture_output=True, text=True, errors="replace", timeout=120)


def c_command(driver: str, directory: str) -> list[str]:
    base = os.path.join(directory, NAME)
    return [driver, base + ".so", base + ".weights", directory, str(STEPS)]


C_REFUSED = {2, 3, 5}  # the driver's exit codes for create, run and (verified) load errors


def _c_outputs(directory: str) -> list[bytes]:
    files = sorted(f for f in os.listdir(directory) if f.startswith(("out", "param")) and f.endswith(".bin"))
    return [pathlib.Path(directory, f).read_bytes() for f in files]


def run_c(mutations: list[dict], pristine: dict[str, bytes], manifest: dict, tmp: pathlib.Path,
          build: Callable[[str, str], subprocess.CompletedProcess] = build_c_driver,
          command: Callable[[str, str], list[str]] = c_command) -> list[dict]:
    """Run the C driver on every mutation of the files a C program uses (.so, .weights, .h)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    inputs = model_inputs()

    def prepare(directory: str, m: dict | None) -> None:
        os.makedirs(directory, exist_ok=True)
        if m is None:
            for ext, data in pristine.items():
                pathlib.Path(directory, f"{NAME}.{ext}").write_bytes(data)
        else:
            apply(m, pristine, manifest, directory)
        for k, a in enumerate(inputs):
            a.tofile(os.path.join(directory, f"in{k}.bin"))

    good = str(tmp / "c_pristine")
    prepare(good, None)
    driver = str(tmp / "driver")
    b = build(good, driver)
    assert b.returncode == 0, b.stderr
    r = subprocess.run(command(driver, good), capture_output=True, text=True, errors="replace", timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    want = _c_outputs(good)

    def one(k_m: tuple[int, dict]) -> dict:
        k, m = k_m
        directory = str(tmp / f"c{k}")
        prepare(directory, m)
        exe = driver
        if m["file"] == "h":
            exe = os.path.join(directory, "driver")
            b = build(directory, exe)
            if b.returncode != 0:
                return {"outcome": "build refused", "message": b.stderr.strip()[-200:], "mutation": m}
        try:
            r = subprocess.run(command(exe, directory), capture_output=True, text=True, errors="replace",
                               timeout=60, env=env)
        except subprocess.TimeoutExpired:
            return {"outcome": "hang", "message": "", "mutation": m}
        if r.returncode < 0:
            outcome = f"crash (signal {-r.returncode})"
        elif r.returncode in C_REFUSED and r.stderr.strip():
            outcome = "refused"
        elif r.returncode == 0:
            outcome = "equal" if _c_outputs(directory) == want else "different"
        else:
            outcome = f"exit {r.returncode}"
        shutil.rmtree(directory, ignore_errors=True)
        return {"outcome": outcome, "message": r.stderr.strip()[-300:], "mutation": m}

    todo = [m for m in mutations if m["file"] in ("so", "weights", "h")]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, enumerate(todo)))


# --- the tests ---------------------------------------------------------------------------------

def export_pristine(directory: str) -> tuple[dict[str, bytes], dict]:
    import graphc as gc
    gc.export(build_model(), None, os.path.join(directory, NAME))
    pristine = {ext: pathlib.Path(directory, f"{NAME}.{ext}").read_bytes() for ext in FILES}
    return pristine, json.loads(pristine["json"])


def all_mutations(pristine: dict[str, bytes], manifest: dict) -> list[dict]:
    _PRISTINE_MANIFEST.clear()
    _PRISTINE_MANIFEST.update(manifest)
    out = [m for ext in FILES for m in byte_mutations(ext, len(pristine[ext]))] + header_mutations(pristine["h"])
    return out + manifest_mutations(manifest) + combined_mutations({k: len(v) for k, v in pristine.items()})


def summary(results: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def python_failures(results: list[dict], artifact_dir: str) -> list[str]:
    """What the Python loader got wrong, one line per mutation."""
    bad = []
    for r in results:
        m, outcome, msg = r["mutation"], r["outcome"], r["message"]
        if outcome == "refused":
            if artifact_dir not in msg:
                bad.append(f"{describe(m)}: the error does not name the file: {msg}")
            key = key_path(m)
            if key is not None and key not in msg and not may_be_harmless(m):
                bad.append(f"{describe(m)}: the error does not name the key {key!r}: {msg}")
        elif outcome != "equal" or not may_be_harmless(m):
            bad.append(f"{describe(m)}: {outcome} {msg[:200]}")
    return bad


def c_failures(results: list[dict]) -> list[str]:
    bad = []
    for r in results:
        m, outcome = r["mutation"], r["outcome"]
        harmless = m["file"] == "h" and not m.get("must_refuse_in_c")
        allowed = {"refused"} | ({"build refused", "equal"} if harmless else set())
        if outcome not in allowed:
            bad.append(f"{describe(m)}: {outcome} {r['message'][:200]}")
    return bad


pytestmark = pytest.mark.skipif(cc() is None, reason="AOT export links with the system C compiler")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("pristine"))
    pristine, manifest = export_pristine(directory)
    return pristine, manifest, all_mutations(pristine, manifest)


@pytest.fixture(scope="module")
def python_results(artifact, tmp_path_factory):
    pristine, manifest, mutations = artifact
    tmp = tmp_path_factory.mktemp("tamper_py")
    return run_python(mutations, pristine, manifest, tmp), str(tmp / "py")


def test_the_untampered_artifact_matches_the_reference():
    """So that 'equal to the untampered artifact' means right."""
    import graphc as gc
    with tempfile.TemporaryDirectory() as d:
        export_pristine(d)
        got = _run_loaded(gc.load(os.path.join(d, NAME)))
    want = _run_loaded(gc.compile(build_model(), backend="reference"))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gc_load_refuses_every_damaged_artifact(python_results):
    results, directory = python_results
    print("gc.load:", len(results), "mutations", summary(results))
    bad = python_failures(results, directory)
    assert not bad, f"{len(bad)} of {len(results)} mutations:\n" + "\n".join(bad)


def test_the_c_api_refuses_every_damaged_artifact(artifact, tmp_path):
    pristine, manifest, mutations = artifact
    results = run_c(mutations, pristine, manifest, tmp_path)
    print("C API:", len(results), "mutations", summary(results))
    bad = c_failures(results)
    assert not bad, f"{len(bad)} of {len(results)} mutations:\n" + "\n".join(bad)


def test_c_entry_points_check_their_arguments(artifact, tmp_path):
    """NULL pointers, wrong tensor counts and wrong byte sizes are GRAPHC_ERR_ARGUMENT (-1)
    with a message, and nothing runs; a correct call afterwards still works."""
    import ctypes
    pristine, manifest, _ = artifact
    for ext, data in pristine.items():
        (tmp_path / f"{NAME}.{ext}").write_bytes(data)
    lib = ctypes.CDLL(str(tmp_path / f"{NAME}.so"))
    P, S, I = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    create = lib.tmlp_create
    create.restype, create.argtypes = P, [ctypes.c_char_p, ctypes.c_char_p, S]
    run = lib.tmlp_run_sized
    run.restype, run.argtypes = I, [P, I, P, P, I, P, P]
    call = lib.tmlp_call
    call.restype, call.argtypes = I, [P, P, P, P, P]
    error = lib.tmlp_error
    error.restype, error.argtypes = ctypes.c_char_p, [P]
    param_data = lib.tmlp_param_data
    param_data.restype, param_data.argtypes = P, [P, I]
    err = ctypes.create_string_buffer(512)
    assert not create(None, err, len(err)) and b"cannot open weights" in err.value
    assert not create(str(tmp_path / "nothing.weights").encode(), err, len(err))
    m = create(str(tmp_path / f"{NAME}.weights").encode(), err, len(err))
    assert m, err.value

    ins = [np.ascontiguousarray(a) for a in model_inputs()]
    outs = [np.full((4, 2), -7.0, np.float32), np.full((), -7.0, np.float32)]
    in_ptrs = (P * 2)(*[a.ctypes.data for a in ins])
    out_ptrs = (P * 2)(*[a.ctypes.data for a in outs])
    in_bytes, out_bytes = (S * 2)(48, 32), (S * 2)(32, 4)
    before = ctypes.string_at(param_data(m, 0), 96)

    def refused(code: int, message: bytes) -> None:
        assert code == -1, code
        assert message in error(m), error(m)
        assert np.all(outs[0] == -7.0) and ctypes.string_at(param_data(m, 0), 96) == before  # nothing ran

    assert run(None, 2, in_ptrs, in_bytes, 2, out_ptrs, out_bytes) == -1
    assert error(None) == b"tmlp: no model (NULL)"
    refused(run(m, 1, in_ptrs, in_bytes, 2, out_ptrs, out_bytes), b"1 inputs given, the model has 2")
    refused(run(m, 2, in_ptrs, in_bytes, 3, out_ptrs, out_bytes), b"3 outputs given, the model has 2")
    refused(run(m, 2, in_ptrs, (S * 2)(48, 31), 2, out_ptrs, out_bytes), b"inputs 1 (t) has 31 bytes, expected 32")
    refused(run(m, 2, in_ptrs, in_bytes, 2, out_ptrs, (S * 2)(32, 8)), b"outputs 1 (output1) has 8 bytes")
    refused(run(m, 2, None, in_bytes, 2, out_ptrs, out_bytes), b"must not be NULL")
    refused(run(m, 2, in_ptrs, None, 2, out_ptrs, out_bytes), b"must not be NULL")
    refused(run(m, 2, (P * 2)(ins[0].ctypes.data, None), in_bytes, 2, out_ptrs, out_bytes), b"input 1 (t) is NULL")
    refused(run(m, 2, in_ptrs, in_bytes, 2, (P * 2)(outs[0].ctypes.data, None), out_bytes),
            b"output 1 (output1) is NULL")
    refused(call(m, in_ptrs, None, None, None), b"must be arrays")
    assert param_data(m, -1) is None and param_data(m, 3) is None
    assert run(m, 2, in_ptrs, in_bytes, 2, out_ptrs, out_bytes) == 0, error(m)
    assert not np.all(outs[0] == -7.0)
    lib.tmlp_destroy.argtypes = [P]
    lib.tmlp_destroy(m)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker(sys.argv[2])
