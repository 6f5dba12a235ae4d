"""The README's examples run as a new user runs them: the trace / compare walk-through, command by
command from a clone, its printed output included (numbers aside); and what the setup says a test needs."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
FLOAT = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")   # values that may move in the last digits between op sets


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else len(README)]


def console_steps(block: str) -> list[tuple[str, list[str]]]:
    """[(command, the output lines the README shows after it)] of a console block."""
    steps = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def masked(lines) -> list[str]:
    return [FLOAT.sub("#", line.rstrip()) for line in lines]


def test_trace_and_compare_walk_through_runs_as_written(tmp_path):
    """From a clone's root: the tests/ folder is there, `minibert` and `python` are on the PATH."""
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    (bin_dir / "minibert").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m minibert "$@"\n')
    (bin_dir / "minibert").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p]))

    ran, status = [], None
    for kind, body in BLOCK.findall(section("Checking another backend")):
        if kind == "python":
            done = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            ran.append("python")
            continue
        if kind != "console":
            continue
        for command, shown in console_steps(body):
            if command == "echo $?":
                assert shown == [str(status)], f"the README says exit status {shown}, the command gave {status}"
                continue
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=300)
            status = done.returncode
            assert "Traceback" not in done.stderr and "error" not in done.stderr, (command, done.stderr)
            assert masked(done.stdout.splitlines()) == masked(shown), (command, done.stdout)
            ran.append(command.split()[0:2])
    assert ran.count(["minibert", "compare"]) == 2 and ["minibert", "trace"] in ran and "python" in ran, ran


def test_the_test_command_says_which_test_needs_chromium():
    setup = " ".join(section("Set up").split())
    assert "Chromium" in setup and "apt-get install chromium" in setup and "`.ci/run` installs it" in setup


def test_the_architecture_table_has_a_row_for_every_family():
    """Every registered family's model_type is named in a row of the Architectures table."""
    from minibert.models import FAMILIES

    start = README.index("\n### Architectures")
    table = [line for line in README[start:README.index("\n### ", start + 1)].splitlines() if line.startswith("| ")]
    missing = [t for f in FAMILIES for t in f.model_types
               if not any(f"(`{t}`" in row or f"`{t}`)" in row or f"(`{t}`," in row for row in table)]
    assert not missing, f"model_types without a row in the README's Architectures table: {missing}"
