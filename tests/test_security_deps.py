"""Dependencies are pinned: constraints.txt pins every package, and every install uses it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = {"fastapi", "uvicorn", "httpx", "pydantic-settings", "orjson", "gradio", "openai"}


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact 'name==version' pin"
        name = canonicalize_name(match[1])
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = match[2]
    return found


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *extras.get("test", [])]]


def test_every_direct_dependency_is_pinned_within_its_declared_range() -> None:
    pinned = pins()
    requirements = project_requirements()
    assert {canonicalize_name(r.name) for r in requirements} >= RUNTIME
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"the pin {name}=={pinned[name]} is outside pyproject's {requirement.specifier}"
        )
    assert Version(pinned["gradio"]) >= Version("6.20"), "gradio before 6.20 has known advisories"


def test_everything_installed_for_the_project_is_pinned_and_installed_as_pinned() -> None:
    """The whole dependency closure (test extras included), as this venv resolved it."""
    pinned = pins()
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("llm-gateway", frozenset({"test"}))]
    for _ in range(2000):  # bounded walk
        if not todo:
            break
        name, extras = todo.pop()
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in {"", *extras}
            ):
                continue
            dep = canonicalize_name(requirement.name)
            key = f"{dep}[{','.join(sorted(requirement.extras))}]"
            if key in seen:
                continue
            seen.add(key)
            todo.append((dep, frozenset(requirement.extras)))
    assert not todo, "the dependency walk did not finish"
    installed = {key.split("[", 1)[0] for key in seen}
    assert len(installed) > 30 and installed >= RUNTIME
    unpinned = sorted(installed - set(pinned))
    assert not unpinned, f"installed for the project but not pinned: {unpinned}"
    drifted = {n: metadata.version(n) for n in installed if metadata.version(n) != pinned[n]}
    assert not drifted, f"installed versions differ from constraints.txt: {drifted}"


def test_the_readme_and_ci_install_with_the_constraints() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for where, text in (("README.md", readme), (".ci/run", ci)):
        installs = [line for line in text.splitlines() if "pip install" in line]
        assert installs, f"{where} installs nothing"
        for line in installs:
            assert re.search(r"pip install (-q )?-c constraints\.txt ", line), (where, line)
    test_command = next(line for line in readme.splitlines() if "'.[test]'" in line)
    assert test_command.strip() in ci, ".ci/run runs the README's test command as written"
