"""available_backends() lists only what can run here; backend_status() says why not."""
from __future__ import annotations

import sys

import pytest

import graphc as gc
from graphc import backends


@pytest.fixture
def fresh_status(monkeypatch):
    monkeypatch.setattr(backends, "_status", {})
    return backends


def test_a_backend_whose_probe_fails_is_registered_but_not_available(fresh_status, monkeypatch):
    monkeypatch.setitem(backends._BACKENDS, "fake", lambda: None)
    monkeypatch.setitem(backends._NEEDS, "fake", backends.Needs())
    monkeypatch.setitem(backends._PROBES, "fake", lambda: "no fake device")
    assert "fake" in backends.registered_backends() and "fake" not in gc.available_backends()
    assert gc.backend_status()["fake"] == "no fake device"
    monkeypatch.setitem(backends._PROBES, "broken", lambda: 1 / 0)
    monkeypatch.setitem(backends._BACKENDS, "broken", lambda: None)
    assert gc.backend_status()["broken"].startswith("ZeroDivisionError")  # a broken probe says so


def test_cuda_without_pycuda_says_what_to_install(fresh_status, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)  # import pycuda now fails
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    from graphc.backends.cuda import runtime
    monkeypatch.setattr(runtime, "_device", {})
    why = gc.backend_status()["cuda"]
    assert "pycuda" in why and "graphc-compiler[cuda]" in why
    assert "cuda" not in gc.available_backends() and "cuda" in backends.registered_backends()
    assert {"llvm", "reference"} <= set(gc.available_backends())


def test_cuda_is_available_where_the_device_answers(fresh_status, monkeypatch, tmp_path_factory):
    from graphc.backends.cuda import emulator
    if not emulator.available():
        pytest.skip("no C++ compiler for the emulator")
    from tests.backends import fake_pycuda
    fake_pycuda.install(monkeypatch, tmp_path_factory.getbasetemp() / "fake-gpu")
    from graphc.backends.cuda import nvcc
    monkeypatch.setattr(nvcc, "find_nvcc", lambda: "/usr/local/bin/nvcc")
    assert gc.backend_status()["cuda"] is None and "cuda" in gc.available_backends()
