"""One dump switch: gc.compile(dump_dir=...) / GRAPHC_DUMP_DIR write every stage of a
compile (graph passes, kernel IR steps, LLVM IR before/after optimisation, assembly, the
ledger and the memory plan) and an index; the CLI's dump flags honour --format and -o; DOT
draws fusion groups as clusters."""
from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends, backend_graph_passes
from graphc.cli import load_target, main
from graphc.compile import prepare
from graphc.ir.analysis import to_dot
from graphc.ir.compare import same_graph
from graphc.ir.jsonform import graph_to_json
from graphc.ir.observe import read_index
from graphc.passes.manager import Pipeline, standard_passes

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = f"{ROOT / 'examples' / 'digits_cnn.py'}:build_train_step"


def _step():
    g = gc.Graph("dumpstep")
    with g:
        x = gc.placeholder("x", (8, 16), "f32")
        w = gc.param("w", (16, 4), init=gc.init.normal(0.1, seed=0))
        loss = gc.mean(gc.softmax(gc.relu(x @ w)) * 3.0)
        (gw,) = gc.grad(loss, [w])
    return g, loss, {w: w - 0.1 * gw}


def _folder(exe) -> pathlib.Path:
    assert exe.dump_dir is not None
    return pathlib.Path(exe.dump_dir)


def test_compile_dumps_every_stage(tmp_path):
    g, loss, updates = _step()
    exe = gc.compile(g, outputs=[loss], updates=updates, backend="llvm", dump_dir=tmp_path)
    d = _folder(exe)
    assert d.parent == tmp_path and d.name == "001-dumpstep"
    rows = read_index(d)
    files = [f for f, _, _ in rows]
    assert sorted(files) == sorted(p.name for p in d.iterdir() if p.name != "index.txt")
    numbered = [f for f in files if re.match(r"\d\d-", f)]
    assert numbered == [f"{i:02d}-{f[3:]}" for i, f in enumerate(numbered)]  # in order, no gaps
    kinds = [k for _, k, _ in rows]
    # graph files: the input, one per ledger entry (same names, same order), the optimised
    graphs = [f for f, k, _ in rows if k == "graph"]
    assert graphs[0] == "00-input.gcir" and graphs[-1].endswith("-optimized.gcir")
    steps = ["lowered", "donate", "schedule", "memory"]  # ledger rows after the graph passes
    assert [e.name for e in exe.ledger][-4:] == steps
    assert [f[3:-5] for f in graphs[1:-1]] == [e.name for e in exe.ledger][:-4]
    for f in graphs:  # each parses back into a valid graph
        gc.parse((d / f).read_text()).verify()
    last_pass = gc.parse((d / graphs[-2]).read_text())
    assert same_graph(gc.parse((d / graphs[-1]).read_text()), exe.graph) is None
    assert len(last_pass.nodes) >= len(exe.graph.nodes)
    # kernel IR: after lowering and each kernel-IR step, the last one what the code ran
    kernels = [f for f, k, _ in rows if k == "kernel"]
    assert [re.sub(r"^\d\d-kernel-|\.kir$", "", f) for f in kernels] == steps
    program = exe.compiled.program
    assert (d / kernels[-1]).read_text().rstrip("\n") == str(program).rstrip("\n")
    assert (d / "memory-plan.txt").read_text().rstrip("\n") == str(program.memory_plan)
    assert (d / "ledger.txt").read_text().rstrip("\n") == str(exe.ledger)
    # LLVM IR before and after optimisation, and the assembly, of the program's module
    import llvmlite.binding as llvm
    name = program.name
    for stem in (f"llvm-{name}.ll", f"llvm-{name}.opt.ll"):
        (f,) = [f for f in files if f.endswith(stem)]
        mod = llvm.parse_assembly((d / f).read_text())
        mod.verify()
        assert mod.get_function(f"{name}_entry") is not None
    (asm,) = [f for f in files if f.endswith(f"-{name}.s")]
    assert re.search(rf"^{re.escape(name)}_entry:", (d / asm).read_text(), re.M)
    assert files.index(kernels[-1]) < files.index(asm)
    assert kinds.count("ledger") == 1 and kinds.count("memory") == 1


def test_dumping_bypasses_the_cache_and_numbers_each_compile(tmp_path, monkeypatch):
    """Compiled twice (the second would hit the memory cache), each compile gets its own
    folder with the LLVM stages in it; GRAPHC_DUMP_DIR does the same as dump_dir."""
    monkeypatch.setenv("GRAPHC_DUMP_DIR", str(tmp_path))
    g, loss, updates = _step()
    a = gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    b = gc.compile(g, outputs=[loss], updates=updates, backend="llvm")
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["001-dumpstep", "002-dumpstep"]
    for exe in (a, b):
        assert any(f.endswith(".opt.ll") for f, _, _ in read_index(_folder(exe)))
    x = np.random.default_rng(0).random((8, 16), np.float32)
    np.testing.assert_array_equal(a(x=x)[0], b(x=x)[0])
    monkeypatch.delenv("GRAPHC_DUMP_DIR")
    assert gc.compile(g, outputs=[loss], backend="reference").dump_dir is None


def test_dump_dir_must_be_a_path():
    g, loss, _ = _step()
    with pytest.raises(gc.GraphcError, match="dump_dir must be a directory path"):
        gc.compile(g, outputs=[loss], dump_dir=3)


def _pipeline_graphs():
    """The example after each llvm -O2 pass, computed here without the CLI."""
    g = load_target(EXAMPLE)
    seen = {}
    Pipeline(standard_passes(2, backend_graph_passes("llvm")),
             on_pass=lambda name, graph: seen.__setitem__(name, graph.copy())).run(g)
    return seen


def test_cli_after_honours_format_and_output(tmp_path, capsys):
    want = _pipeline_graphs()
    out = tmp_path / "after.json"
    assert main(["dump", EXAMPLE, "--after", "fusion", "--after", "simplify", "--format", "json",
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    doc = json.loads(out.read_text())
    assert [a["pass"] for a in doc["after"]] == ["simplify", "fusion"]  # pipeline order
    for a in doc["after"]:
        assert a["graph"] == graph_to_json(want[a["pass"]])
    text = tmp_path / "after.gcir"
    assert main(["dump", EXAMPLE, "--after", "fusion", "-o", str(text)]) == 0
    body = text.read_text()
    assert body.startswith("// IR after fusion\n")
    assert same_graph(gc.parse(body.split("\n", 1)[1]), want["fusion"]) is None
    assert main(["dump", EXAMPLE, "--after", "fusion", "--format", "dot"]) == 0
    assert capsys.readouterr().out.strip() == "// IR after fusion\n" + to_dot(want["fusion"]).strip()


def test_cli_report_honours_format_and_output(tmp_path, capsys):
    out = tmp_path / "ledger.json"
    assert main(["dump", EXAMPLE, "--report", "--format", "json", "-o", str(out)]) == 0
    entries = json.loads(out.read_text())["ledger"]
    names = [p.name for p in standard_passes(2, backend_graph_passes("llvm"))]
    names += ["lowered", "donate", "schedule", "memory"]  # the kernel-IR steps follow
    assert [e["name"] for e in entries] == names
    for e in entries:
        assert e["nodes_after"] >= 0 and e["seconds"] >= 0 and isinstance(e["details"], dict)
    want = _pipeline_graphs()
    graph_rows = entries[:-4]
    assert graph_rows[-1]["nodes_after"] == len(want[graph_rows[-1]["name"]].nodes)
    program = _planned_program(want[graph_rows[-1]["name"]])
    assert entries[-1]["nodes_after"] == len(program.kernels)  # kernels, after the memory plan
    assert main(["dump", EXAMPLE, "--report"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [ln.split()[0] for ln in table[2:] if ln and not ln.startswith(" ")]  # not the notes
    assert table[0].split()[:2] == ["pass", "ms"] and rows == names
    assert main(["dump", EXAMPLE, "--report", "--format", "dot"]) == 1
    assert "--report prints the pass ledger" in capsys.readouterr().err


def _planned_program(optimised):
    from graphc.backends import backend_needs
    from graphc.pipeline import lower_program
    return lower_program(optimised.copy(), backend_needs("llvm"))


def test_cli_after_a_kernel_ir_step_prints_the_planned_program(capsys):
    """`--after memory` is the program gc.compile runs (the pipeline's, arena offsets and
    all); an unknown kernel step names the ones there are."""
    assert main(["dump", EXAMPLE, "--after", "memory"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("// kernel IR after memory\n")
    want = _planned_program(_pipeline_graphs()["fusion"])
    assert out.split("\n", 1)[1].strip() == str(want).strip()
    g, _ = prepare(load_target(EXAMPLE))
    exe = gc.compile(g)
    assert str(exe.program).strip() == str(want).strip()
    assert main(["dump", EXAMPLE, "--after", "layout"]) == 1
    assert "lowered, donate, schedule, memory" in capsys.readouterr().err


def test_cli_all_stages_honours_format_and_output(tmp_path, capsys):
    stages, listing = tmp_path / "stages", tmp_path / "listing.txt"
    assert main(["dump", EXAMPLE, "--all-stages", str(stages), "--format", "dot", "-o", str(listing)]) == 0
    rows = read_index(stages)
    names = [p.name for p in standard_passes(2, backend_graph_passes("llvm"))]
    assert [f for f, _, _ in rows] == [f"{i:02d}-{n}.dot" for i, n in enumerate(["input"] + names)]
    assert sorted(p.name for p in stages.iterdir()) == sorted([f for f, _, _ in rows] + ["index.txt"])
    want = _pipeline_graphs()
    assert (stages / rows[-1][0]).read_text() == to_dot(want["fusion"])
    text = listing.read_text()
    assert all(f in text for f, _, _ in rows)
    assert main(["dump", EXAMPLE, "--all-stages", str(stages), "--format", "json"]) == 0  # again
    doc = json.loads(capsys.readouterr().out)
    assert [pathlib.Path(s["file"]).name for s in doc["stages"]] == \
        [f"{i:02d}-{n}.json" for i, n in enumerate(["input"] + names)]
    assert [f for f, _, _ in read_index(stages)] == [pathlib.Path(s["file"]).name for s in doc["stages"]]


def test_cli_dump_of_a_python_file_without_function(capsys):
    path = str(ROOT / "examples" / "digits_cnn.py")
    for target in (path, path + ":"):
        assert main(["dump", target]) == 1
        err = capsys.readouterr().err
        assert f"{path}:FUNCTION" in err and "build_train_step" in err
        assert "ParseError" not in err and "expected 'graph'" not in err


def test_cli_dump_artifact_honours_format(tmp_path, capsys):
    g = gc.Graph("art")
    with g:
        x = gc.placeholder("x", (4, 3), "f32")
        g.set_outputs([gc.softmax(x * 2.0)])
    gc.export(g, None, str(tmp_path / "art"))
    stored = gc.parse((tmp_path / "art.gcir").read_text())
    from graphc.ir.summary import summarize
    assert main(["dump", str(tmp_path / "art"), "--format", "summary"]) == 0
    assert capsys.readouterr().out.strip() == summarize(stored).strip()
    assert main(["dump", str(tmp_path / "art"), "--format", "dot", "-o", str(tmp_path / "a.dot")]) == 0
    assert (tmp_path / "a.dot").read_text() == to_dot(stored)
    assert main(["dump", str(tmp_path / "art")]) == 0  # text: the IR and the manifest, as before
    assert "// manifest" in capsys.readouterr().out


def test_dot_draws_fusion_groups_as_clusters():
    g, _ = prepare(load_target(EXAMPLE))
    Pipeline(standard_passes(2, backend_graph_passes("llvm"))).run(g)
    dot = to_dot(g)
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(g.nodes):
        if n.group is not None:
            groups.setdefault(n.group, []).append(i)
    assert len(groups) >= 2
    clusters = dict(re.findall(r"subgraph cluster_group(\d+) \{\n(.*?)\n  \}", dot, re.S))
    assert sorted(map(int, clusters)) == sorted(groups)
    for gid, members in groups.items():
        declared = re.findall(r"^    (n\d+) \[label=", clusters[str(gid)], re.M)
        assert declared == [f"n{i}" for i in members]
    declared_all = re.findall(r"^\s+(n\d+) \[label=", dot, re.M)
    assert sorted(declared_all) == sorted(f"n{i}" for i in range(len(g.nodes)))  # each once
