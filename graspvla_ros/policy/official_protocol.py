"""The official GraspVLA server protocol without ROS or ZeroMQ: requests in, replies out.

Request (pickled by the official clients' ``send_pyobj``): {"text": "pick up banana",
"front_view_image": [HxWx3 uint8, ...], "side_view_image": [...], "proprio_array": 4 rows of
x, y, z, roll, pitch, yaw ('sxyz'), gripper ±1, "compressed": bool (True: JPEG bytes)}. Only the
last image of each list is used; other keys (depth_array, env_id, traj_metadata) are ignored.
The proprio rows reach the backend unchanged, as the policy node's do: the model picks rows [-4]
and [-1] and maps the gripper g → (g + 1) / 2 itself (`model.generate.official_proprio_rows`).

Decoding runs nothing a peer names: `RestrictedUnpickler.find_class` resolves only numpy's
array, dtype and scalar reconstructors, to this module's builders, which check every argument
(plain dtypes: bool, ints, floats; bytes of exactly the right length) before one `np.frombuffer`.
The decoded object must then consist of dict, list, tuple, str, bytes, int, float, bool, None and
such arrays. Replies hold plain lists, tuples and floats (the clients run numpy 1.x, which cannot
load numpy 2 pickles), pickled with protocol 4 (their Python 3.8 loads it).
"""
from __future__ import annotations

import io
import math
import pickle
import reprlib
import time
from dataclasses import dataclass

import numpy as np

from graspvla_ros.chunk import Pose

REPLY_PICKLE_PROTOCOL = 4
IMAGE_KEYS = ("front_view_image", "side_view_image")
IMAGE_FORMATS = ("JPEG", "PNG")
_PLAIN_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
_ENDIANS = {"<", ">", "|", "="}
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


class ProtocolError(ValueError):
    """A request refused; the message goes back to the client in the error reply."""


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * 2 ** 20   # the pickled request
    max_image_side: int = 4096              # px, width and height, raw or JPEG
    max_text_chars: int = 1000
    max_proprio_rows: int = 64
    max_objects: int = 100_000              # objects in the decoded request (shared ones count each time)
    max_depth: int = 32                     # nesting of containers

    @property
    def zmq_max_message_bytes(self) -> int:
        """The transport's hard cap: up to it a request is received and refused with an error
        reply; beyond it ZeroMQ drops the connection without reading the message."""
        return 2 * self.max_message_bytes


# --- restricted unpickling -------------------------------------------------------------------
class _Global:
    """What `find_class` gives pickle for an allowed name: calls run the checked builder `fn`;
    BUILD cannot change it (a stream could set a plain function's attributes for good)."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn=None):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        if self.fn is None:
            raise ProtocolError(f"refused to call {self.name}")
        return self.fn(*args)

    def __setstate__(self, state) -> None:
        raise ProtocolError(f"refused to set the state of {self.name}")


_NDARRAY = _Global("numpy.ndarray")   # only an argument of _reconstruct; cannot be called


class _Dtype:
    """numpy.dtype(spec, align, copy) of a plain spec; its BUILD state may only set the byte order."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state) -> None:
        if not (type(state) is tuple and len(state) == 8 and state[0] == 3 and state[1] in _ENDIANS
                and state[2:] == (None, None, None, -1, -1, 0)):
            raise ProtocolError(f"refused numpy dtype state {_short.repr(state)} (plain dtypes only)")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _make_dtype(spec, align=False, copy=True) -> _Dtype:
    if type(spec) is not str or spec not in _PLAIN_DTYPES:
        raise ProtocolError(f"refused numpy dtype {_short.repr(spec)}: only bool, integer and float arrays")
    return _Dtype(np.dtype(spec))


def _array(data, dtype, shape, order: str = "C") -> np.ndarray:
    """The one place an array is made from the peer's bytes, after checking everything (also
    numpy's `_frombuffer(buf, dtype, shape, order)` of protocol 5 pickles)."""
    if type(dtype) is not _Dtype:
        raise ProtocolError("refused a numpy array without a plain dtype")
    if type(shape) is not tuple or len(shape) > 8 or any(type(n) is not int or n < 0 for n in shape):
        raise ProtocolError(f"refused numpy array shape {_short.repr(shape)}")
    if type(data) not in (bytes, bytearray):
        raise ProtocolError("refused numpy array data that is not bytes (object arrays are not accepted)")
    if order not in ("C", "F"):
        raise ProtocolError(f"refused numpy array order {_short.repr(order)}")
    if len(data) != math.prod(shape) * dtype.dtype.itemsize:
        raise ProtocolError(f"numpy array data has {len(data)} bytes, shape {shape} of {dtype.dtype} needs "
                            f"{math.prod(shape) * dtype.dtype.itemsize}")
    if not data:
        return np.zeros(shape, dtype.dtype)
    return np.frombuffer(data, dtype.dtype).reshape(shape, order=order)


class _ArrayBuilder:
    """What `_reconstruct` returns; pickle's BUILD gives it numpy's state and it makes the array."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state) -> None:
        if type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise ProtocolError(f"refused numpy array state {_short.repr(state)}")
        shape, dtype, fortran, data = state[-4:]
        if type(fortran) is not bool:
            raise ProtocolError("refused numpy array state: bad order flag")
        self.array = _array(data, dtype, shape, "F" if fortran else "C")


def _reconstruct(subtype, shape, typecode) -> _ArrayBuilder:
    if subtype is not _NDARRAY:
        raise ProtocolError("refused an array subclass: only numpy.ndarray")
    return _ArrayBuilder()


def _scalar(dtype, data):
    """A numpy scalar, as the equal plain Python bool / int / float."""
    return _array(data, dtype, ()).item()


def _latin1(text, encoding):                                # bytes in protocol ≤ 2 pickles
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise ProtocolError("refused _codecs.encode other than str → latin-1 bytes")
    return text.encode("latin-1")


_GLOBALS = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _Global("numpy.dtype", _make_dtype),
            ("_codecs", "encode"): _Global("_codecs.encode", _latin1),
            ("__builtin__", "bytes"): _Global("bytes", lambda: b"")}   # b"" in protocol ≤ 2 pickles
for _core in ("numpy.core", "numpy._core"):                 # numpy 1.x and numpy 2.x names
    for _module, _name, _fn in (("multiarray", "_reconstruct", _reconstruct), ("multiarray", "scalar", _scalar),
                                ("numeric", "_frombuffer", _array)):
        _GLOBALS[(f"{_core}.{_module}", _name)] = _Global(f"{_core}.{_module}.{_name}", _fn)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays of plain dtypes; any other global is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise ProtocolError(f"refused to load {str(module)[:80]}.{str(name)[:80]}: requests may hold only "
                                "plain data and numpy arrays of bool, integer or float") from None


def _plain(obj, limits: Limits, count: list[int], depth: int = 0):
    """`obj` with array builders replaced by their arrays; ProtocolError for anything else."""
    count[0] += 1
    if count[0] > limits.max_objects or depth > limits.max_depth:
        raise ProtocolError(f"request too complex (over {limits.max_objects} objects or {limits.max_depth} levels)")
    t = type(obj)
    if obj is None or t in (str, bytes, int, float, bool):
        return obj
    if t in (list, tuple):
        return t(_plain(x, limits, count, depth + 1) for x in obj)
    if t is dict:
        out = {}
        for k, v in obj.items():
            if k is not None and type(k) not in (str, bytes, int, float, bool):
                raise ProtocolError(f"refused a dict key of type {type(k).__name__}")
            out[k] = _plain(v, limits, count, depth + 1)
        return out
    if t is _ArrayBuilder and obj.array is not None:
        return obj.array
    if t is np.ndarray and obj.dtype.kind in "biuf" and obj.dtype.itemsize <= 8 and not obj.dtype.hasobject:
        return obj
    raise ProtocolError(f"refused an object of type {t.__name__}: requests may hold only dict, list, tuple, str, "
                        "bytes, int, float, bool, None and numpy arrays of bool, integer or float")


def decode_request(payload: bytes, limits: Limits = Limits()) -> dict:
    """The request dict from the pickled bytes, or ProtocolError saying why not."""
    if len(payload) > limits.max_message_bytes:
        raise ProtocolError(f"request is {len(payload)} bytes, the limit is {limits.max_message_bytes}")
    try:
        obj = RestrictedUnpickler(io.BytesIO(payload)).load()
    except ProtocolError:
        raise
    except Exception as err:  # truncated or corrupt streams, bad opcodes, calls with wrong arguments
        raise ProtocolError(f"not a valid request pickle: {type(err).__name__}: {_short.repr(str(err))}") from None
    obj = _plain(obj, limits, [0])
    if type(obj) is not dict:
        raise ProtocolError(f"a request must be a dict, got {type(obj).__name__}")
    return obj


# --- request → Observation --------------------------------------------------------------------
def _image(request: dict, key: str, compressed: bool, limits: Limits) -> np.ndarray:
    """The last image of request[key]: HxWx3 uint8 RGB (JPEG/PNG bytes decoded when compressed)."""
    views = request.get(key)
    if type(views) not in (list, tuple) or not views:
        raise ProtocolError(f"{key} must be a non-empty list of images")
    item, where = views[-1], f"{key}[-1]"
    if compressed:
        if type(item) is not bytes:
            raise ProtocolError(f"{where} must be JPEG bytes when compressed is true, got {type(item).__name__}")
        from PIL import Image

        try:
            with Image.open(io.BytesIO(item), formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if max(w, h) > limits.max_image_side:
                    raise ProtocolError(f"{where} is {w}×{h}, the limit is {limits.max_image_side} px a side")
                image = np.asarray(im.convert("RGB"))
        except ProtocolError:
            raise
        except Exception as err:
            raise ProtocolError(f"{where} is not a JPEG or PNG image: {_short.repr(str(err))}") from None
    else:
        if type(item) is not np.ndarray:
            raise ProtocolError(f"{where} must be an HxWx3 uint8 array when compressed is false, "
                                f"got {type(item).__name__}")
        image = item
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ProtocolError(f"{where} must be an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if max(image.shape[:2]) > limits.max_image_side:
        raise ProtocolError(f"{where} is {image.shape[1]}×{image.shape[0]}, the limit is {limits.max_image_side} "
                            "px a side")
    return image


def _proprio(value, limits: Limits) -> np.ndarray:
    """(N, 7) float64 rows, oldest first: a list of rows (arrays or lists of numbers) or an array."""
    rows, most = None, limits.max_proprio_rows
    if type(value) is np.ndarray:
        rows = value
    elif type(value) in (list, tuple) and all(type(r) is np.ndarray or (type(r) in (list, tuple) and all(
            type(v) in (int, float, bool) for v in r)) for r in value):
        try:
            rows = np.array(value)
        except ValueError:  # rows of different lengths
            pass
    if rows is None or rows.dtype.kind not in "biuf" or rows.ndim != 2 or rows.shape[1] != 7 \
            or not 2 <= len(rows) <= most:
        got = f"{rows.dtype} {rows.shape}" if rows is not None else type(value).__name__
        raise ProtocolError(f"proprio_array must be 2…{most} rows of 7 numbers (the official client sends 4), "
                            f"got {got}")
    rows = rows.astype(np.float64)
    if not np.all(np.isfinite(rows)):
        raise ProtocolError("proprio_array contains non-finite values")
    return rows


def target_of(text: str) -> str:
    """The object named in an official task text ("pick up banana" → "banana")."""
    t = text.strip()
    return t[len("pick up "):].strip() if t.lower().startswith("pick up ") else t


def request_to_observation(request: dict, limits: Limits = Limits(), stamp_ns: int | None = None):
    """The `policy.observation.Observation` the policy node would build for the same scene: the
    client's last images (the 256×256 views, JPEG-decoded), its proprio rows as sent, the task text."""
    from graspvla_ros.policy.observation import Observation

    for key in ("text", *IMAGE_KEYS, "proprio_array"):
        if key not in request:
            raise ProtocolError(f"the request has no {key!r} (keys: {sorted(map(str, request))[:12]})")
    text = request["text"]
    if type(text) is not str or not text.strip() or len(text) > limits.max_text_chars:
        raise ProtocolError(f"text must be a non-empty string of at most {limits.max_text_chars} characters")
    compressed = request.get("compressed", False)
    if type(compressed) not in (bool, int):
        raise ProtocolError(f"compressed must be a bool, got {type(compressed).__name__}")
    front, side = (_image(request, key, bool(compressed), limits) for key in IMAGE_KEYS)
    rows = _proprio(request["proprio_array"], limits)
    anchor = Pose.from_xyz_rpy(rows[-1, :3], rows[-1, 3:6])
    return Observation(time.time_ns() if stamp_ns is None else stamp_ns, text, target_of(text), front, side, rows,
                       anchor, float(rows[-1, 6]))


# --- replies ----------------------------------------------------------------------------------
def _floats(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def success_reply(out) -> dict:
    """The official reply for a `PolicyOutput`: result = the 8×7 waypoints, debug = the grasp pose
    (xyz, rpy) and the bboxes (front, side; x1 y1 x2 y2 in px of the 224×224 model input).
    env_id is always 0, as the official server sends it."""
    return {"info": "success", "env_id": 0, "result": _floats(out.waypoints),
            "debug": {"pose": (_floats(out.grasp_xyz), _floats(out.grasp_rpy)), "bbox": _floats(out.bbox)}}


def error_reply(message: str) -> dict:
    """What a refused or failed request gets. The official server never sends one: the official
    clients fail on it (the real-robot client asserts info == 'success', the playground client
    reads reply['debug']), which is better than a hang or a wrong chunk."""
    return {"info": "error", "env_id": 0, "message": message}


def encode_reply(reply: dict) -> bytes:
    return pickle.dumps(reply, protocol=REPLY_PICKLE_PROTOCOL)
