"""The README's Python example, run as written: a user copying it must get no error."""

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    blocks, inside, lines = [], False, []
    for line in text.splitlines():
        if line.strip() == "```python":
            inside, lines = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(lines))
        elif inside:
            lines.append(line)
    return blocks


def test_the_readmes_python_example_runs_as_written():
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no Python example"
    for code in blocks:
        scope: dict = {}
        exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own example
        # The example's own claims hold (its asserts ran), and it produced what it names.
        assert scope["up"].nnz == scope["fedsoft"].upload_budget("soft", scope["local"].shapes, 0.9)
        assert 0.0 <= scope["ctrl"].choose(0, 10, 1.0) < 1.0
