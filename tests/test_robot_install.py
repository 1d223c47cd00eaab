"""The robot's pip install (requirements-robot.txt, then requirements-robot-nodeps.txt with
--no-deps) resolves for the Pythons of apt ROS 2: CPython 3.10.12 (Humble, Ubuntu 22.04, glibc
2.35) and 3.12.3 (Jazzy, Ubuntu 24.04, glibc 2.39) on manylinux x86_64, from binary wheels only,
keeping numpy at 1.x as apt ROS's C extensions need. Neither interpreter is needed: pip's own
resolver is asked for them (`--python-version`, `--platform`, `--dry-run --report`), with its
environment markers evaluated for the target Python as well (pip evaluates them for the Python
that runs it; PIP_FOR_TARGET below fixes that, and every test checks it took effect).

The answer comes from PyPI, so these tests are marked `pypi` and run OUTSIDE the loopback-only
network namespace: `make test` runs this module first, on the host's network, and everything else
inside scripts/isolated; tests/conftest.py enforces the split. pip starts no ROS or DDS process.
When pip cannot reach the index at all the tests fail and say so: they never skip.

This machine's pip configuration is left out (its find-links, extra indexes and constraints are
not the robot's); a mirror of PyPI can be named with PIP_INDEX_URL, and PIP_CERT, PIP_PROXY and
the usual proxy variables are honoured.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

# The first test also waits for the four resolutions (run at once; ~25 s each on an idle machine).
pytestmark = [pytest.mark.pypi, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
ROBOT = ROOT / "requirements-robot.txt"
ROBOT_NODEPS = ROOT / "requirements-robot-nodeps.txt"

# What franky-sim (requirements-robot-nodeps.txt) asks for that apt provides instead:
# PyPI distribution -> rosdep key in package.xml.
APT_PROVIDED = {"pin": "pinocchio"}

PIP_TIMEOUT_S = 240


@dataclass(frozen=True)
class Target:
    distro: str
    python: str  # the interpreter's full version on that Ubuntu release
    glibc_minor: int

    @property
    def platforms(self) -> list[str]:
        """The manylinux tags that glibc 2.<glibc_minor> on x86_64 accepts, as pip derives them."""
        tags = [f"manylinux_2_{m}_x86_64" for m in range(self.glibc_minor, 4, -1)]
        return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]

    @property
    def marker_environment(self) -> dict[str, str]:
        return {"python_version": ".".join(self.python.split(".")[:2]), "python_full_version": self.python,
                "implementation_name": "cpython", "implementation_version": self.python,
                "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
                "platform_system": "Linux", "platform_machine": "x86_64"}


TARGETS = [Target("humble", "3.10.12", 35), Target("jazzy", "3.12.3", 39)]

# pip with its environment markers evaluated for the target Python: argv[1] is a JSON marker
# environment, the rest are pip's arguments. pip's `--python-version` applies to wheel tags and
# Requires-Python only; without this a dependency such as `exceptiongroup; python_version < "3.11"`
# would be judged for the Python running pip. The report's "environment" shows what was used.
PIP_FOR_TARGET = """
import json, sys
from pip._vendor.packaging import markers
environment = {**markers.default_environment(), **json.loads(sys.argv[1])}
markers.default_environment = lambda: dict(environment)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def pip_env() -> dict[str, str]:
    """The environment without this machine's pip configuration, network settings kept."""
    keep = {"PIP_INDEX_URL", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_TRUSTED_HOST", "PIP_PROXY",
            "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES", "PIP_CACHE_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in keep}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def pinned(path: Path, target: Target) -> dict[str, Version]:
    """{canonical name: version} of a requirements file whose every line is one exact pin, for
    the requirements whose marker applies to `target`."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path.name}:{number}: {raw.strip()!r}"
        if line.startswith("-"):
            raise AssertionError(f"{where}: options and includes are not allowed in a robot requirements file")
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.url or req.extras:
            raise AssertionError(f"{where}: not an exact pin `name==version`")
        if req.marker is None or req.marker.evaluate(target.marker_environment):
            name = canonicalize_name(req.name)
            if name in pins:
                raise AssertionError(f"{where}: {name} is pinned twice for Python {target.python}")
            pins[name] = Version(specs[0].version)
    if not pins:
        raise AssertionError(f"{path.name} pins nothing for Python {target.python}")
    return pins


def exec_depends() -> set[str]:
    return {e.text.strip() for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}


@dataclass
class Resolution:
    returncode: int
    output: str
    report: dict | None

    @property
    def packages(self) -> dict[str, dict]:
        """{canonical name: metadata} of what pip would install."""
        return {canonicalize_name(i["metadata"]["name"]): i for i in self.report["install"]}


def start_resolution(target: Target, requirements: Path, report: Path, *extra: str) -> subprocess.Popen:
    args = ["install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", target.python, *[a for p in target.platforms for a in ("--platform", p)],
            "--target", str(report.parent / "target"), "--report", str(report), "--quiet", *extra, "-r", str(requirements)]
    return subprocess.Popen([sys.executable, "-c", PIP_FOR_TARGET, json.dumps(target.marker_environment), *args],
                            env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=report.parent)


def finish(proc: subprocess.Popen, report: Path) -> Resolution:
    try:
        output, _ = proc.communicate(timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"pip's resolver did not finish in {PIP_TIMEOUT_S} s:\n{output[-3000:]}")
    data = json.loads(report.read_text()) if proc.returncode == 0 else None
    return Resolution(proc.returncode, output, data)


def require_index() -> None:
    """Fail, saying why, when pip cannot reach the package index at all."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pip", "--retries", "1", "--timeout", "20"],
                           env=pip_env(), capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.fail(f"pip cannot reach the package index {index}: these tests ask its resolver and need "
                    "the network (`make test` runs them outside the loopback-only namespace; by hand: "
                    "`.venv/bin/python -m pytest -m pypi tests/test_robot_install.py`). pip said:\n"
                    + (probe.stdout + probe.stderr)[-2000:], pytrace=False)


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[str, tuple[Resolution, Resolution]]:
    """{distro: (requirements-robot.txt resolved, requirements-robot-nodeps.txt with --no-deps)},
    all four asked of pip at once."""
    pip_version = Version(subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True,
                                         check=True).stdout.split()[1])
    assert pip_version >= Version("22.2"), f"pip {pip_version} has no `install --dry-run --report` (needs 22.2)"
    require_index()
    started = {}
    for target in TARGETS:
        for kind, path, extra in (("deps", ROBOT, ()), ("nodeps", ROBOT_NODEPS, ("--no-deps",))):
            work = tmp_path_factory.mktemp(f"{target.distro}_{kind}")
            started[target.distro, kind] = (start_resolution(target, path, work / "report.json", *extra),
                                            work / "report.json")
    done = {key: finish(proc, report) for key, (proc, report) in started.items()}
    return {t.distro: (done[t.distro, "deps"], done[t.distro, "nodeps"]) for t in TARGETS}


def resolved(resolutions, target: Target) -> tuple[Resolution, Resolution]:
    deps, nodeps = resolutions[target.distro]
    for res, path in ((deps, ROBOT), (nodeps, ROBOT_NODEPS)):
        assert res.returncode == 0, (f"{path.name} does not resolve for Python {target.python} ({target.distro}):\n"
                                     f"{res.output[-4000:]}")
        used = res.report["environment"]
        assert (used["python_full_version"], used["platform_machine"]) == (target.python, "x86_64"), \
            f"pip evaluated markers for {used['python_full_version']} {used['platform_machine']}, not the target"
    return deps, nodeps


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.distro)
def test_resolves_with_numpy_1(resolutions, target):
    deps, _ = resolved(resolutions, target)
    numpy = Version(deps.packages["numpy"]["metadata"]["version"])
    assert numpy < Version("2"), f"numpy {numpy} for {target.distro}: apt ROS's C extensions need numpy 1.x"
    assert "numpy" in pinned(ROBOT, target), "numpy must be pinned so that pip cannot move it"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.distro)
def test_pip_picks_every_pin(resolutions, target):
    deps, nodeps = resolved(resolutions, target)
    for res, path in ((deps, ROBOT), (nodeps, ROBOT_NODEPS)):
        for name, version in pinned(path, target).items():
            assert name in res.packages, f"{path.name} pins {name}, which pip would not install"
            assert Version(res.packages[name]["metadata"]["version"]) == version
    assert set(nodeps.packages) == set(pinned(ROBOT_NODEPS, target)), "--no-deps installs exactly the pins"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.distro)
def test_every_package_is_a_wheel_for_the_python(resolutions, target):
    """Requires-Python of every package pip picks (pins and their dependencies) admits the
    target, and each comes as a wheel for CPython <target> on the target's manylinux."""
    deps, nodeps = resolved(resolutions, target)
    py = "".join(target.python.split(".")[:2])
    interpreters = {f"cp{py}", "py3", f"py{py}"} | {f"cp3{m}" for m in range(2, int(py[1:]) + 1)}
    platforms = set(target.platforms) | {"any"}
    problems = []
    for name, item in {**deps.packages, **nodeps.packages}.items():
        meta = item["metadata"]
        requires = meta.get("requires_python")
        if requires and not SpecifierSet(requires).contains(target.python):
            problems.append(f"{name} {meta['version']}: Requires-Python {requires}")
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        if not filename.endswith(".whl"):
            problems.append(f"{name} {meta['version']}: not a wheel ({filename})")
            continue
        tags = parse_wheel_filename(filename)[3]
        if not any(t.interpreter in interpreters and t.platform in platforms
                   and (t.abi in {"none", "abi3"} or t.abi == f"cp{py}") for t in tags):
            problems.append(f"{name} {meta['version']}: {filename} does not fit CPython {target.python} x86_64")
    assert not problems, f"for {target.distro}:\n" + "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.distro)
def test_nodeps_packages_find_their_dependencies(resolutions, target):
    """What franky-sim needs is either resolved from requirements-robot.txt at a version it
    accepts, or provided by apt through a package.xml key; and pip installs no PyPI copy of what
    apt provides."""
    deps, nodeps = resolved(resolutions, target)
    keys = exec_depends()
    problems = []
    for name, item in nodeps.packages.items():
        for line in item["metadata"].get("requires_dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**target.marker_environment, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in APT_PROVIDED:
                if APT_PROVIDED[dep] not in keys:
                    problems.append(f"{name} needs {req}: apt's {APT_PROVIDED[dep]} is not an exec_depend in package.xml")
            elif dep not in deps.packages:
                problems.append(f"{name} needs {req}: not in requirements-robot.txt's resolution")
            elif not req.specifier.contains(deps.packages[dep]["metadata"]["version"], prereleases=True):
                problems.append(f"{name} needs {req}: requirements-robot.txt resolves "
                                f"{dep} {deps.packages[dep]['metadata']['version']}")
    shadowing = sorted(set(APT_PROVIDED) & set(deps.packages))
    assert not problems and not shadowing, "\n".join(problems + [f"pip would install {d} from PyPI" for d in shadowing])
