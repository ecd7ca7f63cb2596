"""Finding the CUDA toolkit for pycuda's build (backends/cuda/toolkit.py), on fake layouts:
a wrapper nvcc on PATH (pycuda's own guess, two directories up, has no cuda.h), CUDA_HOME
first, nothing found."""
from __future__ import annotations

import stat

from graphc.backends.cuda.toolkit import find_toolkit
from graphc.cli import main


def _toolkit(root):
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_bytes(b"\x7fELF" + b"\0" * 8192)  # a "binary"
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    (root / "include" / "cuda.h").write_text("/* cuda */\n")
    return root


def _wrapper(bindir, target):
    bindir.mkdir(parents=True)
    w = bindir / "nvcc"
    w.write_text(f'#!/bin/sh\nexec {target}/bin/nvcc "$@"\n')
    w.chmod(0o755)
    return bindir


def test_a_wrapper_script_on_path_leads_to_the_toolkit_it_runs(tmp_path):
    kit = _toolkit(tmp_path / "opt" / "cuda-12.8")
    bindir = _wrapper(tmp_path / "usr" / "bin", kit)
    assert find_toolkit({"PATH": str(bindir)}) == kit


def test_cuda_home_comes_first(tmp_path):
    a, b = _toolkit(tmp_path / "a"), _toolkit(tmp_path / "b")
    bindir = _wrapper(tmp_path / "w", b)
    assert find_toolkit({"PATH": str(bindir), "CUDA_HOME": str(a)}) == a
    assert find_toolkit({"PATH": str(bindir), "CUDA_HOME": str(tmp_path / "none")}) == b


def test_a_directory_without_cuda_h_is_no_toolkit(tmp_path, monkeypatch):
    kit = _toolkit(tmp_path / "kit")
    (kit / "include" / "cuda.h").unlink()
    found = find_toolkit({"PATH": str(kit / "bin"), "CUDA_HOME": str(kit)})
    assert found is None or found != kit  # (a real /usr/local/cuda may still be found)


def test_install_cuda_dry_run_names_the_toolkit_and_driver(tmp_path, monkeypatch, capsys):
    from graphc.backends.cuda import toolkit
    kit = _toolkit(tmp_path / "kit")
    monkeypatch.setenv("CUDA_HOME", str(kit))
    monkeypatch.setattr(toolkit, "driver_library", lambda root=None: "libcuda.so.1")
    assert main(["install-cuda", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"CUDA toolkit: {kit}" in out and "libcuda.so.1" in out and "pycuda" in out
    monkeypatch.setattr(toolkit, "driver_library", lambda root=None: None)  # no driver: refused
    assert main(["install-cuda", "--dry-run"]) == 1               # before minutes of building
    assert "libcuda.so" in capsys.readouterr().err


def test_the_build_environment_points_pycuda_at_the_toolkit(tmp_path):
    from graphc.backends.cuda.toolkit import pycuda_build_env
    kit = _toolkit(tmp_path / "kit")
    (kit / "lib64" / "stubs").mkdir(parents=True)
    env = pycuda_build_env(kit, tmp_path / "home")
    conf = {}
    exec((tmp_path / "home" / ".aksetup-defaults.py").read_text(), conf)
    assert conf["CUDA_ROOT"] == str(kit) and conf["CUDA_ENABLE_CURAND"] is False  # no curand.h
    assert str(kit / "lib64" / "stubs") in conf["CUDADRV_LIB_DIR"]
    assert env["PATH"].split(":")[0] == str(kit / "bin") and env["HOME"] == str(tmp_path / "home")
    (kit / "include" / "curand.h").write_text("")
    pycuda_build_env(kit, tmp_path / "home")
    conf = {}
    exec((tmp_path / "home" / ".aksetup-defaults.py").read_text(), conf)
    assert conf["CUDA_ENABLE_CURAND"] is True
