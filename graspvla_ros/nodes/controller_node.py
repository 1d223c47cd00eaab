"""controller_node: streams GraspVLA action chunks to a Franka arm through franky.

Topics, services and parameters: docs/interfaces.md (## Controller).
"""
from __future__ import annotations

import dataclasses
import sys
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory
from visualization_msgs.msg import MarkerArray

from graspvla_ros.calibration.nominal import load_nominal
from graspvla_ros.control import ArmController, ControllerSettings, ControllerState
from graspvla_ros.control.robot_clock import RobotClock
from graspvla_ros.interfaces import (ACTION_CHUNK, CALIBRATION_POSE, COMMANDED_POSE, CONTROLLER_CLOCK,
                                     CONTROLLER_DIAGNOSTICS, CONTROLLER_REJECTION, CONTROLLER_STATE, DIAGNOSTICS, EE_POSE,
                                     ESTOP, GRIPPER_COMMAND, GRIPPER_WIDTH, HOLD, HOME, JOINT_STATES, PLANNED_MARKERS,
                                     PLANNED_PATH, RECOVER, RELEASE, under)
from graspvla_ros.nodes import chunk_msg
from graspvla_ros.nodes.common import periodic, run
from graspvla_ros.nodes.convert import ns_to_stamp, pose_to_msg
from graspvla_ros.nodes.markers import path_markers
from graspvla_ros.nodes.params import declare
from graspvla_ros.nodes.tf import TfBroadcaster, transform_msg
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.settings import build, params

CONFIG = 'controller.yaml'
PARAMS = params(ControllerSettings)

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("controller")
        settings = build(ControllerSettings, declare(self, PARAMS, on_change=self._apply))
        settings = dataclasses.replace(settings, safety=dataclasses.replace(settings.safety, frame_id=settings.base_frame))
        self.base_frame = settings.base_frame
        arm = settings.arm_id
        self.joint_names = [f"{arm}_joint{i}" for i in range(1, 8)] + [f"{arm}_finger_joint1", f"{arm}_finger_joint2"]

        self.state_pub = self.create_publisher(String, CONTROLLER_STATE, LATCHED)
        self.gripper_pub = self.create_publisher(Float64, GRIPPER_COMMAND, LATCHED)
        self.rejection_pub = self.create_publisher(String, CONTROLLER_REJECTION, 10)
        self.joint_pub = self.create_publisher(JointState, JOINT_STATES, 10)
        self.pose_pub = self.create_publisher(PoseStamped, EE_POSE, 10)
        self.commanded_pub = self.create_publisher(PoseStamped, COMMANDED_POSE, 10)
        self.planned_pub = self.create_publisher(PoseArray, PLANNED_PATH, 10)
        self.markers_pub = self.create_publisher(MarkerArray, PLANNED_MARKERS, 10)
        self.width_pub = self.create_publisher(Float64, GRIPPER_WIDTH, 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.tcp_frame = settings.tcp_frame
        self.tf = TfBroadcaster(self) if settings.tf_rate_hz > 0 else None
        self._tf_every = max(1, round(settings.state_rate_hz / settings.tf_rate_hz)) if settings.tf_rate_hz else 0
        self._samples = 0

        # Every stamp and due time comes from the node clock (sim time in the sim graph).
        self.robot = ArmController(settings, clock=lambda: self.get_clock().now().nanoseconds)
        self.robot.add_state_listener(self._publish_state)
        self.robot.on_gripper_command = self._publish_gripper_command
        self.robot.on_commanded = lambda pose: self.commanded_pub.publish(
            pose_to_msg(pose, self.base_frame, self.get_clock().now().nanoseconds))
        self.robot.on_planned = self._publish_planned
        if settings.dry_run:
            self.get_logger().warning(f"DRY RUN: motions are computed and published on {PLANNED_PATH} and "
                                      f"{PLANNED_MARKERS}; the arm and the gripper are not moved")

        # Services live on side nodes with executors of their own, created before the first
        # home: e-stop and hold must answer while a home moves, and chunks keep flowing.
        self.side_nodes = []
        calibration_joints = load_nominal().calibration_joints
        for service, action in ((HOME, self.robot.home), (ESTOP, self.robot.estop), (HOLD, self.robot.hold),
                                (RELEASE, self.robot.release), (RECOVER, self.robot.recover),
                                (CALIBRATION_POSE, lambda: self.robot.home(joints=calibration_joints))):
            # use_global_arguments=False: the process's `__node:=` remap must not rename these too
            name = service.removeprefix("~/")
            side = Node(f"{self.get_name()}_{name}_service", namespace=self.get_namespace(), context=self.context,
                        use_global_arguments=False)
            side.create_service(Trigger, under(self.get_fully_qualified_name(), service), self._trigger(name, action))
            self.side_nodes.append(side)
        # the clock the chunks are judged on, for the policy's offset ping-pong: answered at once, on its own executor
        side = Node(f"{self.get_name()}_clock_service", namespace=self.get_namespace(), context=self.context,
                    use_global_arguments=False)
        side.create_service(Trigger, under(self.get_fully_qualified_name(), CONTROLLER_CLOCK), self._clock_now)
        self.side_nodes.append(side)
        self.robot.connect(timeout=settings.connect_wait)
        self.get_logger().info(
            f"connected to {settings.robot_ip} ({settings.strategy}, dynamics {settings.relative_dynamics_factor}); "
            f"TCP = franky end effector + {settings.tcp_offset:.3f} m along its z")
        if settings.home_on_start:
            try:  # runs on the controller's worker (HOMING); the services answer meanwhile
                self.robot.request_home()
            except RuntimeError as err:  # a user stop pressed at start: the state says so
                self.get_logger().warning(f"no home at start: {err}")
        else:  # no home to open the gripper: announce the state the fingers show
            self._publish_state(self.robot.state, "connected")
            self._publish_gripper_command(self.robot.gripper_command)
        self.create_subscription(MultiDOFJointTrajectory, ACTION_CHUNK, self._on_chunk, 10)
        # State streams from a plain thread: a 200 Hz rclpy timer competes with chunk
        # reception inside the executor and delayed chunks by up to 0.5 s under load.
        self._streaming = threading.Event()
        self._state_error = ""
        self.robot_clock = RobotClock(sim_time=self.get_parameter("use_sim_time").value)
        self._state_thread = threading.Thread(
            target=periodic, args=(self, 1.0 / settings.state_rate_hz, self._publish_robot_state, self._streaming),
            name="state-publisher", daemon=True)
        self._state_thread.start()
        self.create_timer(1.0, self._publish_diagnostics)

    def _apply(self, changes: dict) -> None:
        """Live parameters: checked here (a ValueError refuses the set), applied from the next motion."""
        for name, value in changes.items():
            self.robot.apply(name, value)
            self.get_logger().info(f"parameter {name} = {value}")

    def _trigger(self, name, action):
        def handle(_request, response):
            try:
                action()
                response.success, response.message = True, f"{name}: done, state {self.robot.state.value}"
            except Exception as err:  # report to the caller; the executor keeps the arm safe
                response.success, response.message = False, f"{name} failed: {err}"
            return response
        return handle

    def _clock_now(self, _request, response):
        response.success, response.message = True, str(self.get_clock().now().nanoseconds)
        return response

    def _on_chunk(self, msg: MultiDOFJointTrajectory) -> None:
        try:
            chunk = chunk_msg.decode(msg)
        except ValueError as err:
            self._reject("malformed", str(err))
            return
        self.robot.latency.add("controller_received", (self.get_clock().now().nanoseconds - chunk.stamp_ns) / 1e6)
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

    def _publish_planned(self, poses) -> None:
        """The TCP path of a motion the controller commanded (or, in a dry run, would have), for
        RViz/Foxglove: the poses, a line through them, and a sphere at its end in the colour of
        the commanded gripper state (green open, red closed)."""
        if not poses or not self.context.ok():
            return
        stamp = self.get_clock().now().to_msg()
        self.planned_pub.publish(PoseArray(header=Header(stamp=stamp, frame_id=self.base_frame),
                                           poses=[pose_to_msg(p, self.base_frame, 0).pose for p in poses]))
        self.markers_pub.publish(path_markers(poses, self.base_frame, stamp, self.robot.gripper_command < 0))

    def _publish_robot_state(self) -> None:
        """One state sample; while the robot does not answer nothing is published (the stream
        goes quiet and diagnostics say why) and the thread waits for it to come back."""
        try:
            s = self.robot.read_state()
        except Exception as err:  # NetworkException, not connected: the controller's worker reacts
            if not self._state_error:
                self.get_logger().warning(f"robot state unavailable: {err}")
            self._state_error = str(err)
            return
        if self._state_error:
            self.get_logger().info("robot state streams again")
            self._state_error = ""
        stamp_ns = self.robot_clock.to_node_ns(s.robot_time, s.stamp_ns)
        stamp = ns_to_stamp(stamp_ns)
        js = JointState(name=self.joint_names, position=[*s.joints, s.gripper_width / 2, s.gripper_width / 2],
                        velocity=[*s.joint_velocities, 0.0, 0.0])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        self.pose_pub.publish(pose_to_msg(s.ee, self.base_frame, stamp_ns))
        if self.tf is not None and self._samples % self._tf_every == 0:
            self.tf.send([transform_msg(self.base_frame, self.tcp_frame, stamp_ns, s.ee)])
        self._samples += 1
        self.width_pub.publish(Float64(data=s.gripper_width))

    def _publish_diagnostics(self) -> None:
        robot = self.robot
        state = robot.state
        level = {ControllerState.FAULT: DiagnosticStatus.ERROR, ControllerState.ESTOPPED: DiagnosticStatus.WARN,
                 ControllerState.USER_STOPPED: DiagnosticStatus.WARN,
                 ControllerState.DISCONNECTED: DiagnosticStatus.ERROR}.get(state, DiagnosticStatus.OK)
        if level == DiagnosticStatus.OK and (robot.ee_warning or self._state_error):
            level = DiagnosticStatus.WARN
        values = [KeyValue(key=f"rejected.{k}", value=str(v)) for k, v in sorted(robot.rejections.counts.items())]
        values += [KeyValue(key=f"faults.{k}", value=str(v)) for k, v in sorted(robot.faults.items())]
        values += [KeyValue(key="connected", value=str(robot.connected).lower()),
                   KeyValue(key="reflex_errors", value=str(robot.reflex_count)),
                   KeyValue(key="contact_retreats", value=str(robot.contact_count)),
                   KeyValue(key="gripper_failures", value=str(robot.gripper_failures)),
                   KeyValue(key="end_effector", value=robot.ee_warning or "as expected"),
                   KeyValue(key="state_stream", value=self._state_error or "ok")]
        values += [KeyValue(key=k, value=v) for k, v in robot.latency.diagnostics().items()]
        msg = DiagnosticArray(status=[DiagnosticStatus(level=level, name=CONTROLLER_DIAGNOSTICS, message=state.value,
                                                       hardware_id=robot.host, values=values)])
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
