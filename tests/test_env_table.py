"""The README's environment-variable table lists exactly the GRAPHC_* variables the code
and the tests read from the environment (a new one undocumented, or a stale row, fails)."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ["graphc", "ir", "passes", "backends", "tests", "benchmarks", "examples"]
# reads: os.environ.get("X"), os.environ["X"], os.getenv("X"), a module's ENV_VAR = "X"
READ = re.compile(r"""(?:environ(?:\.get)?\(?\[?|getenv\(|ENV_VAR\s*=\s*)\s*["'](GRAPHC_[A-Z0-9_]+)["']""")


def _read_by_code() -> dict[str, str]:
    found: dict[str, str] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.resolve() == pathlib.Path(__file__).resolve():
                continue
            for m in READ.finditer(path.read_text(encoding="utf-8")):
                found.setdefault(m.group(1), str(path.relative_to(ROOT)))
    return found


def _documented() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `GRAPHC_")]
    return {name for row in rows for name in re.findall(r"`(GRAPHC_[A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_table_lists_every_variable_the_code_reads():
    read = _read_by_code()
    documented = _documented()
    assert len(read) >= 10, read  # the scan itself works
    missing = {k: v for k, v in read.items() if k not in documented}
    assert not missing, f"read but not in the README's table: {missing}"
    stale = documented - set(read)
    assert not stale, f"in the README's table but read nowhere: {sorted(stale)}"
