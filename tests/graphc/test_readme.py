"""The README, true to the letter: every fenced code block of README.md runs as written.

- ```python blocks run one by one, each on its own (no block may rely on an earlier one),
  in a subprocess with this repository's venv python, in a fresh temporary directory.
- ```sh blocks run in bash (-e: every command must succeed) in a fresh temporary
  directory where `examples/`, `tests/` and `.venv/` are this checkout's and the venv's
  bin/ leads PATH (so `graphc` and `python` are the project's). Two kinds of command are
  checked as text instead of run: creating the venv and installing into it
  (`python3 -m venv .venv`, `.venv/bin/pip install -q -e SPEC`: SPEC's extras must exist in
  pyproject.toml) and running the whole test suite (`.venv/bin/python -m pytest`: the
  block must be exactly the command .ci/run runs, which is CI itself).
- Blocks without a language (or ```text) are shown output, not run.
- Opt-out: an HTML comment `<!-- readme-test: skip REASON -->` on the line right before a
  fence skips that block (for one that would take more than ~20 s); REASON is required.
  No block uses it today.
A block in any other language fails here until this test knows how to check it.
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = pathlib.Path(sys.executable).parent
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                   re.M | re.S)
INSTALL = re.compile(r"^\.venv/bin/pip install -q -e (?P<spec>\S+)$")


@dataclass
class Block:
    line: int
    lang: str
    body: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.lang or 'output'}"


def blocks(text: str) -> list[Block]:
    """Every fenced block, dedented, with its language and the line its fence opens on."""
    out = []
    lines = text.splitlines()
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        indent = len(m.group("indent"))
        body = "\n".join(ln[indent:] for ln in m.group("body").splitlines()) + "\n"
        before = lines[line - 2] if line >= 2 else ""
        skip = SKIP.search(before)
        out.append(Block(line, m.group("info").strip(), body, skip.group("reason") if skip else None))
    return out


BLOCKS = blocks(README.read_text(encoding="utf-8"))
RUN = [b for b in BLOCKS if b.lang not in ("", "text")]


def _workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    for name in ("examples", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # the installed package, as a user has it
    return env


def _run(cmd: list[str], cwd: pathlib.Path, block: Block) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (f"{block.id} fails as written (exit {r.returncode}):\n{block.body}\n"
                               f"--- stdout ---\n{r.stdout[-3000:]}\n--- stderr ---\n{r.stderr[-3000:]}")


def _ci_command() -> str:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert len(lines) == 1, f".ci/run should run one command line, has {lines}"
    return lines[0].strip()


def _check_install(segment: str, block: Block) -> None:
    m = INSTALL.match(segment)
    assert m, f"{block.id}: unexpected install command {segment!r}"
    spec = shlex.split(m.group("spec"))[0]
    base, _, extras = spec.partition("[")
    assert base == ".", f"{block.id}: installs {spec!r}, not this checkout"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in filter(None, extras.rstrip("]").split(",")):
        assert extra in declared, f"{block.id}: extra {extra!r} is not in pyproject.toml ({sorted(declared)})"


def _runnable_shell(block: Block) -> str:
    """The block's commands left to run once venv creation, installs and the whole-suite
    run (checked as text here) are taken out."""
    kept = []
    for line in block.body.splitlines():
        parts = [p.strip() for p in line.split("&&")]
        rest = []
        for part in parts:
            if part == "python3 -m venv .venv":
                continue
            if part.startswith(".venv/bin/pip install"):
                _check_install(part, block)
                continue
            if part.startswith(".venv/bin/python -m pytest"):
                assert line.strip() == _ci_command(), (
                    f"{block.id}: the test command {line.strip()!r} differs from .ci/run's "
                    f"{_ci_command()!r}")
                continue
            rest.append(part)
        if rest:
            kept.append(" && ".join(rest))
    return "\n".join(kept) + "\n"


def test_the_readme_has_the_blocks_this_test_knows():
    assert len(RUN) >= 6, [b.id for b in BLOCKS]  # the extractor finds them (or checks nothing)
    assert any(b.lang == "" for b in BLOCKS)  # the indented error example is an output block
    for b in BLOCKS:
        assert b.lang in ("", "text", "python", "sh"), f"{b.id}: no rule for ```{b.lang} blocks"
        if b.skip is not None:
            assert b.skip.strip(), f"{b.id}: a skipped block needs a reason"


def test_the_extractor_reads_indented_fences_and_skip_markers():
    text = "a\n<!-- readme-test: skip needs a GPU -->\n```sh\nnvidia-smi\n```\n  ```\n  out\n  ```\n"
    got = blocks(text)
    assert [(b.line, b.lang, b.body, b.skip) for b in got] == [
        (3, "sh", "nvidia-smi\n", "needs a GPU"), (6, "", "out\n", None)]


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_readme_block_runs_as_written(block, tmp_path):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    cwd = _workdir(tmp_path)
    if block.lang == "python":
        script = cwd / "block.py"
        script.write_text(block.body, encoding="utf-8")
        _run([str(VENV_BIN / "python"), str(script)], cwd, block)
    else:
        commands = _runnable_shell(block)
        if commands.strip():
            _run(["bash", "-e", "-o", "pipefail", "-c", commands], cwd, block)
