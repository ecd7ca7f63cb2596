"""Generated CUDA C executed on the CPU (backends/cuda/emulator.py) equals the
reference interpreter: every registry op, the GEMM variants (tensor-core f16 included),
long reductions, seeded random graphs and a CNN training step. This checks the code generator's output itself (indexing, thread
mapping, group reductions, GEMM tiling, dtype semantics) where no GPU is available; the
GPU conformance suite (`pytest -m cuda`, test_cuda_runtime.py) runs the same graphs on a
device.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import analysis as A
from graphc.backends.cuda import codegen

from tests.backends import cuda_emulator as emu
from tests.backends.cuda_programs import (epilogue_program, epilogue_reference, gemm_graphs, lowered,
                                          op_graphs, reduction_graphs, with_outputs)
from tests.backends.test_llvm_conformance import TOL, feeds_for
from tests.examples import digits_cnn
from tests.ir.random_graphs import build_random_graph

pytestmark = pytest.mark.skipif(not emu.available(), reason="no C++ compiler for the emulator")


BIG_TILES = codegen.CodegenOptions(big_gemm_tiles=1)  # the 128 x 128 GEMM kernel on small problems


def _cases():
    cases = [(n, g, None) for n, g in op_graphs(seeds=(0,), f16=True)]
    cases += [(n, g, None) for n, g in gemm_graphs()]
    cases += [(n + "_big_tiles", g, BIG_TILES) for n, g in gemm_graphs() if "f64" not in n]
    cases += [(n, g, None) for n, g in reduction_graphs()]
    cases += [(f"random_{seed}", with_outputs(build_random_graph(seed, max_nodes=10, special_values=False)), None)
              for seed in range(20)]
    cases.append(("digits_cnn_step", digits_cnn().build_train_step(batch=4, eval_batch=2), None))
    return cases


def _module(p, options, prefix: str) -> tuple[str, codegen.CudaModule]:
    """The program's CUDA C (for the shared library) and its launches."""
    body, launches, fns = codegen.render_body(p, options, prefix=prefix)
    return body, codegen.CudaModule("", launches, A.storage_map(p), p.arena_bytes, p.external(), fns)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """One CPU library for every case: {name: (graph, optimised graph, program, module)}."""
    built, bodies = {}, []
    for name, g, options in _cases():
        work, p = lowered(g)
        body, module = _module(p, options, "gc_" + codegen.sanitize(name))
        built[name] = (g, work, p, module)
        bodies.append(body)
    p = epilogue_program()
    body, module = _module(p, None, "gc_epilogue")
    built["gemm_epilogue"] = (None, None, p, module)
    bodies.append(body)
    functions = [f for *_, m in built.values() for f in m.functions]
    lib = emu.build(codegen.translation_unit(bodies), functions, tmp_path_factory.mktemp("emu"))
    return lib, built


def _feeds(ref, seed: int) -> dict[str, np.ndarray]:
    if ref.graph.name.startswith("digits_cnn"):  # labels must be classes
        images, labels = gc.load_digits()
        n = ref.graph.inputs[0].shape[0]
        return {"x": images[:n, None], "t": labels[:n]}
    return feeds_for(ref.graph, seed)


def _run_and_compare(lib, g, work, p, module, seed=0):
    ref = gc.compile(g, backend="reference")
    feeds = _feeds(ref, seed)
    params = {k: np.array(v) for k, v in ref.params.items()}
    want = ref(**{k: feeds[k] for k in ref.input_names})
    inputs = {buf: feeds[v.name] for v, buf in zip(work.inputs, p.inputs)}
    arrays = emu.external_arrays(p, inputs, params)
    emu.run(lib, module, arrays)
    assert arrays[p.status][0] == 0, p.errors
    got = [arrays[b] for b in p.outputs]
    for w, g_, v in zip(want, got, ref.graph.outputs):
        w = np.asarray(w).reshape(-1)
        t = TOL.get(v.dtype.name, 0)
        if v.dtype.is_float:
            np.testing.assert_allclose(g_, w, rtol=t, atol=t, equal_nan=True, err_msg=str(v))
        else:
            np.testing.assert_array_equal(g_, w, err_msg=str(v))
    for pname, buf in p.updates.items():
        np.testing.assert_allclose(arrays[buf], np.asarray(ref.params[pname]).reshape(-1),
                                   rtol=1e-3, atol=1e-5, err_msg=pname)


@pytest.mark.parametrize("name", [n for n, _, _ in _cases()])
def test_generated_cuda_matches_reference(emulated, name):
    lib, built = emulated
    _run_and_compare(lib, *built[name])


def test_fused_gemm_epilogue(emulated):
    lib, built = emulated
    _, _, p, module = built["gemm_epilogue"]
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal(37 * 23).astype(np.float32),
              "b": rng.standard_normal(23 * 29).astype(np.float32),
              "bias": rng.standard_normal(29).astype(np.float32), "c": np.zeros(37 * 29, np.float32)}
    emu.run(lib, module, arrays)
    np.testing.assert_allclose(arrays["c"], epilogue_reference(arrays), rtol=1e-5, atol=1e-5)
