"""Every parameter of the policy, once: the node's table, config/policy.yaml and the docs come
from these fields (graspvla_ros.settings).

Four are live (`ros2 param set` changes the running policy, `PolicyLoop.update`): `rate_hz`
from the worker's next wait (one waiting out a long period wakes for the new one),
`max_image_age` from the next cycle, `episode_timeout` for the running episode too, and the
tests' `link_emulation` from the next message (the node's). The rest is read once at start.
"""
from __future__ import annotations

from dataclasses import dataclass

from graspvla_ros.interfaces import CONTROLLER
from graspvla_ros.latency import WINDOW_S
from graspvla_ros.model.backends import BACKENDS as RUNTIMES
from graspvla_ros.policy.netem import LinkSpec
from graspvla_ros.settings import setting

BACKENDS = ("graspvla", "expert")  # policy.backends.create makes each
TRANSPORTS = ("raw", "model_view")


@dataclass(frozen=True)
class PolicySettings:
    backend: str = setting(
        'graspvla', '`graspvla` (the model) or `expert` (simulation only: scripted grasps from the sim ground truth)')
    runtime: str = setting('torch', 'graspvla backend: `torch`, `onnxruntime` or `tensorrt`')
    device: str = setting(
        'cpu', 'graspvla backend, torch runtime: `cpu` (fp32: the official numerics) or `cuda` (the fastest path '
               'the machine has: bf16, static KV cache, CUDA graphs, torch.compile; one warm-up inference at start)')
    checkpoint: str = setting(
        '', 'graspvla backend: official checkpoint directory (config.json, preprocessor.npz, checkpoint/)')
    llm_dir: str = setting('', "graspvla backend: the LLM's Hugging Face directory (config.json, tokenizer.model); "
                               "empty: next to the checkpoint")
    onnx_dir: str = setting(
        '', 'graspvla backend: `graspvla export` directory for onnxruntime/tensorrt (empty: export on the fly)')
    tiny: bool = setting(False, 'graspvla backend: generate a tiny random checkpoint at start (runs the real code '
                                'path, will not grasp)')
    expert_latency: float = setting(0.0, "expert backend: s it takes to answer, as the model would (the official "
                                         "client is tuned for ~0.25 s)")
    seed: int = setting(0, 'seed of the flow noise (cycle k uses seed + k) and of the tiny checkpoint')
    rate_hz: float = setting(
        5.0, 'most inference cycles per second (it runs as fast as the backend and new images allow up to it)',
        live=True)
    waypoint_dt: float = setting(0.1, 's between the 8 waypoints of a chunk')
    jpeg_quality: int = setting(75, 'JPEG quality of the views, as the official client sends them (0 = no JPEG)')
    transport: str = setting(
        'raw', "`raw`: the cameras' images (sensor_msgs/Image), cropped, resized and JPEG'd here; `model_view`: "
               "model_view_node on the robot host does that and sends the result (sensor_msgs/CompressedImage, the "
               "same bytes at ~2 % of the raw ones): for a policy on another host")
    max_view_skew: float = setting(0.05, 's, most the front and side stamps of a pair may differ')
    max_image_age: float = setting(0.3, 's, oldest a pair may be when a cycle starts', live=True)
    proprio_lookback: float = setting(0.3, 's between the history proprio rows and the current one')
    history: str = setting(
        'measured', "`measured`: the proprio history is the TCP measured `proprio_lookback` s before the images and "
                    "chunks chain from the measured pose (the official non-blocking client); `commanded`: it is the "
                    "waypoint commanded 3 before the last, chunks chain from the last commanded one (the official "
                    "blocking client: pair it with the controller's `official_blocking`)")
    episode_timeout: float = setting(60.0, 's after which an episode without a successful grasp ends', live=True)
    lift_success: float = setting(0.10, 'm the TCP must rise after the gripper closed for the episode to succeed')
    min_grasp_width: float = setting(0.005, 'm, a closed gripper measured narrower than this (/graspvla/gripper_width) '
                                            'holds nothing: no success')
    base_frame: str = setting('base', 'the frame chunks must be in and poses are published in')
    link_timeout: float = setting(
        1.0, "s without a TCP pose from the controller (the robot host, on two machines the link to it) after which "
             "the running episode ends (`link_lost`): a person re-sends the instruction once the link is back; "
             "0 = not watched. On this host's steady clock")
    latency_window: float = setting(WINDOW_S, "s of cycles (steady clock) up to the newest that the latency "
                                              "chain's p50/p99 on /diagnostics cover")
    link_emulation: str = setting(
        '', "TESTS ONLY, where the kernel has no `tc netem`: a slow, lossy link to the robot host emulated in this "
            "node, `delay=0.05,jitter=0.02,loss=0.05` (s, s, fraction): the views and TCP poses it receives and the "
            "chunks it sends are delayed (in order) and dropped (policy.netem); empty: off", live=True)
    controller: str = setting(CONTROLLER, "the controller node: its `state` topic and `hold`/`home` services")

    def __post_init__(self) -> None:
        """A bad value fails here, at start or when set live, with its reason."""
        checks = (
            (self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"),
            (self.runtime in RUNTIMES, f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"),
            (self.device in ("cpu", "cuda"), f"device must be cpu or cuda, got {self.device!r}"),
            (self.expert_latency >= 0, f"expert_latency must be ≥ 0 s, got {self.expert_latency}"),
            (self.rate_hz > 0, f"rate_hz must be > 0, got {self.rate_hz}"),
            (self.waypoint_dt > 0, f"waypoint_dt must be > 0 s, got {self.waypoint_dt}"),
            (0 <= self.jpeg_quality <= 100, f"jpeg_quality must be 0 (no JPEG) … 100, got {self.jpeg_quality}"),
            (self.transport in TRANSPORTS, f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}"),
            (self.transport == "raw" or self.jpeg_quality > 0,
             "transport model_view sends JPEGs: jpeg_quality must be 1 … 100, got 0"),
            (self.max_view_skew >= 0, f"max_view_skew must be ≥ 0 s, got {self.max_view_skew}"),
            (self.max_image_age > 0, f"max_image_age must be > 0 s, got {self.max_image_age}"),
            (self.proprio_lookback >= 0, f"proprio_lookback must be ≥ 0 s, got {self.proprio_lookback}"),
            (self.history in ("measured", "commanded"), f"history must be measured or commanded, got {self.history!r}"),
            (self.link_timeout >= 0, f"link_timeout must be ≥ 0 s (0: not watched), got {self.link_timeout}"),
            (self.latency_window > 0, f"latency_window must be > 0 s, got {self.latency_window}"),
            (_link_spec_error(self.link_emulation) is None, _link_spec_error(self.link_emulation)),
            (self.episode_timeout > 0, f"episode_timeout must be > 0 s, got {self.episode_timeout}"),
            (self.lift_success > 0, f"lift_success must be > 0 m, got {self.lift_success}"),
            (self.min_grasp_width >= 0, f"min_grasp_width must be ≥ 0 m, got {self.min_grasp_width}"),
            (bool(self.base_frame), "base_frame must not be empty"),
        )
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)


def _link_spec_error(text: str) -> str | None:
    try:
        LinkSpec.parse(text)
    except ValueError as err:
        return str(err)
    return None
