"""Faults benchmark: the controller against a simulated arm that fails as a real Franka does.

For each injected fault (graspvla_ros.sim.faults) while chunks stream at 5 Hz: the time from
the fault to the arm at rest, the time from the fault's end to the next motion, and the chunks
refused meanwhile; then how large a force-estimate bias during fast motion the contact reaction
tolerates before a false retreat. Times are on the simulator's clock (MuJoCo's, read from the
physics directly, so a lost link does not hide the arm).

    scripts/isolated .venv/bin/python -m benchmarks.bench_faults
"""
from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from benchmarks.report import write_section
from graspvla_ros.chunk import ActionChunk
from graspvla_ros.control import ArmController, ControllerState
from graspvla_ros.sim_settings import sim_controller_settings
from graspvla_ros.safety import ChunkRejected
from graspvla_ros.sim.server import SimServer

COMMAND = "scripts/isolated .venv/bin/python -m benchmarks.bench_faults"
HOST = "127.0.251.2"
STOPPED, MOVING = 5e-3, 2e-2  # m/s: the TCP stopped, and moving again (the stream runs at 5 cm/s)


class Rig:
    """A simulated arm, the controller, a 5 Hz chunk stream along ±y and the TCP sampled from MuJoCo."""

    def __init__(self, sim: SimServer, ctl: ArmController, step: float = 0.005):
        self.sim, self.ctl, self.step = sim, ctl, step
        self.samples: list[tuple[float, np.ndarray]] = []
        self.refused: Counter[str] = Counter()
        self.sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._stream, daemon=True)]

    def __enter__(self) -> Rig:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            with self.sim.lock:
                self.samples.append((self.sim.data.time, self.sim.data.body("robot0_hand").xpos.copy()))
            time.sleep(0.002)

    def _stream(self) -> None:
        direction = 1.0
        while not self._stop.wait(0.2):
            try:
                here = self.ctl.read_state().ee
            except Exception:  # the link is down: no anchor for a chunk
                continue
            if abs(here.position[1]) > 0.15:
                direction = -np.sign(here.position[1])
            rows = np.array([[0.0, direction * self.step, 0, 0, 0, 0, 0]] * 8)
            self.sent += 1
            try:
                self.ctl.submit(ActionChunk(self.ctl.clock(), 0.1, "base", rows, here))
            except ChunkRejected as err:
                self.refused[err.reason] += 1

    def now(self) -> float:
        with self.sim.lock:
            return self.sim.data.time

    def speed_since(self, t0: float, window: float = 0.1) -> list[tuple[float, float]]:
        """(sim time, speed over the `window` before it) for the samples after t0."""
        s = [(t, x) for t, x in self.samples if t >= t0 - window]
        out, j = [], 0
        for t, x in s:
            while s[j][0] < t - window:
                j += 1
            if t >= t0 and t - s[j][0] > window / 2:
                out.append((t, float(np.linalg.norm(x - s[j][1]) / (t - s[j][0]))))
        return out

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s")
            time.sleep(0.02)

    def first(self, t0: float, condition, timeout: float, what: str) -> float:
        """Sim time of the first speed sample after t0 that meets `condition`."""
        found: list[float] = []

        def seen() -> bool:
            found[:] = [t for t, v in self.speed_since(t0) if condition(v)][:1]
            return bool(found)
        self.wait(seen, timeout, what)
        return found[0]


def measure(fault: str, end: str | None) -> dict:
    with SimServer(HOST) as sim, ArmController(sim_controller_settings(HOST)) as ctl:
        ctl.home()
        with Rig(sim, ctl) as rig:
            rig.wait(lambda: rig.speed_since(rig.now() - 0.3) and rig.speed_since(rig.now() - 0.3)[-1][1] > 0.03,
                     20, "streaming motion")
            before = Counter(rig.refused)
            t_fault = rig.now()
            sim.inject(fault)
            t_rest = rig.first(t_fault, lambda v: v < STOPPED, 30, "a stop") if fault != "gripper_fail" else None
            t_end = t_fault
            if end:
                rig.wait(lambda: ctl.state in (ControllerState.USER_STOPPED, ControllerState.DISCONNECTED), 30,
                         "the fault's state")
                t_end = rig.now()
                sim.inject(end)
            t_move = rig.first(max(t_end, t_rest or t_end), lambda v: v > MOVING, 60, "motion again")
            refused = rig.refused - before
        return {"fault": fault, "rest": None if t_rest is None else t_rest - t_fault, "again": t_move - t_end,
                "refused": dict(refused), "state_reasons": ctl.faults.copy()}


def bias_tolerance(biases: tuple[float, ...]) -> list[tuple[float, int]]:
    """False contact retreats during 6 s of streaming at 10 cm/s with a bias of N newtons."""
    rows = []
    for bias in biases:
        with SimServer(HOST) as sim, ArmController(sim_controller_settings(HOST)) as ctl:
            ctl.home()
            sim.inject(f"force_bias:{bias:g}")
            with Rig(sim, ctl, step=0.01) as rig:
                start = rig.now()
                rig.wait(lambda: rig.now() > start + 6.0, 60, "6 s of motion")
            rows.append((bias, ctl.contact_count))
    return rows


def main() -> None:
    faults = [("user_stop", "user_stop_release"), ("reflex", None), ("network_drop:600", "network_restore"),
              ("gripper_fail", None)]
    results = [measure(f, e) for f, e in faults]
    for r in results:
        print(r, flush=True)
    fmt = lambda v: "—" if v is None else f"{v * 1e3:.0f} ms"  # noqa: E731
    table = ["| fault (sim.faults) | fault → arm stopped | fault's end → moving again | chunks refused meanwhile |",
             "|---|---|---|---|"]
    ends = {"user_stop": "`user_stop_release`", "network_drop:600": "`network_restore`"}
    for r in results:
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "none"
        table.append(f"| `{r['fault']}` | {fmt(r['rest'])} | {fmt(r['again'])} (from {ends.get(r['fault'], 'the fault')}) "
                     f"| {refused} |")
    tolerance = bias_tolerance((5.0, 10.0, 14.0, 16.0, 20.0))
    for bias, n in tolerance:
        print(f"force_bias {bias} N: {n} false retreats", flush=True)
    bias_rows = "\n".join(f"| {b:g} N | {n} |" for b, n in tolerance)
    md = f"""## Faults: what each real-arm fault costs (franky-sim with libfranka's fault model)

The controller (`ArmController`, the sim graph's settings) with chunks streaming at 5 Hz along ±y
(5 cm/s), each fault injected into the simulated arm (`graspvla_ros/sim/faults.py`) while it
moves. Times on the simulator's clock; the TCP read from MuJoCo directly (so a lost link does
not hide it). Stopped: under {STOPPED * 1e3:g} mm/s over 0.1 s; moving again: over {MOVING * 1e3:g} mm/s.

{chr(10).join(table)}

Nothing the controller accepted is executed after a fault: a fault starts a new epoch and drops
the pending chunk; the refusals above are the stream's chunks that arrived meanwhile, each with
its reason on `~/rejection`. A gripper failure does not stop the arm (the chunk goes on; the
"stopped" column is empty; it kept moving); after a single reflex the controller recovers and
the next chunk moves on, so "moving again" counts from the fault itself. The recorder's side of a fault (nothing lost) is not measured here.

Contact reaction against a biased force estimate: `force_bias:N` adds N newtons to F_z while
the TCP accelerates (scaled by |a| / 0.5 m/s²); chunks stream at 10 cm/s along ±y for 6 s of
sim time, turning at |y| = 0.15 m; the reaction fires at |F_z| > 15 N.

| bias | false retreats in 6 s |
|---|---|
{bias_rows}
"""
    write_section("faults", md, COMMAND)
    print(md)


if __name__ == "__main__":
    main()
