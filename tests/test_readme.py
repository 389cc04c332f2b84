"""Every Python snippet of the README runs, each as a script (``__name__ == "__main__"``, its own
file and namespace, no guard: what a reader who pastes it into a file gets).

The snippets run in order in one scratch directory (the history snippet reads the comparison the
first one writes) and in one child process (``runpy.run_path(..., run_name="__main__")``: each
snippet is the ``__main__`` module while it runs, so a process pool sees it as the calling
script), with the repository root on ``PYTHONPATH`` as the README asks for ``from strategies...``.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNNER = """
import runpy, sys, traceback
for path in sys.argv[1:]:
    try:
        runpy.run_path(path, run_name="__main__")
    except BaseException:
        print(f"FAILED {path}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"ok {path}", flush=True)
"""


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_every_readme_snippet_runs_as_a_script(tmp_path):
    found = snippets()
    assert len(found) >= 8
    paths = []
    for i, code in enumerate(found):
        paths.append(tmp_path / f"snippet_{i}.py")
        paths[-1].write_text(code, encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "runner.py", *map(str, paths)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    failed = re.search(r"FAILED .*snippet_(\d+)", done.stderr)
    assert done.returncode == 0, (f"README snippet failed:\n{found[int(failed.group(1))] if failed else ''}\n"
                                  f"{done.stderr[-3000:]}")
    assert done.stdout.count("ok ") == len(found)
    # the comparison ran in worker processes, called from a script without a __main__ guard
    assert (tmp_path / "out" / "cmp" / "results.parquet").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "cmp" / "history").iterdir()) == [
        "run_id=10x", "run_id=1x", "run_id=3x"]
