"""The expert backend grasps the objects of the simulated world through the project's franky
executor, replanning each cycle from the measured TCP pose, as the policy node runs it."""
from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import wait_for
from graspvla_ros.chunk import ActionChunk
from graspvla_ros.policy.expert import ExpertBackend
from graspvla_ros.policy.observation import GripperHistory, Observation
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.sim.scene import OBJECTS
from graspvla_ros.sim.world import SimWorld

pytestmark = pytest.mark.sim
SEED = 7
DT = 0.1


def _grasp(world, arm, name: str, timeout: float, rejected: list) -> bool:
    """Runs the expert closed-loop at ≤ 5 Hz until the world reports success or `timeout`."""
    expert = ExpertBackend(world.object_poses)
    gripper = GripperHistory()
    blank = np.zeros((256, 256, 3), np.uint8)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if world.grasp_success(name):
            return True
        now = arm.clock()
        state = arm.read_state()
        g = gripper.at(now)
        out = expert.infer(Observation(now, f"pick up {name}", name, blank, blank, np.zeros((4, 7)), state.ee, g))
        chunk = ActionChunk(now, DT, "base", out.waypoints, state.ee, g)
        try:
            arm.submit(chunk)
        except ChunkRejected as e:  # fingers moving, a contact retreat: the controller node drops it too
            rejected.append(e.reason)
            time.sleep(0.2)
            continue
        for w in chunk.targets:  # the commanded gripper state, as the controller reports it
            if w.gripper != 0.0:
                gripper.add(w.stamp_ns, w.gripper)
        time.sleep(0.2)
    return False


@pytest.mark.timeout(900)  # eight grasps of up to 60 s each on a loaded machine
def test_expert_grasps_and_lifts_every_object(new_loopback_host):
    from graspvla_ros.control import ArmController
    from graspvla_ros.sim_settings import sim_controller_settings

    results, rejected = {}, {}
    with SimWorld(seed=SEED, host=new_loopback_host()) as world, \
            ArmController(sim_controller_settings(world.server.host)) as arm:
        for spec in OBJECTS:
            arm.home()
            world.relayout(SEED)
            wait_for(lambda: world.lift_height(spec.name) > -0.005, 5, "the objects at rest")
            rejected[spec.name] = []
            results[spec.name] = _grasp(world, arm, spec.name, 60, rejected[spec.name])
    failed = [n for n, ok in results.items() if not ok]
    assert not failed, f"the expert failed to grasp {failed} (chunks refused: {rejected})"
