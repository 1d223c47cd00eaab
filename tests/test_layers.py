"""The import layering of graspvla_ros (README, "Layout"), read from the source with `ast`: every
import counts, those inside functions and `if` blocks too.

    0 core          ROS-free: chunk, interfaces, settings, deployment, safety, preprocess, latency, process,
                    camera/, model/
    1 libraries     pure Python, no rclpy: control/, calibration/, bag/, sim/, policy/
    2 nodes/        thin rclpy adapters
    3 applications  commands/, cli, graph, bringup, demo

A module imports only from its own layer and those below. Inside layer 1 a package imports only
the layer-1 packages LIBRARY_IMPORTS names. No import cycle joins two packages (or top-level
modules), layers 0 and 1 never import rclpy or a ROS message package, and no file in
graspvla_ros/ passes MAX_LINES (a file that long is doing two jobs). benchmarks/, tests/ and
launch/ sit above everything and may import anything that exists.
"""
from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "graspvla_ros"

CORE, LIBRARIES, NODES, APPLICATIONS = 0, 1, 2, 3
LAYERS = {
    "chunk": CORE, "interfaces": CORE, "settings": CORE, "deployment": CORE, "safety": CORE,
    "preprocess": CORE, "latency": CORE, "process": CORE, "lazy": CORE, "checks": CORE, "dds": CORE, "camera": CORE, "model": CORE,
    "control": LIBRARIES, "calibration": LIBRARIES, "bag": LIBRARIES, "sim": LIBRARIES, "policy": LIBRARIES,
    "nodes": NODES,
    "commands": APPLICATIONS, "cli": APPLICATIONS, "graph": APPLICATIONS, "bringup": APPLICATIONS,
    "demo": APPLICATIONS, "sim_settings": APPLICATIONS, "paramdocs": APPLICATIONS, "graph_checks": APPLICATIONS,
}
# The order inside layer 1: calibration sits below sim (the simulated cameras are calibration's
# nominal viewpoints), sim and bag below policy (the expert backend grasps from the sim's ground
# truth; replay reads bags). control stands alone.
LIBRARY_IMPORTS = {
    "control": set(), "calibration": set(), "bag": set(),
    "sim": {"calibration"},
    "policy": {"sim", "bag"},
}
ROS_MODULES = {"rclpy", "rosbag2_py", "rosidl_runtime_py", "launch", "launch_ros", "builtin_interfaces",
               "rcl_interfaces"}
ROS_MESSAGE_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
MAX_LINES = 350
# Over MAX_LINES while another branch cuts them: remove each entry when its cut lands.
LONG_FILES_BEING_CUT: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _unit(module: str) -> str:
    """The package or top-level module a module of graspvla_ros belongs to ('' for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    return LAYERS.get(_unit(module), CORE)


def _imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for every import in the file, resolved to absolute
    module names; `from m import x` yields m.x as the module when that is a module of ours."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (node.lineno, sub, None) if sub in MODULES else (node.lineno, base, alias.name)


def _internal_imports() -> Iterator[tuple[str, int, str]]:
    """(importing module, line, imported module) for the imports inside graspvla_ros."""
    for module, path in MODULES.items():
        for line, target, _ in _imports(path):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield module, line, target


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


@functools.cache
def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if any(isinstance(t, ast.Name) and t.id == "_MODULES" for t in targets) and isinstance(node.value, ast.Dict):
                # a package that loads its names on first use (module __getattr__): {name: module}
                names |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            body += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            body += [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


def test_every_top_level_module_and_package_has_a_layer():
    units = {_unit(m) for m in MODULES} - {""}
    unplaced, gone = sorted(units - LAYERS.keys()), sorted(LAYERS.keys() - units)
    assert not unplaced, f"place these in LAYERS (and the README's Layout): {unplaced}"
    assert not gone, f"LAYERS names what graspvla_ros no longer has: {gone}"
    assert set(LIBRARY_IMPORTS) == {u for u, layer in LAYERS.items() if layer == LIBRARIES}


def test_the_readme_layout_places_every_package_and_module():
    """Its table gives each package and top-level module the layer LAYERS gives it."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("\n## ", readme.index("## Layout") + 1)]
    rows = {u: next((line for line in layout.splitlines() if re.search(rf"[`/]{u}(\.py|/)`", line)), "")
            for u in LAYERS}
    wrong = [f"{u}: layer {LAYERS[u]}, README: {row.split('|')[1].strip() if row else 'missing'}"
             for u, row in rows.items() if not row.startswith(f"| {LAYERS[u]} ")]
    assert not wrong, "README, Layout: " + "; ".join(wrong)


def test_every_import_of_graspvla_ros_names_something_that_exists():
    """Also in tests/, benchmarks/ and launch/, which no other test imports all of: a module
    moved or a name removed is found here, not by the next benchmark run."""
    files = [*MODULES.values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py")),
             *sorted((ROOT / "launch").glob("*.py"))]
    missing = []
    for path in files:
        for line, target, name in _imports(path):
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            if target not in MODULES:
                missing.append(f"{path.relative_to(ROOT)}:{line}: no module {target}")
            elif name is not None and name != "*" and name not in _top_level_names(MODULES[target]):
                missing.append(f"{path.relative_to(ROOT)}:{line}: {target} has no {name}")
    assert not missing, "\n".join(missing)


def test_no_import_goes_to_a_higher_layer():
    upward = sorted({f"{_where(m, line)}: layer {_layer(m)} imports {t} (layer {_layer(t)})"
                     for m, line, t in _internal_imports() if _layer(t) > _layer(m)})
    assert not upward, "\n".join(upward)


def test_layer_1_packages_import_only_the_packages_below_them():
    sideways = sorted({f"{_where(m, line)}: {_unit(m)} imports {t}; allowed: {sorted(LIBRARY_IMPORTS[_unit(m)])}"
                       for m, line, t in _internal_imports()
                       if _layer(m) == LIBRARIES and _layer(t) == LIBRARIES and _unit(t) != _unit(m)
                       and _unit(t) not in LIBRARY_IMPORTS[_unit(m)]})
    assert not sideways, "\n".join(sideways)


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for m, _, t in _internal_imports():
        if _unit(m) != _unit(t):
            edges.setdefault(_unit(m), set()).add(_unit(t))
    cycles = []

    def visit(unit: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(unit, ())):
            if nxt in path:
                cycles.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(unit)

    done: set[str] = set()
    for unit in sorted(edges):
        if unit not in done:
            visit(unit, [unit])
    assert not cycles, "import cycles between packages: " + "; ".join(cycles)


def test_core_and_libraries_never_import_ros():
    ros = sorted({f"{_where(module, line)}: {target}"
                  for module, path in MODULES.items() if _layer(module) <= LIBRARIES
                  for line, target, _ in _imports(path)
                  if target.split(".")[0] in ROS_MODULES or target.split(".")[0].endswith(ROS_MESSAGE_SUFFIXES)})
    assert not ros, "layers 0 and 1 are ROS-free; ROS imports belong in nodes/:\n" + "\n".join(ros)


def test_no_file_in_the_package_passes_the_line_limit():
    long = {str(p.relative_to(ROOT)): p.read_bytes().count(b"\n")
            for p in sorted((ROOT / PACKAGE).rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    offenders = [f"{name}: {n} lines" for name, n in long.items() if n > MAX_LINES and name not in LONG_FILES_BEING_CUT]
    assert not offenders, f"over {MAX_LINES} lines (split along the file's seams):\n" + "\n".join(offenders)
