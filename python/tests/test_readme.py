"""The README's Python example, run as written: a user copying it must get no error."""

import shlex
import tomllib

from conftest import README, ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


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


def installed_by_readme_before(marker: str) -> list[Requirement]:
    """What a reader who runs the README's `pip install` lines from the top has asked for by the line holding
    ``marker``: `./python[extras]` stands for fedsoft's own dependencies and those extras."""
    text = README.read_text()
    assert marker in text, f"the README never runs `{marker}`"
    project = tomllib.loads((ROOT / "python" / "pyproject.toml").read_text())["project"]
    known = project["optional-dependencies"]
    wanted = []
    for line in text[: text.index(marker)].splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("pip install "):
            continue
        for token in shlex.split(line)[2:]:
            if token.startswith("-"):  # pip's own options
                continue
            if token.startswith("./python"):
                extras = token[len("./python") :].strip("[]")
                wanted += [Requirement(r) for r in project["dependencies"]]
                for extra in filter(None, extras.split(",")):
                    assert extra in known, f"the README installs ./python[{extra}]; the extras are {sorted(known)}"
                    wanted += [Requirement(r) for r in known[extra]]
            else:
                wanted.append(Requirement(token))
    return wanted


def test_the_readmes_pip_lines_install_what_each_example_app_needs():
    # `flwr run` of an app without Flower's simulation extra fails with exit code 701 and still returns 0, so
    # an install line short of it leaves a reader with a command that silently does nothing.
    for app in sorted((ROOT / "python" / "examples").iterdir()):
        if not (app / "pyproject.toml").is_file():
            continue
        installed = installed_by_readme_before(f"cd python/examples/{app.name}")
        needs = tomllib.loads((app / "pyproject.toml").read_text())["project"]["dependencies"]
        for need in map(Requirement, needs):
            covering = [r for r in installed if canonicalize_name(r.name) == canonicalize_name(need.name)]
            assert any(need.extras <= r.extras for r in covering), (
                f"{app.name} needs {need}; the README's pip lines before it install only {covering or 'nothing'} of it"
            )
