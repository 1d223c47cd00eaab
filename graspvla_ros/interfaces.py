"""Names shared across the graph: topics, services, controller states, and the stamp converters.

ROS-free and importing nothing of the stack, so every part of it (the nodes, the controller's
and the policy's cores, the CLI, the demo, the benchmarks) uses the same names without importing
another part.
docs/interfaces.md documents each name (tests/test_interfaces.py checks it); the tests spell the
names out, so renaming one here breaks them: the names are the stack's public interface.

Names starting with `/` are absolute. The others are relative: a node resolves them in its
namespace (`sim/…`, a camera's `<name>/color/…`), or under its own name (`~/…`, the controller's);
`under(node, name)` gives a private name as a client outside the node must spell it.
"""
from __future__ import annotations

import enum
import operator

NS_PER_S = 1_000_000_000

# --- the robot: controller_node publishes these (absolute: one robot per graph) ---
JOINT_STATES = "/joint_states"                   # sensor_msgs/JointState: arm + finger joints, at state_rate_hz
EE_POSE = "/graspvla/ee_pose"                    # geometry_msgs/PoseStamped: the measured TCP pose, at state_rate_hz
COMMANDED_POSE = "/graspvla/commanded_pose"      # geometry_msgs/PoseStamped: each waypoint commanded
GRIPPER_COMMAND = "/graspvla/gripper_command"    # std_msgs/Float64, latched: the last gripper state commanded, ±1
GRIPPER_WIDTH = "/graspvla/gripper_width"        # std_msgs/Float64: the measured finger width, m

# --- the policy: policy_node, POLICY its name in the graphs ---
POLICY = "/policy"
ACTION_CHUNK = "/graspvla/action_chunk"          # trajectory_msgs/MultiDOFJointTrajectory: policy → controller
INSTRUCTION = "/graspvla/instruction"            # std_msgs/String: a person's command ("pick up the red cube")
STATUS = "/graspvla/status"                      # std_msgs/String, latched: the policy's episode status, JSON
DEBUG_TOPICS = "/graspvla/debug/*"               # the pattern of every debug topic (the recorder's)
DEBUG_GRASP_POSE = "/graspvla/debug/grasp_pose"  # geometry_msgs/PoseStamped: the predicted grasp pose
DEBUG_GRASP_MARKERS = "/graspvla/debug/grasp_markers"  # visualization_msgs/MarkerArray: the same, drawn as a gripper
DEBUG_TIMINGS = "/graspvla/debug/timings"        # std_msgs/String: JSON per cycle (timings and what a replay needs)

# --- every node ---
DIAGNOSTICS = "/diagnostics"                     # diagnostic_msgs/DiagnosticArray: each node's health, 1 Hz
POLICY_DIAGNOSTICS = "graspvla/policy"           # the DiagnosticStatus names of the policy's and the controller's
CONTROLLER_DIAGNOSTICS = "graspvla/controller"   # (`graspvla status` reads the latency chain from both)
CLOCK = "/clock"                                 # rosgraph_msgs/Clock: sim time (sim_world) or bag time (player)
TF = "/tf"                                       # tf2_msgs/TFMessage: base → TCP (controller), where tf2_msgs exists
TF_STATIC = "/tf_static"                         # tf2_msgs/TFMessage, latched: base → each camera (calibration, sim)

# --- the controller: private names of controller_node, CONTROLLER its name in the graphs ---
CONTROLLER = "/controller"
CONTROLLER_STATE = "~/state"                     # std_msgs/String, latched: a ControllerState value
CONTROLLER_REJECTION = "~/rejection"             # std_msgs/String: `reason: detail` of each refused chunk
PLANNED_PATH = "~/planned_path"                  # geometry_msgs/PoseArray: each motion computed (dry_run)
PLANNED_MARKERS = "~/planned_markers"            # visualization_msgs/MarkerArray: the same, for RViz/Foxglove
HOME = "~/home"                                  # std_srvs/Trigger: open the gripper, move to the reset pose
ESTOP = "~/estop"                                # std_srvs/Trigger: latched stop, until RELEASE
HOLD = "~/hold"                                  # std_srvs/Trigger: stop the motion, hold the pose
RELEASE = "~/release"                            # std_srvs/Trigger: release the e-stop
RECOVER = "~/recover"                            # std_srvs/Trigger: clear a FAULT
CALIBRATION_POSE = "~/calibration_pose"          # std_srvs/Trigger: like HOME, to the camera calibration joints
CONTROLLER_SERVICES = (HOME, ESTOP, HOLD, RELEASE, RECOVER, CALIBRATION_POSE)
CONTROLLER_CLOCK = "~/clock"                     # std_srvs/Trigger: message = the node clock now, integer ns (the policy's offset ping-pong)

# --- the cameras (names relative: a camera node publishes in its namespace) ---
VIEWS = ("front", "side")                        # GraspVLA's two views, the camera names of the graphs

# --- the simulated world: sim_world_node (relative names, in its namespace) ---
SIM_OBJECT_NAMES = "sim/object_names"            # std_msgs/String, latched: JSON list, the order of SIM_OBJECT_POSES
SIM_OBJECT_POSES = "sim/object_poses"            # geometry_msgs/PoseArray: ground truth of every object
SIM_SET_TARGET = "sim/set_target"                # std_msgs/String (subscribed): the object whose grasp is scored
SIM_TARGET = "sim/target"                        # std_msgs/String, latched: the current target
SIM_GRASP_SUCCESS = "sim/grasp_success"          # std_msgs/Bool: the target is lifted and in the gripper
SIM_CHECK_SUCCESS = "sim/check_success"          # std_srvs/Trigger: the same, with lift and gripper in words
SIM_RESET_OBJECTS = "sim/reset_objects"          # std_srvs/Trigger: re-place the objects with the next seed
SIM_INJECT_FAULT = "sim/inject_fault"            # std_msgs/String (subscribed): make the simulated robot fail
SIM_FAULTS = "sim/faults"                        # std_msgs/String, latched: JSON of the faults in force

# --- the tools ---
RECORDER_STATUS = "~/status"                     # std_msgs/String: recorder_node's bag, episode and counts, JSON
CALIBRATION_SAVE = "calibration/save"            # std_srvs/Trigger: calibration_node writes its latest score


def image_topic(camera: str) -> str:
    """sensor_msgs/Image, rgb8: "front" is relative (what a node in a namespace uses), "/front" the
    default graph's absolute name."""
    return f"{camera}/color/image_raw"


def camera_info_topic(camera: str) -> str:
    """sensor_msgs/CameraInfo of `image_topic(camera)`, same stamps."""
    return f"{camera}/color/camera_info"


def camera_topics() -> tuple[str, ...]:
    """The default graph's image and camera_info topics of each view: what the policy sees."""
    return tuple(t for v in VIEWS for t in (image_topic(f"/{v}"), camera_info_topic(f"/{v}")))


def model_view_topic(camera: str) -> str:
    """sensor_msgs/CompressedImage, JPEG: the official client's 256×256 view of `image_topic(camera)`
    (crop, resize, JPEG q75), same stamps; model_view_node publishes it for `transport: model_view`."""
    return f"{camera}/model_view/compressed"


def depth_image_topic(camera: str) -> str:
    """sensor_msgs/Image, 16UC1 mm aligned to colour (camera_node with enable_depth)."""
    return f"{camera}/aligned_depth_to_color/image_raw"


def depth_info_topic(camera: str) -> str:
    return f"{camera}/aligned_depth_to_color/camera_info"


def debug_bbox_topic(view: str) -> str:
    """sensor_msgs/Image: the view the model got, predicted bbox drawn (policy_node)."""
    return f"/graspvla/debug/{view}/bbox_image"


def calibration_overlay_topic(camera: str) -> str:
    """sensor_msgs/Image: calibration_node's expected arm drawn over the camera's view."""
    return f"calibration/{camera}/overlay"


def calibration_score_topic(camera: str) -> str:
    """std_msgs/String: calibration_node's overlay score, JSON."""
    return f"calibration/{camera}/score"


def under(node: str, name: str) -> str:
    """The private name `name` ("~/state") of the node `node` ("/controller") as seen from outside
    ("/controller/state"): what clients of a node call."""
    if not name.startswith("~/"):
        raise ValueError(f"{name!r} is not a private (~/) name")
    return f"{node}/{name[2:]}"


def stamp_ns(sec: int, nanosec: int) -> int:
    """A ROS stamp (builtin_interfaces Time or Duration) → integer nanoseconds, exactly (no float)."""
    return operator.index(sec) * NS_PER_S + operator.index(nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds → (sec, nanosec) with 0 ≤ nanosec < 1e9, the inverse of `stamp_ns`.
    Floor division, so a negative time (a Duration, a time before the epoch) stays exact:
    -1 ns → (-1, 999_999_999). A float is refused (TypeError): it may have lost nanoseconds already."""
    return divmod(operator.index(ns), NS_PER_S)


class ControllerState(str, enum.Enum):
    """What the controller is doing, as it publishes it on CONTROLLER_STATE."""

    IDLE = "IDLE"          # connected, at rest, no chunk yet (also after a contact retreat: start a new history)
    RUNNING = "RUNNING"    # executing chunks
    HOLDING = "HOLDING"    # no fresh chunk for hold_timeout, `hold` called, or retreating from contact: holds a pose
    HOMING = "HOMING"      # opening the gripper and moving to the reset pose: chunks refused
    GRIPPER = "GRIPPER"    # a gripper change is under way (arm going to its waypoint, held while the fingers move)
    ESTOPPED = "ESTOPPED"  # latched stop: every chunk refused until release
    USER_STOPPED = "USER_STOPPED"  # the robot's user stop is pressed: chunks refused until it is released
    DISCONNECTED = "DISCONNECTED"  # the robot does not answer: reconnecting, chunks refused
    FAULT = "FAULT"        # error recovery failed: needs an operator (~/recover)
