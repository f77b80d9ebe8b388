"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = _bash_blocks(readme)
    test_cmd = next(b for b in blocks if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines, "the README's test command must appear verbatim in .ci/run"


def test_readme_snippet_imports_ringkernel_before_numba_cuda() -> None:
    """Imported after ringkernel, numba.cuda runs on the simulator when there is no GPU (docs/index.md)."""
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = code.splitlines()
    first_ringkernel = next(i for i, line in enumerate(lines) if re.match(r"(from|import) ringkernel\b", line))
    first_numba_cuda = next(i for i, line in enumerate(lines) if re.match(r"(from numba import cuda|import numba\.cuda)\b", line))
    assert first_ringkernel < first_numba_cuda


def test_readme_states_how_the_backend_is_chosen() -> None:
    requirements = (ROOT / "README.md").read_text().split("## Requirements", 1)[1].split("\n## ", 1)[0]
    assert "RINGKERNEL_SIMULATOR" in requirements and "optional" in requirements


def test_readme_demo_command_runs_the_demo() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert any(b.endswith("ringkernel demo") and "pip install ." in b for b in blocks)
