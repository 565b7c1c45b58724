from pathlib import Path

import numpy as np
import pytest

import fedsoft


@pytest.fixture
def shapes():
    return [fedsoft.ModuleShape("q", 12, 10, 4), fedsoft.ModuleShape("v", 12, 10, 4), fedsoft.ModuleShape("o", 7, 9, 4)]


def random_factors(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return fedsoft.factors(
        [(s.name, rng.normal(size=(s.d, s.r)) * scale, rng.normal(size=(s.r, s.k)) * scale) for s in shapes]
    )


ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_command(first_line: str) -> str:
    """The README's shell block from the line starting with ``first_line`` to the block's end, as one command:
    comment lines left out, continuation lines joined, the first line (a ``cd``) dropped."""
    text = README.read_text()
    block = text[text.index(first_line) :]
    block = block[: block.index("```")]
    lines = [line for line in block.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#")]
    return " ".join(line.rstrip("\\").strip() for line in lines)
