"""pyproject.toml's floors are the releases CI's second job installs (.ci/oldest.txt)
and runs the whole suite on: a floor nothing ran on is a promise nobody checked. The
aiohttp floor said 3.10 long after the router stopped importing on anything before 3.14,
and the redis one said 5.0, whose client has no aclose(); the test extra said openai 1.40
and packaging 23, neither installable beside litellm 1.104.0."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.pins import pins_in

REPO = Path(__file__).resolve().parents[2]
PROJECT = "llm-keypool-router"
# `test` is the suite's own: its tools are floored and pinned as well.
EXTRAS = ("translate", "redis", "otel", "test")
# Where the oldest venv cannot hold a floor, and why.
ABOVE_THE_FLOOR = {"pyyaml": "every litellm the translate extra allows needs 6.0.3"}


def oldest_pins() -> dict[str, str]:
    return pins_in(REPO / ".ci" / "oldest.txt")


def floors() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = [*project["dependencies"], *(line for name in EXTRAS for line in extras[name])]
    found: dict[str, Version] = {}
    for line in lines:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == PROJECT:
            continue  # the test extra's own extras, floored above
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{line}: one floor (>=) per dependency"
        found[canonicalize_name(requirement.name)] = Version(lower[0])
    return found


def test_the_oldest_job_installs_every_floor_and_nothing_else() -> None:
    pins, wanted = oldest_pins(), floors()
    assert set(pins) == set(wanted), "pin in .ci/oldest.txt exactly the floored dependencies"
    for name, floor in wanted.items():
        pinned = Version(pins[name])
        if name in ABOVE_THE_FLOOR:
            assert pinned > floor, f"{name}: the floor is installable now; pin {floor}"
        else:
            assert pinned == floor, f"{name}: pyproject's floor is {floor}, the job pins {pinned}"


def test_ci_runs_the_whole_suite_on_the_oldest_releases() -> None:
    run = (REPO / ".ci" / "run").read_text()
    assert "-c .ci/oldest.txt" in run
    assert ".venv-oldest/bin/python -m pytest -q\n" in run  # every test, not a subset
