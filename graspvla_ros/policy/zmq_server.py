"""The official GraspVLA server's ZeroMQ loop around this project's backends (no ROS).

A ROUTER socket bound at tcp://host:port answers REQ clients that ``send_pyobj`` a request and
``recv_pyobj`` the reply (`official_protocol`). Requests are served in order, one at a time;
the reply is computed the policy node's way: request → `Observation` → ``backend.infer``. The
socket is bound only after a warm-up inference (the official clients have no receive timeout:
they must not connect to a server that is still loading). A bad request gets an error reply
(``{"info": "error", "message": ...}``; official clients raise on it) and the server goes on.

Seeds: request n (1, 2, … counting every request received since the start, refused ones too)
runs with flow-noise seed ``seed + n``; the warm-up uses ``seed``. Each request is logged on one
line with its number, size, seed and timings.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time

import numpy as np

from graspvla_ros.policy.official_protocol import (Limits, ProtocolError, decode_request, encode_reply, error_reply,
                                                   request_to_observation, success_reply)

log = logging.getLogger("graspvla.serve_zmq")
MAX_FRAMES = 8          # frames of one message kept; more are read and dropped
POLL_MS = 100           # how often the loop looks at its stop event
LINGER_MS = 1000        # how long close() waits to deliver the last reply
RCVHWM = 4              # messages queued per connection before ZeroMQ stops reading it


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dummy_observation():
    """A black scene at the official reset pose, gripper open (the warm-up's request)."""
    row = np.array([0.36307, -0.00142, 0.48912, -np.pi, 0.0, np.pi / 4, 1.0])
    image = np.zeros((256, 256, 3), np.uint8)
    return request_to_observation({"text": "pick up banana", "front_view_image": [image], "side_view_image": [image],
                  "proprio_array": [row] * 4})


class ZmqServer:
    """`backend`: a `policy.backend` backend whose ``infer(observation, seed=...)`` takes a seed
    (the graspvla one). Use: ``warm_up()``, ``bind()``, ``serve(stop_event)``, ``close()``."""

    def __init__(self, backend, host: str = "127.0.0.1", port: int = 8000, seed: int = 0,
                 limits: Limits = Limits()):
        self.backend, self.host, self.port, self.seed, self.limits = backend, host, int(port), int(seed), limits
        self.requests = 0           # received so far (the last one's number)
        self.last = None            # (request number, seed, PolicyOutput) of the last inference
        self.endpoint = ""
        self._context = self._socket = None

    def warm_up(self) -> float:
        """One inference on `dummy_observation` (seed `seed`); returns its seconds."""
        start = time.perf_counter()
        self.backend.infer(dummy_observation(), seed=self.seed)
        took = time.perf_counter() - start
        log.info(f"warm-up inference: {took * 1e3:.0f} ms")
        return took

    def bind(self) -> str:
        """Bind the ROUTER socket; returns the endpoint (port 0: a free port, said in it)."""
        import zmq

        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0…65535, got {self.port}")
        self._context = zmq.Context()
        sock = self._socket = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.zmq_max_message_bytes)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        host = self.host
        if ":" in host.strip("[]"):   # IPv6
            sock.setsockopt(zmq.IPV6, 1)
            host = f"[{host.strip('[]')}]"
        try:
            sock.bind(f"tcp://{host}:{self.port if self.port else '*'}")
        except zmq.ZMQError as err:
            self.close()
            raise ValueError(f"cannot bind tcp://{host}:{self.port}: {err}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if not is_loopback(self.host):
            log.warning(f"WARNING: bound to {self.endpoint}, reachable from other machines: anyone who can "
                        "connect can run the model (requests are decoded safely, but nothing authenticates them)")
        return self.endpoint

    def serve(self, stop: threading.Event) -> None:
        """Answer requests until `stop` is set (the request in progress is finished first)."""
        import zmq

        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        log.info(f"listening on {self.endpoint}")
        while not stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            frames = self._receive()
            received = time.perf_counter()
            envelope, payload = _split(frames)
            reply = self.handle(payload, received)
            self._socket.send_multipart([*envelope, reply])
        log.info(f"stopped after {self.requests} requests")

    def _receive(self) -> list[bytes]:
        import zmq

        frames = [self._socket.recv()]
        while self._socket.getsockopt(zmq.RCVMORE):
            frame = self._socket.recv()
            if len(frames) < MAX_FRAMES:
                frames.append(frame)
        return frames

    def handle(self, payload: bytes | ProtocolError, received: float | None = None) -> bytes:
        """One request's pickled payload (or why the message holds none) → the pickled reply;
        logs the request's line."""
        received = time.perf_counter() if received is None else received
        self.requests += 1
        n, seed = self.requests, self.seed + self.requests
        size = 0 if isinstance(payload, ProtocolError) else len(payload)
        decoded = inferred = None
        try:
            if isinstance(payload, ProtocolError):
                raise payload
            observation = request_to_observation(decode_request(payload, self.limits), self.limits)
            decoded = time.perf_counter()
            out = self.backend.infer(observation, seed=seed)
            inferred = time.perf_counter()
            self.last = (n, seed, out)
            reply, result = success_reply(out), (f"ok, bbox front {_box(out.bbox[0])} side {_box(out.bbox[1])}, "
                                                 f"grasp xyz {_box(out.grasp_xyz, 3)}")
        except ProtocolError as err:
            reply, result = error_reply(str(err)), f"error: {err}"
        except Exception as err:  # a failing backend answers this request with an error; the server goes on
            log.exception(f"request {n} failed")
            message = f"{'inference' if decoded else 'decoding'} failed: {type(err).__name__}: {err}"
            reply, result = error_reply(message), f"error: {message}"
        encoded = encode_reply(reply)
        ms = lambda a, b: f"{(b - a) * 1e3:.1f} ms"  # noqa: E731
        now = time.perf_counter()
        timings = [f"decode {ms(received, decoded or now)}"]
        if decoded is not None:
            timings = [f"seed {seed}", *timings, f"infer {ms(decoded, inferred or now)}"]
        (log.info if inferred is not None else log.warning)(
            f"request {n}: {size} B, {', '.join(timings)}, total {ms(received, now)}: {result}")
        return encoded

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._context is not None:
            self._context.term()
        self._socket = self._context = None


def _split(frames: list[bytes]) -> tuple[list[bytes], bytes | ProtocolError]:
    """(envelope to answer with, the request frame, or why the message is not one request)."""
    if len(frames) >= 2 and frames[1] == b"":
        envelope, rest = frames[:2], frames[2:]
    else:                      # a DEALER without the empty delimiter
        envelope, rest = frames[:1], frames[1:]
    if len(rest) == 1:
        return envelope, rest[0]
    return envelope, ProtocolError(f"a request is one frame (after REQ's empty delimiter), got {len(rest)}"
                                   + ("+" if len(frames) == MAX_FRAMES else ""))


def _box(values, digits: int = 0) -> str:
    return "[" + " ".join(f"{v:.{digits}f}" for v in values) + "]"
