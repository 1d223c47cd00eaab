"""controller_node: streams GraspVLA action chunks to a Franka arm through franky.

Topics, services and parameters: docs/interfaces.md (## Controller).
"""
from __future__ import annotations

import sys
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.control import Compliance, ContactSettings, ControllerState, FrankaExecutor, GripperSettings
from graspvla_ros.control.robot_clock import RobotClock
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.common import periodic, run
from graspvla_ros.nodes.convert import ns_to_stamp, pose_to_msg
from graspvla_ros.nodes.params import Param, declare
from graspvla_ros.safety import ChunkRejected, SafetyLimits

CONFIG = 'controller.yaml'
PARAMS = (
    Param('robot_ip', '172.16.0.2',
          'IP address of the Franka control box (default: `config/controller.yaml`)'),
    Param('connect_timeout', 30.0,
          's to keep retrying the connection at start-up (a robot or simulator still booting); a protocol mismatch fails at once'),
    Param('realtime', False,
          '`true` = `RealtimeConfig.Enforce` (needs a real-time kernel), else `Ignore`'),
    Param('relative_dynamics_factor', 0.3,
          "franky's global velocity/acceleration/jerk scale"),
    Param('strategy', 'streaming',
          '`streaming`, `official_blocking` or `official_nonblocking` (above)'),
    Param('state_rate_hz', 200.0,
          'rate of `/joint_states`, `/graspvla/ee_pose`, `/graspvla/gripper_width` (≥ 100)'),
    Param('tcp_offset', 0.03,
          "m along the EE z added to franky's EE frame: 0.03 = GraspVLA's 3D-printed finger extensions (official set-up); the sim graph sets 0.0"),
    Param('base_frame', 'base',
          'the frame chunks must be in and poses are published in'),
    Param('arm_id', 'fr3',
          'joint name prefix (`panda` for a Panda)'),
    Param('home_on_start', True,
          'home (open the gripper, then move to the reset pose) after connecting'),
    Param('max_recoveries', 3,
          'motion errors in a row recovered from (recover + lift) before FAULT'),
    Param('gripper.grasp_width', 0.04,
          'm, width a close command grasps at (official 0.04)'),
    Param('gripper.grasp_speed', 0.2,
          'm/s, finger speed of a close'),
    Param('gripper.force', 30.0,
          'N, grasp force'),
    Param('gripper.epsilon_inner', 0.04,
          'm, grasp succeeds if the final width is within grasp_width − inner … + outer'),
    Param('gripper.epsilon_outer', 0.04,
          'm, grasp succeeds if the final width is within grasp_width − inner … + outer'),
    Param('gripper.open_width', 0.08,
          'm, width of an open command'),
    Param('gripper.open_speed', 0.1,
          'm/s, finger speed of an open'),
    Param('gripper.timeout', 2.0,
          's a gripper change may take (arm held meanwhile) before the chunk goes on'),
    Param('safety.workspace_min', [0.2, -0.4, 0.0],
          'm, box (base frame) every target is clamped into'),
    Param('safety.workspace_max', [0.8, 0.4, 0.6],
          'm, box (base frame) every target is clamped into'),
    Param('safety.max_step_translation', 0.02,
          'm per step, relative to the step before (the first: the current pose)'),
    Param('safety.max_step_rotation', 0.05,
          'rad per step'),
    Param('safety.max_chunk_age', 1.0,
          's, older observations are refused (the official eager client sends chunks 0.5–0.7 s after their observation)'),
    Param('safety.hold_timeout', 1.0,
          's without a chunk before HOLDING'),
    Param('contact.force_limit', 15.0,
          'N, |F_z| of the estimated external force that triggers the retreat (official 15)'),
    Param('contact.lift', 0.05,
          'm the retreat lifts the TCP (plus up to `contact.jitter` in x and y)'),
    Param('contact.jitter', 0.01,
          'm, random xy offset of the retreat'),
    Param('compliance.cartesian_impedance', [2000.0, 2000.0, 2000.0, 150.0, 150.0, 150.0],
          "N/m ×3, Nm/rad ×3: the Franka's Cartesian impedance controller (official 2000 / 150)"),
    Param('compliance.torque_threshold', 40.0,
          'Nm, collision reflex threshold per joint (above the contact reaction)'),
    Param('compliance.force_threshold', 60.0,
          'N, Cartesian collision reflex threshold (above `contact.force_limit`)'),
)

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("controller")
        p = declare(self, PARAMS)
        limits = SafetyLimits(
            workspace_min=tuple(p["safety.workspace_min"]), workspace_max=tuple(p["safety.workspace_max"]),
            max_step_translation=p["safety.max_step_translation"], max_step_rotation=p["safety.max_step_rotation"],
            max_chunk_age=p["safety.max_chunk_age"], hold_timeout=p["safety.hold_timeout"], frame_id=p["base_frame"])
        section = lambda name: {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith(name + ".")}  # noqa: E731
        compliance = section("compliance")
        compliance["cartesian_impedance"] = tuple(compliance["cartesian_impedance"])
        self.base_frame = p["base_frame"]
        arm = p["arm_id"]
        self.joint_names = [f"{arm}_joint{i}" for i in range(1, 8)] + [f"{arm}_finger_joint1", f"{arm}_finger_joint2"]

        self.state_pub = self.create_publisher(String, "~/state", LATCHED)
        self.gripper_pub = self.create_publisher(Float64, "/graspvla/gripper_command", LATCHED)
        self.rejection_pub = self.create_publisher(String, "~/rejection", 10)
        self.joint_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.pose_pub = self.create_publisher(PoseStamped, "/graspvla/ee_pose", 10)
        self.width_pub = self.create_publisher(Float64, "/graspvla/gripper_width", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # Every stamp and due time comes from the node clock (sim time in the sim graph).
        self.robot = FrankaExecutor(
            p["robot_ip"], strategy=p["strategy"], limits=limits, gripper=GripperSettings.from_params(p),
            realtime=p["realtime"], dynamics_factor=p["relative_dynamics_factor"], tcp_offset=p["tcp_offset"],
            max_recoveries=p["max_recoveries"], clock=lambda: self.get_clock().now().nanoseconds,
            compliance=Compliance(**compliance), contact=ContactSettings(**section("contact")))
        self.robot.add_state_listener(self._publish_state)
        self.robot.on_gripper_command = self._publish_gripper_command

        # Services live on side nodes with executors of their own, created before the first
        # home: e-stop and hold must answer while a home moves, and chunks keep flowing.
        self.side_nodes = []
        calibration_joints = load_nominal().calibration_joints
        for name, action in (("home", self.robot.home), ("estop", self.robot.estop), ("hold", self.robot.hold),
                             ("release", self.robot.release), ("recover", self.robot.recover),
                             ("calibration_pose", lambda: self.robot.home(joints=calibration_joints))):
            # use_global_arguments=False: the process's `__node:=` remap must not rename these too
            side = Node(f"{self.get_name()}_{name}_service", namespace=self.get_namespace(), context=self.context,
                        use_global_arguments=False)
            side.create_service(Trigger, f"{self.get_fully_qualified_name()}/{name}", self._trigger(name, action))
            self.side_nodes.append(side)
        self.robot.connect(timeout=p["connect_timeout"])
        self.get_logger().info(
            f"connected to {p['robot_ip']} ({p['strategy']}, dynamics {p['relative_dynamics_factor']}); "
            f"TCP = franky end effector + {p['tcp_offset']:.3f} m along its z")
        if p["home_on_start"]:
            self.robot.request_home()  # runs on the executor's worker (HOMING); the services answer meanwhile
        else:  # no home to open the gripper: announce the state the fingers show
            self._publish_state(self.robot.state, "connected")
            self._publish_gripper_command(self.robot.gripper_command)
        self.create_subscription(MultiDOFJointTrajectory, "/graspvla/action_chunk", self._on_chunk, 10)
        # State streams from a plain thread: a 200 Hz rclpy timer competes with chunk
        # reception inside the executor and delayed chunks by up to 0.5 s under load.
        self._streaming = threading.Event()
        self.robot_clock = RobotClock(sim_time=self.get_parameter("use_sim_time").value)
        self._state_thread = threading.Thread(
            target=periodic, args=(self, 1.0 / p["state_rate_hz"], self._publish_robot_state, self._streaming),
            name="state-publisher", daemon=True)
        self._state_thread.start()
        self.create_timer(1.0, self._publish_diagnostics)

    def _trigger(self, name, action):
        def handle(_request, response):
            try:
                action()
                response.success, response.message = True, f"{name}: done, state {self.robot.state.value}"
            except Exception as err:  # report to the caller; the executor keeps the arm safe
                response.success, response.message = False, f"{name} failed: {err}"
            return response
        return handle

    def _on_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        try:
            chunk = chunk_msg.decode(msg)
        except ValueError as err:
            self._reject("malformed", str(err))
            return
        try:
            self.robot.submit(chunk)
        except ChunkRejected as err:
            self.rejection_pub.publish(String(data=str(err)))

    def _reject(self, reason: str, detail: str) -> None:
        if self.robot.rejections.record(reason):
            self.get_logger().warning(f"chunk rejected: {reason}: {detail}")
        self.rejection_pub.publish(String(data=f"{reason}: {detail}"))

    def _publish_state(self, state: ControllerState, why: str) -> None:
        if self.context.ok():  # the executor's notifier may still deliver during shutdown
            self.state_pub.publish(String(data=state.value))
            self.get_logger().info(f"state {state.value}: {why}")

    def _publish_gripper_command(self, command: float) -> None:
        if self.context.ok():
            self.gripper_pub.publish(Float64(data=float(command)))

    def _publish_robot_state(self) -> None:
        s = self.robot.read_state()
        stamp_ns = self.robot_clock.to_node_ns(s.robot_time, s.stamp_ns)
        stamp = ns_to_stamp(stamp_ns)
        js = JointState(name=self.joint_names, position=[*s.joints, s.gripper_width / 2, s.gripper_width / 2],
                        velocity=[*s.joint_velocities, 0.0, 0.0])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        self.pose_pub.publish(pose_to_msg(s.ee, self.base_frame, stamp_ns))
        self.width_pub.publish(Float64(data=s.gripper_width))

    def _publish_diagnostics(self) -> None:
        state = self.robot.state
        level = {ControllerState.FAULT: DiagnosticStatus.ERROR, ControllerState.ESTOPPED: DiagnosticStatus.WARN}.get(
            state, DiagnosticStatus.OK)
        values = [KeyValue(key=f"rejected.{k}", value=str(v)) for k, v in sorted(self.robot.rejections.counts.items())]
        values.append(KeyValue(key="reflex_errors", value=str(self.robot.reflex_count)))
        values.append(KeyValue(key="contact_retreats", value=str(self.robot.contact_count)))
        msg = DiagnosticArray(status=[DiagnosticStatus(level=level, name="graspvla/controller", message=state.value,
                                                       hardware_id=self.robot.host, values=values)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def close(self) -> None:
        self._streaming.set()
        self._state_thread.join(timeout=2.0)
        self.robot.close()


def main(args: list[str] | None = None) -> int:
    return run(ControllerNode, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
