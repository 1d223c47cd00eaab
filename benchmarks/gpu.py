"""GPU benchmark of the full-size GraspVLA in one short run (random weights, no download).

    python -m benchmarks.gpu --out gpu.json       # CUDA machine: ~3-5 min, hard budget 7.5 min
    sh benchmarks/gpu.sh OUTDIR                    # the same, with a log, for a one-shot lent machine
    python -m benchmarks.gpu --check              # = --device cpu --tiny: the whole script on CPU in seconds
    python -m benchmarks.gpu --from-json gpu.json --write-benchmarks   # a saved run → BENCHMARKS.md

Builds the released structure (3.16 B parameters; `--tiny`: the test size) with random weights
directly on the device (`graspvla_ros.model.random_model`), and a fixed-id tokenizer (no
sentencepiece, no tokenizer.model). Then, per configuration, `GraspVLAModel.predict` end to end on
the same images / prompt / proprio / seed: one warm-up call (CUDA graph capture, compilation),
one more untimed call on CUDA, then up to `--repeats` timed calls within the configuration's time box.
Each stage (vision, prefill, the 15 decode calls, the 10-step flow) is timed with a device sync
after it. Configurations, in order (the weights are drawn in fp32, then cast to bf16 in place):

  fp32          eager torch, fp32 (TF32 off): the reference
  fp32-static   static KV cache (+ CUDA graphs on CUDA), fp32: checks the fast path's numerics
  bf16          eager torch, bf16
  bf16-static   static KV cache + CUDA graphs, bf16 (on CPU: static cache only)
  bf16-compile  static KV cache + torch.compile + CUDA graphs, bf16 (on CPU: skipped unless --cpu-compile)

A configuration that fails is reported with its error and the run goes on; results are written to
`--out` after every configuration (and on SIGTERM), so a run cut short still brings back what it
measured. Only torch, numpy, timm (and PIL through torchvision) are needed.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

START = time.monotonic()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu_report import COMMAND, SECTION, agreement, markdown, machine  # noqa: E402
from graspvla_ros.model.api import GraspVLAModel  # noqa: E402
from graspvla_ros.model.backends.torch_backend import components_for  # noqa: E402
from graspvla_ros.model.random_model import FixedTokenizer, cast_model, full_config, random_model, small_config  # noqa: E402
from graspvla_ros.model.tiny import TINY, tiny_normalizer  # noqa: E402

PROPRIO = np.array([[0.45, 0.02, 0.30, -3.0, 0.1, 0.8, 1.0]] * 3 + [[0.47, 0.0, 0.28, -3.0, 0.1, 0.7, -1.0]])
INSTRUCTION = "pick up banana"
STAGES = ("vision", "prefill", "decode", "flow")


@dataclass(frozen=True)
class Config:
    key: str
    dtype: torch.dtype
    static_cache: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    need_s: float = 15.0   # time that must be left to start it

    def label(self, cuda: bool) -> str:
        parts = ["fp32" if self.dtype == torch.float32 else "bf16"]
        if not self.static_cache:
            return parts[0] + " eager"
        parts.append("static cache")
        if self.compile:
            parts.append("torch.compile")
        if self.cuda_graphs and cuda:
            parts.append("CUDA graphs")
        text = " + ".join(parts)
        return text + (" (no CUDA graphs on CPU)" if self.cuda_graphs and not cuda else "")


CONFIGS = (
    Config("fp32", torch.float32),
    Config("fp32-static", torch.float32, static_cache=True, cuda_graphs=True),
    Config("bf16", torch.bfloat16),
    Config("bf16-static", torch.bfloat16, static_cache=True, cuda_graphs=True),
    Config("bf16-compile", torch.bfloat16, static_cache=True, cuda_graphs=True, compile=True, need_s=120.0),
)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:7.1f} s] {msg}", flush=True)


class TimedComponents:
    """`generate.Components` wrapper: ms per stage of the current predict, with a device sync after
    each call (the stages' own outputs come back to the host anyway, except the image embeddings)."""

    def __init__(self, inner, sync):
        self.inner, self.sync = inner, sync
        self.ms = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)

    def reset(self) -> None:
        self.ms = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)

    def _timed(self, stage: str, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.sync()
        self.ms[stage] += (time.perf_counter() - t) * 1e3
        self.calls[stage] += 1
        return out

    def encode_images(self, front, side):
        return self._timed("vision", self.inner.encode_images, front, side)

    def prefill(self, ids, image):
        return self._timed("prefill", self.inner.prefill, ids, image)

    def decode(self, ids, cache):
        return self._timed("decode", self.inner.decode, ids, cache)

    def flow(self, noise, proprio, cache):
        return self._timed("flow", self.inner.flow, noise, proprio, cache)


def environment(device: torch.device, size: str) -> dict:
    try:
        import timm

        timm_version = timm.__version__
    except ImportError as e:  # reported; building the ViTs will fail
        timm_version = f"missing ({e})"
    env = {"device": device.type, "size": size, "torch": torch.__version__, "cuda": torch.version.cuda,
           "timm": timm_version, "numpy": np.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(), "command": " ".join(["python -m benchmarks.gpu",
                                                                                              *sys.argv[1:]])}
    from benchmarks.report import cpu_model

    env["cpu"] = cpu_model()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=torch.cuda.get_device_name(device), capability=".".join(map(str, (props.major, props.minor))),
                   device_memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env["device_name"] = f"CPU ({env['cpu']}, {torch.get_num_threads()} torch threads)"
    return env


def run_config(c: Config, model, cfg, views, device: torch.device, repeats: int, box_s: float, deadline: float) -> dict:
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    comps = components_for(model, compile=c.compile, static_cache=c.static_cache, cuda_graphs=c.cuda_graphs and cuda)
    timed = TimedComponents(comps, sync)
    gm = GraspVLAModel(cfg, timed, FixedTokenizer(cfg.llm.vocab_size), tiny_normalizer())

    def predict():
        timed.reset()
        t = time.perf_counter()
        p = gm.predict(*views, INSTRUCTION, PROPRIO, seed=0)
        sync()
        return p, (time.perf_counter() - t) * 1e3

    first, first_ms = predict()
    log(f"{c.key}: first call {first_ms / 1e3:.2f} s (includes any CUDA graph capture / compilation)")
    if cuda:
        predict()  # settle (allocator, cuDNN heuristics) before timing
    runs = []
    t_box = time.monotonic()
    while len(runs) < min(3, repeats) or (len(runs) < repeats and time.monotonic() - t_box < box_s
                                          and time.monotonic() < deadline):
        p, ms = predict()
        runs.append({**timed.ms, "end_to_end": ms, "same_output": p.token_ids == first.token_ids
                     and bool(np.array_equal(p.waypoints, first.waypoints))})
    stats = {k: {"median": statistics.median(r[k] for r in runs), "min": min(r[k] for r in runs)}
             for k in (*STAGES, "end_to_end")} if runs else {}
    out = {"status": "ok", "first_call_ms": first_ms, "repeats": len(runs), "stages_ms": stats,
           "decode_calls": timed.calls["decode"], "prompt_ids": len(first.prompt_ids),
           "repeatable": all(r["same_output"] for r in runs),
           "token_ids": first.token_ids, "waypoints": first.waypoints.tolist(), "action": first.action.tolist()}
    if cuda:
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    del gm, timed, comps
    return out


def free(device: torch.device, compiled: bool) -> None:
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def save(results: dict, out: str | None) -> None:
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    deadline = START + args.budget_s
    load_before = os.getloadavg()[0]
    results = {"schema": 1, "env": environment(device, "tiny" if args.tiny else "full"), "configs": {},
               "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    env = results["env"]
    log(f"{env['device_name']}: torch {env['torch']} (CUDA {env['cuda']}), timm {env['timm']}, numpy {env['numpy']}, "
        f"Python {env['python']}; budget {args.budget_s:.0f} s")
    if cuda:  # fp32 means fp32: no TF32 in matmuls or convolutions
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        except Exception as e:  # noqa: BLE001
            log(f"could not turn TF32 off: {e}")
        results["env"]["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
    save(results, args.out)
    cfg = small_config(TINY) if args.tiny else full_config()
    t = time.monotonic()
    try:
        model = random_model(cfg, device, torch.float32, seed=0)
        if cuda:
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001
        results["error"] = f"building the random model failed: {type(e).__name__}: {e}"[:2000]
        results["traceback"] = traceback.format_exc()[-4000:]
        log(results["error"])
        save(results, args.out)
        return results
    results["params"] = sum(p.numel() for p in model.parameters())
    results["build_s"] = time.monotonic() - t
    log(f"random {results['env']['size']} model: {results['params'] / 1e6:,.1f} M params in fp32 on {device} "
        f"in {results['build_s']:.1f} s")
    rng = np.random.default_rng(0)
    views = tuple(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    repeats = args.repeats or (20 if cuda else 3)
    for c in (c for c in CONFIGS if not args.configs or c.key in args.configs):
        entry = results["configs"][c.key] = {"label": c.label(cuda), "dtype": str(c.dtype).removeprefix("torch."),
                                             "static_cache": c.static_cache, "cuda_graphs": c.cuda_graphs and cuda,
                                             "compile": c.compile}
        if c.dtype != next(model.parameters()).dtype:
            cast_model(model, c.dtype)
            free(device, False)
            log(f"model cast to {entry['dtype']}")
        left = deadline - time.monotonic()
        if c.compile and not cuda and not args.cpu_compile:
            entry.update(status="skipped", reason="torch.compile skipped on CPU: inductor's C++ build of the "
                         "decoder would dominate a CI run (--cpu-compile runs it); the static-cache path it "
                         "compiles runs uncompiled in bf16-static")
        elif c.compile and args.no_compile:
            entry.update(status="skipped", reason="--no-compile")
        elif left < c.need_s:
            entry.update(status="skipped", reason=f"time budget: {left:.0f} s left, {c.need_s:.0f} s needed")
        else:
            log(f"{c.key}: {entry['label']} ...")
            t = time.monotonic()
            try:
                entry.update(run_config(c, model, cfg, views, device, repeats, args.box_s, deadline))
            except Exception as e:  # noqa: BLE001  report it, go on with the next configuration
                entry.update(status="error", error=f"{type(e).__name__}: {e}".strip()[:2000],
                             traceback=traceback.format_exc()[-4000:])
            except BaseException:
                entry.update(status="interrupted", error="interrupted (SIGTERM/SIGINT: time limit?)")
                save(results, args.out)
                raise
            finally:
                free(device, c.compile)
            entry["wall_s"] = time.monotonic() - t
        if entry["status"] == "ok":
            s = entry["stages_ms"]["end_to_end"]
            mem = f", peak {entry['peak_memory_bytes'] / 2**30:.2f} GiB" if "peak_memory_bytes" in entry else ""
            log(f"{c.key}: {entry['repeats']} runs, end to end median {s['median']:.1f} ms (min {s['min']:.1f}){mem}")
        else:
            log(f"{c.key}: {entry['status']}: {entry.get('error') or entry.get('reason')}")
        results["agreement"] = agreement(results["configs"])
        results["elapsed_s"] = time.monotonic() - START
        save(results, args.out)
    results["loadavg"] = [load_before, os.getloadavg()[0]]
    results["packages_loaded"] = loaded_packages()
    save(results, args.out)
    return results


def loaded_packages() -> list[str]:
    """Top-level non-stdlib modules this run imported (what the GPU machine must have)."""
    skip = {*getattr(sys, "stdlib_module_names", ()), *sys.builtin_module_names, "graspvla_ros", "benchmarks"}
    return sorted({n for n in (m.split(".")[0] for m in list(sys.modules)) if n not in skip and not n.startswith("_")})


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    parser.add_argument("--tiny", action="store_true", help="the tiny test structure instead of the full size")
    parser.add_argument("--check", action="store_true", help="= --device cpu --tiny (seconds, for CI)")
    parser.add_argument("--out", default=None, help="write the results as JSON here (after every configuration)")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per configuration (default 20 CUDA, 3 CPU)")
    parser.add_argument("--box-s", type=float, default=20.0, help="time box of a configuration's timed calls")
    parser.add_argument("--budget-s", type=float, default=450.0, help="whole run, from start (default 450 = 7.5 min)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile configuration")
    parser.add_argument("--configs", type=lambda s: s.split(","), default=None,
                        help=f"comma-separated subset of {','.join(c.key for c in CONFIGS)} (default: all)")
    parser.add_argument("--cpu-compile", action="store_true", help="run the torch.compile configuration on CPU too")
    parser.add_argument("--write-benchmarks", action="store_true", help=f"write the table into BENCHMARKS.md ({SECTION})")
    parser.add_argument("--from-json", default=None, help="render a saved --out file instead of running")
    args = parser.parse_args(argv)
    unknown = set(args.configs or ()) - {c.key for c in CONFIGS}
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}")
    if args.check:
        args.device, args.tiny = "cpu", True
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `timeout` → partial results still saved
        try:
            results = run(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    md = markdown(results)
    print(md, flush=True)
    if args.write_benchmarks:
        from benchmarks.report import write_section

        write_section(SECTION, md, results["env"].get("command") or COMMAND, machine=machine(results))
    failed = [k for k, v in results["configs"].items() if v.get("status") not in ("ok", "skipped")]
    return 1 if failed or results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
