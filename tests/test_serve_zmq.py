"""`graspvla serve-zmq`: the official GraspVLA clients' protocol, served safely by this project's
backends. A client written here (ZeroMQ REQ, pickle, as the official clients) talks to a real
server on 127.0.0.1 with tiny random weights; malicious pickles must be refused without running."""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

from graspvla_ros.chunk import Pose
from graspvla_ros.policy.observation import Frame, observation_from, proprio_row
from graspvla_ros.policy.official_protocol import REPLY_PICKLE_PROTOCOL, Limits
from graspvla_ros.preprocess import client_view, official_crop

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(max_message_bytes=2 * 2 ** 20)   # small, so the oversize payloads stay cheap
DEADLINE_S = 120.0                                # for one reply (tiny weights answer in well under 1 s)
PLAIN = (dict, list, tuple, str, float, int, bool, type(None))


# --- a client like the official ones ------------------------------------------------------------
class Client:
    def __init__(self, endpoint: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.REQ)
        self.socket.setsockopt(zmq.RCVTIMEO, int(DEADLINE_S * 1000))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def ask(self, request) -> dict:
        """send_pyobj / recv_pyobj as the official clients do; bytes are sent as they are."""
        if isinstance(request, bytes):
            self.socket.send(request)
        else:
            self.socket.send_pyobj(request)
        raw = self.socket.recv()
        self.raw_reply = raw
        return pickle.loads(raw)

    def close(self):
        self.socket.close()
        self.context.term()


def jpeg(image: np.ndarray) -> bytes:
    """As the real-robot client compresses (PIL, default quality)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def camera_image(seed: int) -> np.ndarray:
    """A 640×480 RGB camera frame with structure (smooth gradients and blocks, not just noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    image = np.stack([(x * 255 // 639), (y * 255 // 479), ((x + y) % 256)], axis=-1).astype(np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
        image[y0:y0 + 80, x0:x0 + 80] = rng.integers(0, 256, 3)
    return image


def proprio(gripper_prev: float = 1.0, gripper_cur: float = 1.0) -> list[np.ndarray]:
    """[prev, prev, prev, cur] rows as the real-robot client sends them."""
    prev = Pose.from_xyz_rpy([0.40, 0.02, 0.35], [3.1, 0.05, 0.8])
    cur = Pose.from_xyz_rpy([0.42, 0.01, 0.30], [-3.12, 0.02, 0.75])
    return [proprio_row(prev, gripper_prev)] * 3 + [proprio_row(cur, gripper_cur)]


def official_request(compressed: bool, seed: int = 0, **extra) -> dict:
    crop = official_crop()
    views = [client_view(camera_image(seed + i), crop) for i in range(2)]
    if compressed:
        views = [jpeg(v) for v in views]
    return {"text": "pick up banana", "front_view_image": [views[0]], "side_view_image": [views[1]],
            "proprio_array": proprio(), "compressed": compressed, **extra}


def assert_plain(obj, path="reply"):
    assert type(obj) in PLAIN, f"{path} is a {type(obj).__name__}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert_plain(k, f"{path} key")
            assert_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{path}[{i}]")


def assert_official_reply(reply: dict, raw: bytes):
    assert reply["info"] == "success", reply
    assert reply["env_id"] == 0
    result = np.array(reply["result"])
    assert result.shape == (8, 7) and np.isfinite(result).all()
    assert set(result[:, 6]) <= {-1.0, 0.0, 1.0}
    xyz, rpy = reply["debug"]["pose"]
    assert len(xyz) == 3 and len(rpy) == 3
    assert np.array(reply["debug"]["bbox"]).shape == (2, 4)
    assert_plain(reply)
    ops = [op.name for op, _, _ in pickletools.genops(raw)]
    assert ops[0] == "PROTO" and raw[1] == REPLY_PICKLE_PROTOCOL <= 4
    assert not {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ"} & set(ops), ops


# --- the server, in a thread of this process ------------------------------------------------------
def tiny_backend(tiny_checkpoint, **options):
    from graspvla_ros.policy.backends import create

    return create("graspvla", checkpoint=str(tiny_checkpoint[0]), llm_dir=str(tiny_checkpoint[1]), **options)


@pytest.fixture(scope="module")
def reference_backend(tiny_checkpoint):
    """A second backend on the server's weights: what the policy node would run."""
    return tiny_backend(tiny_checkpoint)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    from graspvla_ros.policy.zmq_server import ZmqServer

    srv = ZmqServer(tiny_backend(tiny_checkpoint), "127.0.0.1", 0, seed=100, limits=LIMITS)
    srv.warm_up()
    srv.bind()
    stop = threading.Event()
    thread = threading.Thread(target=srv.serve, args=(stop,), daemon=True)
    thread.start()
    yield srv
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    srv.close()


@pytest.fixture
def client(server):
    c = Client(server.endpoint)
    yield c
    c.close()


@pytest.mark.parametrize("compressed", [False, True], ids=["raw_arrays", "jpeg"])
def test_official_requests_get_well_formed_replies(client, compressed):
    extra = {"env_id": 7, "depth_array": [np.zeros((256, 256), np.uint16)], "traj_metadata": {"episode": 3}}
    reply = client.ask(official_request(compressed, **extra))
    assert_official_reply(reply, client.raw_reply)


def test_the_reply_is_what_the_policy_node_computes_for_the_same_scene(server, client, reference_backend):
    """Images as the node builds them (camera → official crop → 256² → JPEG 75 → decoded) and its
    proprio rows: the server's reply must equal `backend.infer(observation)` with the same seed,
    token for token. The history row's gripper is closed (−1): mapping it twice would show."""
    rows = proprio(gripper_prev=-1.0, gripper_cur=1.0)
    frames = [Frame(0, camera_image(20 + i), official_crop()) for i in range(2)]
    node_obs = observation_from(frames[0], frames[1], np.stack(rows), Pose.from_xyz_rpy(rows[-1][:3], rows[-1][3:6]),
                                "pick up banana", "banana", jpeg_quality=75)
    front, side = (jpeg(client_view(f.rgb, f.crop)) for f in frames)
    request = {"text": "pick up banana", "compressed": True, "proprio_array": rows,
               "front_view_image": [front], "side_view_image": [side]}
    reply = client.ask(request)
    assert_official_reply(reply, client.raw_reply)
    n, seed, out = server.last
    assert n == server.requests and seed == server.seed + n
    reference = reference_backend.infer(node_obs, seed=seed)
    assert out.tokens == reference.tokens
    assert reply["result"] == reference.waypoints.tolist()
    assert reply["debug"]["bbox"] == reference.bbox.tolist()
    assert reply["debug"]["pose"] == (reference.grasp_xyz.tolist(), reference.grasp_rpy.tolist())
    # the next request runs with the next seed: same scene, other flow noise, same tokens
    again = client.ask(request)
    assert server.last[1] == seed + 1 and server.last[2].tokens == reference.tokens
    assert again["result"] == reference_backend.infer(node_obs, seed=seed + 1).waypoints.tolist()


# --- numpy 1.x clients -------------------------------------------------------------------------
class Numpy1Pickler(pickle._Pickler):
    """Writes numpy's reconstructors under their numpy 1.x names (numpy.core.multiarray._reconstruct,
    numpy.core.multiarray.scalar, numpy.core.numeric._frombuffer), the rest as pickle does: the
    bytes a numpy 1.x client sends."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if not module.startswith("numpy._core."):
            return super().save_global(obj, name)
        module, name = "numpy.core." + module[len("numpy._core."):], name or obj.__qualname__
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = save_global


def numpy1_dumps(obj, protocol: int) -> bytes:
    buf = io.BytesIO()
    Numpy1Pickler(buf, protocol).dump(obj)
    return buf.getvalue()


def globals_named(raw: bytes) -> set[str]:
    """module.name of every global the pickle names: GLOBAL's argument, or the last two strings
    pushed before STACK_GLOBAL (directly or from the memo)."""
    names, memo, strings, top = set(), {}, [], None
    for op, arg, _ in pickletools.genops(raw):
        if op.name == "MEMOIZE":
            memo[len(memo)] = top
            continue
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = top
            continue
        top = memo.get(arg) if op.name in ("GET", "BINGET", "LONG_BINGET") else (
            arg if "UNICODE" in op.name else None)
        if op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            names.add(".".join(strings[-2:]))
        if top is not None:
            strings.append(top)
    return names


@pytest.mark.parametrize("numpy, protocol", [("1.x", 2), ("1.x", 4), ("1.x", 5), ("2.x", 4), ("2.x", 5)])
def test_numpy1_and_numpy2_requests_decode(numpy, protocol):
    from graspvla_ros.policy.official_protocol import decode_request

    request = official_request(False)
    request["proprio_array"] = [np.float64(0.5) * r for r in request["proprio_array"]]
    request["extras"] = [np.float32(1.5), np.int64(-3), np.bool_(True), np.array([[1, 2]], ">i4"),
                         np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.arange(12, dtype=np.uint8)[::-2],
                         np.zeros((0, 3), np.float16)]
    raw = numpy1_dumps(request, protocol) if numpy == "1.x" else pickle.dumps(request, protocol=protocol)
    names = globals_named(raw)
    core = "numpy.core." if numpy == "1.x" else "numpy._core."
    assert all(n.startswith(core) or n in ("numpy.ndarray", "numpy.dtype", "_codecs.encode", "__builtin__.bytes")
               for n in names), names
    assert f"{core}multiarray.scalar" in names
    assert (f"{core}numeric._frombuffer" in names) == (protocol == 5)
    assert f"{core}multiarray._reconstruct" in names  # protocol 5 too: the strided view has no buffer
    got = decode_request(raw)
    for key in ("front_view_image", "side_view_image"):
        np.testing.assert_array_equal(got[key][0], request[key][0])
        assert got[key][0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack(got["proprio_array"]), np.stack(request["proprio_array"]))
    scalars, arrays = got["extras"][:3], got["extras"][3:]
    assert scalars == [1.5, -3, True] and [type(v) for v in scalars] == [float, int, bool]
    for a, b in zip(arrays, request["extras"][3:], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype and a.shape == b.shape


def _state_pickle(state, subtype=np.ndarray) -> bytes:
    """An array pickle with the given numpy state (version, shape, dtype, fortran, data)."""
    class Crafted:
        def __reduce__(self):
            return np._core.multiarray._reconstruct, (subtype, (0,), b"b"), state
    return pickle.dumps({"a": Crafted()}, protocol=4)


@pytest.mark.parametrize("payload, says", [
    (_state_pickle((1, (4,), np.dtype("f8"), False, b"\0" * 8)), "needs 32"),
    (_state_pickle((1, (2 ** 40, 2 ** 40), np.dtype("u1"), False, b"")), "needs"),
    (_state_pickle((1, (-1,), np.dtype("u1"), False, b"")), "shape"),
    (_state_pickle((2, (1,), np.dtype("u1"), False, b"\0")), "array state"),
    (_state_pickle((1, (1,), np.dtype("u1"), False, b"\0"), np.matrix), "numpy.matrix"),
    (_state_pickle((1, (1,), "u1", False, b"\0")), "plain dtype"),
    (pickle.dumps(np.array([b"ab"]), protocol=4), "numpy dtype 'S2'"),
    (pickle.dumps(np.array([1 + 2j]), protocol=4), "numpy dtype 'c16'"),
    (pickle.dumps(np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]), protocol=4), "numpy dtype 'V12'"),
    (pickle.dumps(np.datetime64("2026-01-01"), protocol=4), "numpy dtype 'M8'"),
], ids=["short data", "huge shape", "negative shape", "state version", "matrix", "dtype not a dtype", "bytes dtype",
        "complex", "structured", "datetime"])
def test_arrays_are_rebuilt_only_from_checked_states(payload, says):
    from graspvla_ros.policy.official_protocol import ProtocolError, decode_request

    with pytest.raises(ProtocolError) as err:
        decode_request(payload)
    assert says in str(err.value), err.value


def test_a_numpy1_client_is_answered(client):
    raw = numpy1_dumps(official_request(False), 4)
    assert "numpy.core.multiarray._reconstruct" in globals_named(raw)
    assert_official_reply(client.ask(raw), client.raw_reply)


# --- malicious and broken requests ---------------------------------------------------------------
MARKER = Path(f"/tmp/graspvla_serve_zmq_pwned_{os.getpid()}")


class RunsShell:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


class Execs:
    def __reduce__(self):
        return exec, (f"open({str(MARKER)!r}, 'w').close()",)


class TestDefined:
    pass


class ListData:
    """An f8 array whose data is a list, as an object array's is."""

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), np.dtype("f8"), False, [1.0])


def nested(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


def _pickled(obj, protocol=4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def bad_payloads() -> dict[str, tuple[bytes, str]]:
    """name → (payload, what the error message must say)."""
    from collections import OrderedDict

    good = _pickled(official_request(False))
    dtype_o = _pickled(np.array([1, "a"], dtype=object)).replace(b"\x8c\x02O8", b"\x8c\x02f8")
    return {
        "os.system": (_pickled({**official_request(False), "text": RunsShell()}), "posix.system"),
        "exec": (_pickled([Execs()]), "builtins.exec"),
        "OrderedDict": (_pickled(OrderedDict(text="pick up banana")), "collections.OrderedDict"),
        "test class": (_pickled({"text": TestDefined()}), "TestDefined"),
        "oversize": (_pickled({"blob": b"x" * int(1.5 * LIMITS.max_message_bytes)}), "the limit is"),
        "truncated": (good[:len(good) // 2], "not a valid request pickle"),
        "object array": (_pickled({"front_view_image": [np.array([1, "a"], dtype=object)]}), "numpy dtype 'O8'"),
        "object array p5": (_pickled([np.array([None], dtype=object)], 5), "numpy dtype 'O8'"),
        "object dtype as f8": (dtype_o, "refused numpy dtype state"),
        "list as array data": (_pickled(ListData()), "not bytes"),
        "set": (_pickled({"text": {1, 2}}), "type set"),
        "not a dict": (_pickled([1, 2]), "must be a dict"),
        "missing key": (_pickled({"text": "pick up banana"}), "front_view_image"),
        "2-D image": (_pickled({**official_request(False), "side_view_image": [np.zeros((8, 8), np.uint8)]}),
                      "HxWx3 uint8"),
        "huge jpeg": (_pickled({**official_request(True),
                                "front_view_image": [jpeg(np.zeros((8, 4097, 3), np.uint8))]}),
                      "4097×8, the limit is 4096"),
        "bytes as jpeg": (_pickled({**official_request(True), "front_view_image": [b"GIF89a not a jpeg"]}),
                          "not a JPEG or PNG"),
        "nan proprio": (_pickled({**official_request(False), "proprio_array": [np.full(7, np.nan)] * 4}), "non-finite"),
        "deep": (_pickled({"text": nested(LIMITS.max_depth + 5)}), "too complex"),
    }


BAD = bad_payloads()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_requests_get_an_error_reply_and_run_nothing(server, client, name):
    payload, says = BAD[name]
    served = server.requests
    reply = client.ask(payload)
    assert reply["info"] == "error" and says in reply["message"], reply
    assert_plain(reply)
    assert not MARKER.exists(), "a pickled call ran"
    # the server goes on with the next good request
    assert_official_reply(client.ask(official_request(True)), client.raw_reply)
    assert server.requests == served + 2
    assert not MARKER.exists()


def test_a_payload_over_the_transport_cap_is_cut_off_and_the_server_goes_on(server):
    """Over twice the limit ZeroMQ drops the connection unread (no reply: seen as a disconnect)."""
    c = Client(server.endpoint)
    monitor = c.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    monitor.setsockopt(zmq.RCVTIMEO, int(DEADLINE_S * 1000))
    try:
        c.socket.send(b"x" * (LIMITS.zmq_max_message_bytes + 1))
        from zmq.utils.monitor import recv_monitor_message

        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    finally:
        c.socket.disable_monitor()
        monitor.close()
        c.close()
    other = Client(server.endpoint)
    try:
        assert_official_reply(other.ask(official_request(True)), other.raw_reply)
    finally:
        other.close()


def test_a_message_that_is_not_one_request_frame_gets_an_error_reply(server):
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, int(DEADLINE_S * 1000))
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.endpoint)
    try:
        dealer.send_multipart([b"", _pickled(official_request(True)), b"extra"])
        delimiter, raw = dealer.recv_multipart()
        reply = pickle.loads(raw)
        assert delimiter == b"" and reply["info"] == "error" and "got 2" in reply["message"], reply
    finally:
        dealer.close()
        context.term()


# --- the command ---------------------------------------------------------------------------------
class ServerProcess:
    """`graspvla serve-zmq ...` in a child process; its output lines are collected as they come."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "graspvla_ros.cli", "serve-zmq", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"serve-zmq exited ({self.proc.wait()}) before {text!r}:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from serve-zmq within {timeout} s:\n" + "\n".join(self.lines))

    def stop(self, sig: int, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code


@pytest.mark.parametrize("host, sig", [("127.0.0.1", signal.SIGTERM), ("0.0.0.0", signal.SIGINT)],
                         ids=["loopback-SIGTERM", "all_interfaces-SIGINT"])
def test_the_command_serves_tiny_weights_and_stops_cleanly(host, sig):
    server = ServerProcess("--tiny", "--port", "0", "--host", host, "--seed", "5")
    try:
        endpoint = server.wait_for("listening on tcp://", 300).split("listening on ")[1].strip()
        warned = any("WARNING" in line and "reachable from other machines" in line for line in server.lines)
        assert warned == (host != "127.0.0.1"), server.lines
        assert any("warm-up inference" in line for line in server.lines)
        client = Client(endpoint.replace("0.0.0.0", "127.0.0.1"))
        try:
            assert_official_reply(client.ask(official_request(True)), client.raw_reply)
        finally:
            client.close()
        server.wait_for("request 1:", 30)
        assert server.stop(sig) == 0, server.lines
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    line = next(line for line in server.lines if "request 1:" in line)
    assert "seed 6" in line and " B, " in line and "infer" in line and "total" in line and ": ok" in line, line
    assert any("stopped after 1 requests" in line for line in server.lines), server.lines


def test_cuda_is_refused_with_a_clear_error_where_there_is_none(capsys):
    import torch

    from graspvla_ros.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["serve-zmq", "--tiny", "--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_device_and_dtype_reach_the_torch_backend(tiny_checkpoint):
    import torch

    from graspvla_ros.commands.serve_zmq import model_options

    options = model_options("torch", "cpu", "bfloat16")
    assert options == {"device": "cpu", "dtype": torch.bfloat16}
    backend = tiny_backend(tiny_checkpoint, model_options=options)
    components = backend.model.components
    assert components.device.type == "cpu" and components.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="float32 export"):
        model_options("onnxruntime", None, "bfloat16")
