"""What a robot with apt ROS 2 needs besides the code: package.xml names every ROS package the
code imports (rosdep installs them), requirements-robot*.txt pins every pip package it imports
(tests/test_robot_install.py checks that those resolve), and `python -m colcon build` run by a
venv's python installs node executables that run with that python (README, "On a real robot").
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The code a robot runs: the package and the launch file (tests and benchmarks are not installed).
SOURCES = [ROOT / "graspvla_ros", ROOT / "launch"]

# Imported module -> the pip distribution that provides it (requirements-robot*.txt).
PIP_IMPORTS = {
    "numpy": "numpy", "scipy": "scipy", "PIL": "pillow", "cv2": "opencv-python-headless",
    "torch": "torch", "torchvision": "torchvision", "timm": "timm", "safetensors": "safetensors",
    "sentencepiece": "sentencepiece", "onnx": "onnx", "onnxruntime": "onnxruntime", "yaml": "pyyaml",
    "ruamel": "ruamel.yaml", "rosbags": "rosbags", "zmq": "pyzmq", "franky": "franky-control",
    "pyrealsense2": "pyrealsense2", "mujoco": "mujoco", "franky_sim": "franky-sim",
}
# Imported only by optional backends, installed by hand where wanted (not from PyPI).
OPTIONAL_IMPORTS = {"tensorrt": "the TensorRT backend: NVIDIA's TensorRT Python bindings"}
# Imported module -> rosdep key of apt's package, for what the system Python needs.
APT_PYTHON_KEYS = {"yaml": "python3-yaml", "numpy": "python3-numpy", "scipy": "python3-scipy"}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports absolutely, at any depth (imports inside functions count)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            if node.module.split(".")[0] == "graspvla_ros":  # `from graspvla_ros.x import y` may import a module y
                modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def third_party(module: str) -> str | None:
    top = module.split(".")[0]
    return None if top in sys.stdlib_module_names or top in ("__future__", "graspvla_ros") else top


def imports(paths=None) -> dict[str, set[str]]:
    """{top-level module: files importing it} for every import outside the stdlib and the
    package itself in `paths` (default: every file of SOURCES)."""
    found: dict[str, set[str]] = {}
    for path in paths if paths is not None else sorted(p for s in SOURCES for p in s.rglob("*.py")):
        for module in imported_modules(path):
            if top := third_party(module):
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def import_closure(start: Path) -> list[Path]:
    """`start` and every graspvla_ros module it imports, transitively (with their packages'
    __init__ files, which Python runs first)."""
    seen, todo = [], [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        for module in imported_modules(path):
            if module.split(".")[0] != "graspvla_ros":
                continue
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                if found := module_file(".".join(parts[:i])):
                    todo.append(found)
    return seen


def exec_depends() -> list[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3", "package.xml is not a format 3 manifest"
    return [e.text.strip() for e in root.iter("exec_depend")]


def robot_pins() -> set[str]:
    names = set()
    for name in ("requirements-robot.txt", "requirements-robot-nodeps.txt"):
        for raw in (ROOT / name).read_text().splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                names.add(canonicalize_name(Requirement(line).name))
    return names


def test_the_scan_sees_the_imports_it_must():
    """The scan finds imports at module level, inside functions and as `from X.msg import`."""
    found = imports()
    assert {"rclpy", "sensor_msgs", "numpy", "franky", "ament_index_python", "launch_ros"} <= set(found)
    assert "graspvla_ros/graph.py" in found["ament_index_python"]  # imported inside a function


def test_every_ros_package_the_code_imports_is_an_exec_depend():
    depends = exec_depends()
    assert len(depends) == len(set(depends)), f"package.xml repeats an exec_depend: {sorted(depends)}"
    missing = {top: files for top, files in imports().items()
               if top not in PIP_IMPORTS and top not in OPTIONAL_IMPORTS and top not in depends}
    assert not missing, "\n".join(
        f"{top} (imported by {', '.join(sorted(files))}) is in neither package.xml nor requirements-robot*.txt: "
        f"a ROS package needs <exec_depend>{top}</exec_depend>; a pip package needs a pin in "
        "requirements-robot.txt and an entry in PIP_IMPORTS" for top, files in sorted(missing.items()))


def test_every_pip_package_the_code_imports_is_pinned_for_the_robot():
    pins = robot_pins()
    unpinned = {top: PIP_IMPORTS[top] for top in imports() if top in PIP_IMPORTS
                and canonicalize_name(PIP_IMPORTS[top]) not in pins}
    assert not unpinned, f"imported but not pinned in requirements-robot*.txt: {unpinned}"


@pytest.fixture(scope="module")
def venv_colcon_install(tmp_path_factory):
    """The package built by `<this python> -m colcon build` (as the README has the robot build it
    with its venv's python), from the files git tracks."""
    ws = tmp_path_factory.mktemp("venv_colcon_ws")
    src = ws / "src" / "graspvla_ros"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "colcon", "build", "--packages-select", "graspvla_ros"], cwd=ws,
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    return ws / "install"


def _same_interpreter(a: str, b: str) -> bool:
    """Same file name in the same directory. The directories are resolved, the file is not: a
    venv's bin/python is a symlink to the base interpreter, which lacks the venv's packages."""
    a, b = Path(a), Path(b)
    return a.name == b.name and a.parent.resolve() == b.parent.resolve()


def test_node_executables_run_with_the_python_that_ran_colcon(venv_colcon_install, tmp_path):
    lib = venv_colcon_install / "graspvla_ros" / "lib" / "graspvla_ros"
    scripts = sorted(p for p in lib.iterdir() if p.is_file())
    assert len(scripts) >= 5, f"console scripts missing in {lib}: {scripts}"
    for script in scripts:
        first = script.read_text().splitlines()[0]
        assert first.startswith("#!") and _same_interpreter(first[2:].strip(), sys.executable), \
            f"{script.name} starts with {first!r}, not #!{sys.executable}"
    # run directly (its shebang picks the interpreter), sourced like a robot user, away from this checkout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "VIRTUAL_ENV")}
    run = subprocess.run(["sh", "-c", f'. "{venv_colcon_install}/setup.sh" && exec "{lib}/graspvla" --help'],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "calibrate" in run.stdout, run.stdout + run.stderr


def test_the_launch_file_needs_only_apt_packages():
    """`ros2 launch` runs the launch file on the system Python (the `ros2` command's own), which
    has apt's packages only: whatever the launch file and the graspvla_ros modules it imports
    import must come from an exec_depend."""
    closure = import_closure(ROOT / "launch" / "graspvla.launch.py")
    assert ROOT / "graspvla_ros" / "graph.py" in closure
    depends = set(exec_depends())
    needed = imports(closure)
    not_apt = {top: sorted(files) for top, files in needed.items() if APT_PYTHON_KEYS.get(top, top) not in depends}
    assert not not_apt, f"the launch file would import packages apt does not provide: {not_apt}"
    assert {"launch", "launch_ros", "ament_index_python", "yaml"} <= set(needed)
