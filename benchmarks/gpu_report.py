"""Results of `benchmarks.gpu` (a JSON-able dict) → agreement figures and the BENCHMARKS.md section."""
from __future__ import annotations

import numpy as np

COMMAND = "python -m benchmarks.gpu"
SECTION = "model_gpu"
GPU_COMMAND = "sh benchmarks/gpu.sh OUTDIR"
# (configuration, reference) pairs compared on the same weights, inputs and noise.
PAIRS = (("fp32-static", "fp32"), ("bf16", "fp32"), ("bf16-static", "fp32"), ("bf16-compile", "fp32"),
         ("bf16-static", "bf16"), ("bf16-compile", "bf16"))


def compare(a: dict, b: dict) -> dict:
    """Token and waypoint agreement of two configurations' first calls."""
    ta, tb = a["token_ids"], b["token_ids"]
    diff = [i for i, (x, y) in enumerate(zip(ta, tb)) if x != y]
    return {"tokens_equal": sum(x == y for x, y in zip(ta, tb)), "tokens": len(tb),
            "first_difference": diff[0] if diff else None,
            "waypoints_max_abs": float(np.abs(np.subtract(a["waypoints"], b["waypoints"])).max()),
            "action_max_abs": float(np.abs(np.subtract(a["action"], b["action"])).max())}


def agreement(configs: dict) -> dict:
    ok = {k for k, v in configs.items() if v.get("status") == "ok"}
    return {f"{a} vs {b}": compare(configs[a], configs[b]) for a, b in PAIRS if a in ok and b in ok}


def machine(results: dict) -> str:
    env = results["env"]
    where = f"{env.get('device_name')}, host {env.get('cpu')}" if env.get("device") == "cuda" else env.get("cpu")
    return f"{where}, Python {env.get('python')}"


def _ms(stats: dict, key: str) -> str:
    s = stats.get(key)
    return f"{s['median']:.1f} ({s['min']:.1f})" if s else "–"


def _count(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _gib(n) -> str:
    return f"{n / 2**30:.2f} GiB" if n is not None else "–"


def markdown(results: dict) -> str:
    env, configs = results["env"], results["configs"]
    cuda = env["device"] == "cuda"
    ok = [v for v in configs.values() if v.get("status") == "ok"]
    prompt = ok[0]["prompt_ids"] if ok else None
    size = ("full-size GraspVLA" if env["size"] == "full" else "tiny test model")
    lines = [f"## Model on a GPU ({'measured' if cuda else 'CPU check run only'}): {size}, random weights", ""]
    if not cuda:
        lines += ["**GPU numbers: unmeasured.** No GPU was attached when this section was written: the table "
                  f"below is the CPU check run of the tiny model (`{COMMAND} --check`), which keeps the script "
                  "working; its times are NOT GPU numbers. To measure, on a CUDA machine (one command; expected "
                  "3–5 min, an estimate since it has not run on a GPU yet; no configuration starts after 7.5 min "
                  f"and the wrapper ends it at 8): `{GPU_COMMAND}`, then here: "
                  f"`{COMMAND} --from-json OUTDIR/gpu.json --write-benchmarks`.", ""]
    mem = f", {env['device_memory_gib']} GiB, compute capability {env['capability']}" if cuda else ""
    lines += [f"**{env['device_name']}**{mem}; torch {env['torch']} (CUDA {env.get('cuda')}), timm {env['timm']}, "
              f"numpy {env['numpy']}, Python {env['python']}; started {results.get('started_utc', '?')}, "
              f"{results.get('elapsed_s', 0):.0f} s in all. {_count(results.get('params', 0))} parameters of the "
              f"released structure with random weights (`graspvla_ros.model.random_model`, drawn in fp32 and cast), "
              f"built in {results.get('build_s', 0):.1f} s; fixed-id prompt "
              f"({prompt} ids; `FixedTokenizer`, InternLM2's would give ~20), two 256×256 views, seed 0. "
              "`GraspVLAModel.predict` end to end; each stage timed with a device sync after it; per "
              f"configuration one warm-up call (CUDA graph capture / compilation: \"first call\"), "
              f"{'one untimed call, ' if cuda else ''}then the timed calls. ms: median (min)."
              f"{' fp32 runs with TF32 off.' if cuda and env.get('tf32') is False else ''}", "",
              "| configuration | vision | LLM prefill | decode (15 calls, 29 tokens) | flow (10 steps) | end to end "
              "| peak memory | first call | runs |", "|---|---|---|---|---|---|---|---|---|"]
    notes = [f"* {results['error']}"] if results.get("error") else []
    for key, c in configs.items():
        if c.get("status") == "ok":
            s = c["stages_ms"]
            rep = "" if c.get("repeatable", True) else " (outputs varied between runs!)"
            lines.append(f"| {c['label']} | {_ms(s, 'vision')} | {_ms(s, 'prefill')} | {_ms(s, 'decode')} | "
                         f"{_ms(s, 'flow')} | **{_ms(s, 'end_to_end')}** | {_gib(c.get('peak_memory_bytes'))} | "
                         f"{c['first_call_ms'] / 1e3:.2f} s | {c['repeats']}{rep} |")
        else:
            why = c.get("error") or c.get("reason") or "?"
            lines.append(f"| {c['label']} | {c.get('status')} | | | | | | | |")
            notes.append(f"* `{key}` {c.get('status')}: {why.splitlines()[0] if why else why}")
    lines.append("")
    if cuda:
        lines += ["Peak memory: `torch.cuda.max_memory_allocated` during the configuration (weights included: "
                  "fp32 ≈ 11.8 GiB, bf16 ≈ 5.9 GiB).", ""]
    agree = results.get("agreement") or {}
    if agree:
        lines += ["Agreement on the same weights, inputs and noise (first call of each; tokens: the 15 generated "
                  "ids, greedy; after a differing token everything downstream differs; Δ: max |Δ| of the 8×7 "
                  "waypoints, whose gripper column is −1/0/+1, and of the 4×7 raw actions). Random weights give "
                  "flat logits, so bf16 token agreement here is a pessimistic proxy for the trained model's:", "",
                  "| configuration | reference | tokens equal | first differing token | waypoints max abs Δ "
                  "| action max abs Δ |", "|---|---|---|---|---|---|"]
        for pair, a in agree.items():
            x, ref = pair.split(" vs ")
            first = "–" if a["first_difference"] is None else str(a["first_difference"])
            lines.append(f"| {configs[x]['label']} | {configs[ref]['label']} | {a['tokens_equal']}/{a['tokens']} | "
                         f"{first} | {a['waypoints_max_abs']:.2e} | {a['action_max_abs']:.2e} |")
        lines.append("")
    if notes:
        lines += ["Not measured:", "", *notes, ""]
    if "loadavg" in results:
        before, after = results["loadavg"]
        lines.append(f"Load average (1 min) before / after: {before:.1f} / {after:.1f} on {env.get('cpu_count')} logical "
                     "CPUs (shared with other jobs: CPU times swing by several × between runs).")
    return "\n".join(lines).rstrip()
