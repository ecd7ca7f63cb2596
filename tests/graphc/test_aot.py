"""AOT artifacts: export, load without compiling, call from C, and refuse damaged artifacts.

The example MLP and CNN training steps are exported once per module; every comparison is
against the reference interpreter running the same graph (for training steps: the same
number of steps from the same initial parameters)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.aot import ArtifactError

from tests import examples

HERE = pathlib.Path(__file__).parent
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="AOT export links with the system C compiler")
pytestmark = needs_cc


def _mlp_inputs(rng):
    B, D = 256, 784
    return [rng.standard_normal((B, D)).astype(np.float32), (np.arange(B) % 10).astype(np.int32)]


def _cnn_inputs(rng):
    return [rng.standard_normal((50, 1, 8, 8)).astype(np.float32), (np.arange(50) % 10).astype(np.int32)]


MODELS = {
    "mlp": (lambda: examples.mlp_step().build(), _mlp_inputs),
    "cnn": (lambda: examples.digits_cnn().build_train_step(), _cnn_inputs),
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """name -> (graph, export info, artifact path); each model exported once."""
    out = {}
    root = tmp_path_factory.mktemp("artifacts")
    for name, (build, _) in MODELS.items():
        g = build()
        info = gc.export(g, None, str(root / name))
        out[name] = (g, info, str(root / name))
    return out


def _reference_steps(g, inputs, steps):
    ref = gc.compile(g, backend="reference")
    outs = None
    for _ in range(steps):
        outs = ref(*inputs)
    return outs, ref.params


def _assert_close(got, want, what, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def test_call_with_given_parameters_leaves_them_unchanged(artifacts):
    """The compiled step updates parameters in place (passes/donate.py); the functional C
    entry point (`_call`, which the Python executable drives with its own arrays) must
    still leave the parameter arrays it is given untouched and return the new values."""
    g, info, path = artifacts["cnn"]
    exe = gc.load(path)
    inputs = _cnn_inputs(np.random.default_rng(1))
    old = {k: exe.params[k] for k in exe.params}  # views of the arrays handed to _call
    kept = {k: v.copy() for k, v in old.items()}
    exe(*inputs)
    for k in kept:
        np.testing.assert_array_equal(old[k], kept[k], err_msg=k)
    _, want = _reference_steps(g, inputs, 1)
    for k in want:
        _assert_close(exe.params[k], want[k], f"parameter {k}")
        assert not np.array_equal(exe.params[k], kept[k]) or not np.any(want[k] - kept[k]), k


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_artifact_files_and_manifest(artifacts, model):
    g, info, path = artifacts[model]
    for ext in ("so", "h", "weights", "json", "gcir"):
        assert os.path.isfile(f"{path}.{ext}"), ext
    m = json.loads(pathlib.Path(path + ".json").read_text())
    assert m["format_version"] == gc.aot.FORMAT_VERSION and m["graphc_version"] == gc.__version__
    assert m["target"]["triple"] and "features" in m["target"]
    weights = pathlib.Path(path + ".weights").read_bytes()
    # every parameter is stored raw little-endian at its offset, equal to its initial value
    init = {p.name: g.initial_param_value(p) for p in g.params}
    stored = [t for t in m["tensors"] if t["kind"] == "param"]
    assert {t["name"] for t in stored} == set(init)
    for t in stored:
        arr = np.frombuffer(weights[t["offset"]:t["offset"] + t["nbytes"]], "<" + np.dtype(
            gc.dtypes.dtype(t["dtype"]).np_dtype).str[1:]).reshape(t["shape"])
        np.testing.assert_array_equal(arr, init[t["name"]])
    # the stored IR is the optimised graph and parses back
    assert gc.parse(pathlib.Path(path + ".gcir").read_text()).name == g.name


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_loaded_artifact_matches_reference_over_training_steps(artifacts, model):
    g, info, path = artifacts[model]
    exe = gc.load(path)
    inputs = MODELS[model][1](np.random.default_rng(0))
    for _ in range(3):
        got = exe(*inputs)
    want, want_params = _reference_steps(g, inputs, 3)
    for a, b in zip(got, want):
        _assert_close(a, b, f"{model} output")
    for name in want_params:
        _assert_close(exe.params[name], want_params[name], f"{model} parameter {name}")
    # loading compiles nothing: it must be a small fraction of the compile time
    assert exe.load_seconds < info.compile_seconds / 5, (exe.load_seconds, info.compile_seconds)


def test_fresh_process_loads_without_llvm(artifacts, tmp_path):
    g, _, path = artifacts["cnn"]
    inputs = _cnn_inputs(np.random.default_rng(1))
    np.savez(tmp_path / "in.npz", x=inputs[0], t=inputs[1])
    code = (
        "import sys, numpy as np, graphc as gc\n"
        f"exe = gc.load({path!r})\n"
        f"d = np.load({str(tmp_path / 'in.npz')!r})\n"
        "loss, logits = exe(d['x'], d['t'])\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, logits)\n"
        "assert not any(m.startswith('llvmlite') for m in sys.modules), 'LLVM was loaded'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want, _ = _reference_steps(g, inputs, 1)
    _assert_close(np.load(tmp_path / "logits.npy"), want[1], "cnn logits in a fresh process")


def _build_driver(path: str, tmp: pathlib.Path) -> pathlib.Path:
    """The C driver, compiled against the artifact's header (it loads path.so at run time
    through the header's verifying loader)."""
    m = json.loads(pathlib.Path(path + ".json").read_text())
    exe = tmp / f"driver_{m['name']}"
    directory, name = os.path.split(path)
    r = subprocess.run([CC, "-std=c11", "-O1", "-Wall", f"-DPREFIX={m['c_prefix']}", f'-DHEADER="{name}.h"',
                        f"-I{directory}", str(HERE / "aot_driver.c"), "-o", str(exe), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


def _run_driver(exe: pathlib.Path, weights: str, work: pathlib.Path, steps: int):
    library = weights[:-len(".weights")] + ".so"
    return subprocess.run([str(exe), library, weights, str(work), str(steps)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_library_stays_mapped_after_dlclose(artifacts):
    """The .so is linked -z nodelete: <prefix>_close's dlclose must not unmap it (and the
    libgomp it pulled in) under libgomp's live pool threads, which then crashed the C
    driver at exit now and then (rc -11 after a correct run)."""
    _, _, path = artifacts["mlp"]
    out = subprocess.run(["readelf", "-d", path + ".so"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "NODELETE" in out, out


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_c_program_runs_artifact(artifacts, model, tmp_path):
    """A C program compiled against name.h and linked with name.so (no Python in that
    process) trains two steps; outputs and parameters equal the reference interpreter's."""
    g, _, path = artifacts[model]
    m = json.loads(pathlib.Path(path + ".json").read_text())
    inputs = MODELS[model][1](np.random.default_rng(2))
    by_name = dict(zip([v.name for v in g.inputs], inputs))
    for i, spec in enumerate(m["inputs"]):
        arr = np.ascontiguousarray(by_name[spec["name"]])
        assert list(arr.shape) == spec["shape"]
        arr.tofile(tmp_path / f"in{i}.bin")
    driver = _build_driver(path, tmp_path)
    r = _run_driver(driver, path + ".weights", tmp_path, 2)
    assert r.returncode == 0, r.stderr
    want, want_params = _reference_steps(g, inputs, 2)
    for i, spec in enumerate(m["outputs"]):
        dt = gc.dtypes.dtype(spec["dtype"]).np_dtype
        got = np.fromfile(tmp_path / f"out{i}.bin", dt).reshape(spec["shape"])
        _assert_close(got, want[i], f"C output {i}")
    params = [t for t in m["tensors"] if t["kind"] == "param"]
    for i, t in enumerate(params):
        got = np.fromfile(tmp_path / f"param{i}.bin", gc.dtypes.dtype(t["dtype"]).np_dtype).reshape(t["shape"])
        _assert_close(got, want_params[t["name"]], f"C parameter {t['name']}")


# --- a small artifact for the error cases ------------------------------------------------------

def _tiny_graph():
    g = gc.Graph("tiny")
    with g:
        x = gc.placeholder("x", (4, 3), "f32")
        idx = gc.placeholder("idx", (4,), "i32")
        w = gc.param("w", (10, 3), value=np.arange(30, dtype=np.float32).reshape(10, 3) / 7)
        y = gc.exp(x) * 2 + gc.take(w, idx)
        g.set_outputs([y, y.sum()])
    return g


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny") / "tiny")
    gc.export(_tiny_graph(), None, path)
    return path


def _copy(path: str, tmp: pathlib.Path) -> str:
    for ext in ("so", "h", "weights", "json", "gcir"):
        shutil.copy(f"{path}.{ext}", tmp / f"tiny.{ext}")
    return str(tmp / "tiny")


def _tiny_inputs():
    return np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), np.array([0, 9, 3, 3], np.int32)


def test_tiny_artifact_and_kernel_errors(tiny):
    exe = gc.load(tiny)
    ref = gc.compile(_tiny_graph(), backend="reference")
    x, idx = _tiny_inputs()
    for a, b in zip(exe(x, idx), ref(x, idx)):
        _assert_close(a, b, "tiny")
    with pytest.raises(gc.InputError, match="expected shape"):
        exe(x[:2], idx)
    with pytest.raises(gc.GraphcError, match="(?i)out of range|index"):
        exe(x, np.array([0, 10, 0, 0], np.int32))  # the compiled gather flags it


def test_concurrent_calls_each_get_their_own_model(tiny):
    from concurrent.futures import ThreadPoolExecutor
    exe = gc.load(tiny)
    ref = gc.compile(_tiny_graph(), backend="reference")
    rng = np.random.default_rng(4)
    cases = [(rng.standard_normal((4, 3)).astype(np.float32), rng.integers(0, 10, 4).astype(np.int32))
             for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: exe(*c), cases))
    for c, got in zip(cases, results):
        for a, b in zip(got, ref(*c)):
            _assert_close(a, b, "concurrent call")


def test_export_of_compiled_executable_keeps_trained_parameters(tmp_path):
    exe = gc.compile(_tiny_graph(), backend="llvm")
    exe.params["w"] = np.full((10, 3), 0.5, np.float32)
    gc.export(exe, None, str(tmp_path / "trained"))
    loaded = gc.load(str(tmp_path / "trained"))
    np.testing.assert_array_equal(loaded.params["w"], exe.params["w"])
    x, idx = _tiny_inputs()
    for a, b in zip(loaded(x, idx), exe(x, idx)):
        _assert_close(a, b, "trained export")


def test_views_and_parameter_swaps_through_python_and_c(tmp_path):
    """Results that are views of an input or a parameter, and updates whose new value is
    another parameter (a swap: the C API stages them), over three steps."""
    g = gc.Graph("swap")
    with g:
        x = gc.placeholder("x", (2, 3), "f32")
        a = gc.param("a", (3,), value=np.array([1, 2, 3], np.float32))
        b = gc.param("b", (3,), value=np.array([4, 5, 6], np.float32))
        g.set_outputs([gc.reshape(x, (3, 2)), x * 2, a + 0], updates={a: b, b: a})
    path = str(tmp_path / "swap")
    gc.export(g, None, path)
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    exe, ref = gc.load(path), gc.compile(g, backend="reference")
    for _ in range(3):
        for p, q in zip(exe(xv), ref(xv)):
            np.testing.assert_array_equal(p, q)
    for name in ("a", "b"):
        np.testing.assert_array_equal(exe.params[name], ref.params[name])
    xv.tofile(tmp_path / "in0.bin")
    r = _run_driver(_build_driver(path, tmp_path), path + ".weights", tmp_path, 3)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out0.bin", np.float32), xv.reshape(-1))
    np.testing.assert_array_equal(np.fromfile(tmp_path / "param0.bin", np.float32), ref.params["a"])
    np.testing.assert_array_equal(np.fromfile(tmp_path / "param1.bin", np.float32), ref.params["b"])


def test_reexport_in_place_loads_the_new_code(tmp_path):
    """The dynamic loader caches libraries by path; a re-exported artifact must not run
    the old code."""
    path = str(tmp_path / "same")
    x = np.linspace(-2, 2, 5, dtype=np.float32)
    results = []
    for fn in (gc.exp, gc.tanh):
        g = gc.Graph("same")
        with g:
            g.set_outputs([fn(gc.placeholder("x", (5,), "f32"))])
        gc.export(g, None, path)
        results.append(gc.load(path)(x)[0])
    _assert_close(results[0], np.exp(x), "first export")
    _assert_close(results[1], np.tanh(x), "re-export at the same path")


def test_other_format_version_is_refused(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    m = json.loads(pathlib.Path(path + ".json").read_text())
    m["format_version"] = 99
    pathlib.Path(path + ".json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="format version 99.*export it again"):
        gc.load(path)


@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_damaged_weights_are_refused_by_python_and_c(tiny, tmp_path, damage):
    path = _copy(tiny, tmp_path)
    w = bytearray(pathlib.Path(path + ".weights").read_bytes())
    if damage == "truncate":
        w = w[:len(w) // 2]
    else:
        w[5] ^= 0x40
    pathlib.Path(path + ".weights").write_bytes(bytes(w))
    with pytest.raises(ArtifactError, match="truncated" if damage == "truncate" else "altered"):
        gc.load(path)
    # the C API checks on its own (a C program never reads the manifest)
    x, idx = _tiny_inputs()
    x.tofile(tmp_path / "in0.bin")
    idx.tofile(tmp_path / "in1.bin")
    r = _run_driver(_build_driver(path, tmp_path), path + ".weights", tmp_path, 1)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert ("truncated" if damage == "truncate" else "altered") in r.stderr


def test_altered_library_is_refused(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    so = bytearray(pathlib.Path(path + ".so").read_bytes())
    so[-100] ^= 0xFF
    pathlib.Path(path + ".so").write_bytes(bytes(so))
    with pytest.raises(ArtifactError, match=r"tiny\.so does not match the manifest's library_sha256"):
        gc.load(path)
    # a C program's loader refuses it too, before dlopen (exit 5: <prefix>_open failed)
    x, idx = _tiny_inputs()
    x.tofile(tmp_path / "in0.bin")
    idx.tofile(tmp_path / "in1.bin")
    r = _run_driver(_build_driver(path, tmp_path), path + ".weights", tmp_path, 1)
    assert r.returncode == 5 and "does not match this header" in r.stderr, (r.returncode, r.stderr)


def test_missing_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="not a graphc artifact"):
        gc.load(str(tmp_path / "nothing"))


def test_missing_cpu_features_are_refused(tiny, tmp_path, monkeypatch):
    """An artifact whose manifest needs features this CPU lacks is refused before any of
    its code runs (simulated: the CPU flags are read without AVX2)."""
    flags = gc.aot.host_cpu_flags()
    if flags is None or "avx2" not in flags:
        pytest.skip("needs an x86 CPU with AVX2 to simulate its absence")
    monkeypatch.setattr(gc.aot, "host_cpu_flags", lambda: flags - {"avx2", "fma"})
    with pytest.raises(ArtifactError, match="lacks: .*avx2"):
        gc.load(tiny)


def test_avx512_artifact_on_a_machine_without_avx512(tmp_path):
    """Cross-compiled for AVX-512: this machine (if it lacks AVX-512) refuses it in Python
    and in C with a message, never SIGILL."""
    flags = gc.aot.host_cpu_flags()
    if flags is None or "avx512f" in flags:
        pytest.skip("needs an x86 CPU without AVX-512")
    g = gc.Graph("wide")
    with g:
        x = gc.placeholder("x", (64,), "f32")
        g.set_outputs([gc.tanh(x) * 3])
    path = str(tmp_path / "wide")
    gc.export(g, None, path, cpu="skylake-avx512", features="+avx512f,+avx512bw,+avx512dq,+avx512vl")
    assert "avx512f" in json.loads(pathlib.Path(path + ".json").read_text())["target"]["features"]
    with pytest.raises(ArtifactError, match="avx512f"):
        gc.load(path)
    np.zeros(64, np.float32).tofile(tmp_path / "in0.bin")
    r = _run_driver(_build_driver(path, tmp_path), path + ".weights", tmp_path, 1)
    assert r.returncode == 2 and "avx512" in r.stderr, (r.returncode, r.stderr)


def test_exported_jit_function(tmp_path):
    @gc.jit
    def f(x, p):
        return np.tanh(x @ p["w"] + p["b"]).sum(axis=1)

    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    p = {"b": rng.standard_normal(4).astype(np.float32), "w": rng.standard_normal((5, 4)).astype(np.float32)}
    gc.export(f, (x, p), str(tmp_path / "f"))
    exe = gc.load(str(tmp_path / "f"))
    m = exe.manifest
    assert [i["name"] for i in m["inputs"]] == ["x", "p_b", "p_w"]  # flattened argument paths
    got = exe(x, p["b"], p["w"])
    _assert_close(got[0] if isinstance(got, tuple) else got, np.tanh(x @ p["w"] + p["b"]).sum(axis=1), "jit export")
