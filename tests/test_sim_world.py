"""The simulated table world: layouts, the two cameras, ground truth and grasp success, on a
real embedded franky-sim (MuJoCo, EGL offscreen rendering) and the project's franky executor."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from graspvla_ros.sim.world import OBJECTS, WORKSPACE_X, WORKSPACE_Y, SimWorld, object_spec, random_layout

SEED = 4


def test_layouts_are_reproducible_inside_the_workspace_and_apart():
    a, b, c = random_layout(SEED), random_layout(SEED), random_layout(SEED + 1)
    assert a == b and a != c
    assert len(a) == len(OBJECTS) >= 8
    for layout in (a, c):
        for name, p in layout.items():
            r = object_spec(name).radius
            assert WORKSPACE_X[0] + r <= p.x <= WORKSPACE_X[1] - r
            assert WORKSPACE_Y[0] + r <= p.y <= WORKSPACE_Y[1] - r
        names = list(layout)
        for i, m in enumerate(names):
            for n in names[i + 1:]:
                gap = math.hypot(layout[m].x - layout[n].x, layout[m].y - layout[n].y)
                assert gap >= object_spec(m).radius + object_spec(n).radius


def test_unknown_object_names_are_refused_with_the_list():
    with pytest.raises(KeyError, match="red cube"):
        object_spec("violet teapot")


def _chroma(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, float)
    return rgb / np.maximum(rgb.sum(-1, keepdims=True), 1e-6)


@pytest.fixture(scope="module")
def world(new_loopback_host):
    with SimWorld(seed=SEED, host=new_loopback_host()) as w:
        time.sleep(0.3)  # objects settle on the table
        yield w


@pytest.mark.sim
def test_objects_rest_where_the_seed_put_them(world):
    poses = world.object_poses()
    assert list(poses) == [o.name for o in OBJECTS]
    for name, (pos, quat) in poses.items():
        p = world.layout[name]
        assert pos[:2] == pytest.approx((p.x, p.y), abs=0.01), name
        assert pos[2] == pytest.approx(object_spec(name).half_height, abs=0.005), name
        assert np.linalg.norm(quat) == pytest.approx(1.0)


@pytest.mark.sim
@pytest.mark.parametrize("camera", ["front", "side"])
def test_camera_sees_every_object_in_its_colour_where_it_should_be(world, camera):
    renderer = world.renderer(camera)
    try:
        rgb = renderer.render()
    finally:
        renderer.close()
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8 and rgb.std() > 20
    spec = world.camera_spec(camera)
    palette = np.array([_chroma(o.rgba[:3]) for o in OBJECTS] + [_chroma((0.55, 0.45, 0.35))])
    chroma = _chroma(rgb)
    nearest = np.argmin(np.linalg.norm(chroma[..., None, :] - palette, axis=-1), axis=-1)
    close = np.min(np.linalg.norm(chroma[..., None, :] - palette, axis=-1), axis=-1) < 0.06
    for i, (name, (pos, _)) in enumerate(world.object_poses().items()):
        u, v = spec.project(pos, 640, 480)
        assert 0 <= u < 640 and 0 <= v < 480, f"{name} projects outside the {camera} image"
        u, v = int(u), int(v)
        window = (slice(max(0, v - 30), v + 30), slice(max(0, u - 30), u + 30))
        hits = int(((nearest[window] == i) & close[window] & (rgb[window].max(-1) > 40)).sum())
        assert hits >= 40, f"{name}: only {hits} pixels of its colour around ({u}, {v}) in the {camera} view"


@pytest.mark.sim
def test_relayout_moves_objects_to_the_new_seed(world):
    world.relayout(SEED + 10)
    time.sleep(0.2)
    try:
        layout = random_layout(SEED + 10)
        for name, (pos, _) in world.object_poses().items():
            assert pos[:2] == pytest.approx((layout[name].x, layout[name].y), abs=0.01)
        assert not world.grasp_success("red cube")
    finally:
        world.relayout(SEED)
