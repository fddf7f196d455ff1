"""`ttm-bench`: benchmarks that print tables and write JSON (and PNG plots) into `--out`.

Subcommands:
  step-latency  time per streaming step at batch 1 against history length, per temporal core
  recall        memory-initialisation study on the synthetic recall task (zeros vs learned)
  train-throughput  behaviour-cloning samples/s and images/s per temporal core
  compare       eval.json files -> markdown table and bar chart of success with intervals
  results       every temporal core on one memory task, same demos and budget, per delay
  runtime-latency     exported ONNX policy latency at batch 1 (p50/p99) and file sizes
  control-latency     end-to-end control step (images -> action) per core against history
  rollout-throughput  env steps/s in vector envs with 1, 2, 4 envs, with and without images

Benchmarks report medians and ratios; nothing here asserts a speed (the machine is shared).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import torch
import tyro
from tqdm import tqdm

from ttm_policy import (
    CausalTransformerConfig,
    CausalTransformerCore,
    LSTMConfig,
    LSTMCore,
    TokenTuringMachine,
    TTMConfig,
)
from ttm_policy.introspect import token_influence, token_retention
from ttm_policy.state import num_bytes


def _machine() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def _bar_png(path: Path, labels: list[str], values: list[float], ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels)), 3.5))
    ax.bar(range(len(labels)), values)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write(out: Path, name: str, payload: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


# ----------------------------------------------------------------------------- step latency


def make_cores(dim: int, tokens: int, layers: int, window: int) -> dict[str, torch.nn.Module]:
    """The four cores at equal width and depth, as `step-latency` compares them."""
    heads, mlp_dim = 8, 4 * dim
    tf = dict(dim=dim, input_tokens=tokens, layers=layers, heads=heads, mlp_dim=mlp_dim)
    return {
        "ttm": TokenTuringMachine(
            TTMConfig(dim=dim, input_tokens=tokens, layers=layers, heads=heads, mlp_dim=mlp_dim)
        ),
        f"transformer-window{window}": CausalTransformerCore(
            CausalTransformerConfig(window=window, **tf)
        ),
        "transformer-full": CausalTransformerCore(CausalTransformerConfig(window=None, **tf)),
        "lstm": LSTMCore(LSTMConfig(dim=dim, input_tokens=tokens)),
    }


@torch.no_grad()
@torch.no_grad()
def time_steps(
    core, histories, tokens: int, dim: int, repeats: int, chunk: int = 32
) -> dict[int, dict]:
    """Median ms of one `step` at batch 1 after each history length, and the state's bytes.

    The states for every history are built first (by really streaming that many steps), then
    timed in interleaved rounds (one step per history per round), so that load on a shared
    machine drifts over all history lengths alike and the ratios stay meaningful.
    """
    states, state, done = {}, core.init_memory(1), 0
    for h in sorted(histories):
        while done < h:  # build the real state by streaming the history in chunks
            n = min(chunk, h - done)
            _, state = core(torch.randn(1, n, tokens, dim), state)
            done += n
        states[h] = state
    x = torch.randn(1, tokens, dim)
    times: dict[int, list[float]] = {h: [] for h in histories}
    for r in range(repeats + 3):
        for h in histories:
            t0 = time.perf_counter()
            core.step(x, states[h])  # the state is not advanced
            if r >= 3:  # the first rounds warm up
                times[h].append(time.perf_counter() - t0)
    return {
        h: {
            "median_ms": 1e3 * statistics.median(ts),
            "p90_ms": 1e3 * sorted(ts)[int(0.9 * (len(ts) - 1))],
            "state_bytes": num_bytes(states[h]),
        }
        for h, ts in times.items()
    }


@dataclass
class StepLatency:
    """Time per streaming step at batch 1 on CPU against history length, per temporal core."""

    histories: tuple[int, ...] = (1, 16, 64, 256, 1024)
    """Steps already seen when the timed step runs."""
    dim: int = 128
    """D, equal for every core."""
    tokens: int = 16
    """N tokens per step (e.g. two cameras x 8 TokenLearner tokens)."""
    layers: int = 4
    """Depth of the TTM's processing unit and of the Transformers."""
    window: int = 6
    """K steps of the windowed Transformer (RT-1 uses 6)."""
    repeats: int = 50
    """Timed steps per point; the median is reported."""
    threads: int = 1
    """torch intra-op threads (1: the steadiest latency on a shared CPU)."""
    out: Path = Path("runs/bench")
    """Where step_latency.json and step_latency.png go."""

    def run(self) -> dict:
        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        cores = make_cores(self.dim, self.tokens, self.layers, self.window)
        results: dict[str, dict[int, dict]] = {}
        for name in tqdm(cores, desc="step-latency", unit="core"):
            results[name] = time_steps(
                cores[name].eval(), self.histories, self.tokens, self.dim, self.repeats
            )
        base = 16 if 16 in self.histories else self.histories[0]
        ratios = {
            name: {h: r[h]["median_ms"] / r[base]["median_ms"] for h in self.histories}
            for name, r in results.items()
        }
        payload = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()},
            "machine": _machine(),
            "base_history": base,
            "results": results,
            "ratio_to_base": ratios,
        }
        path = _write(self.out, "step_latency", payload)
        self._print(results, ratios, base)
        self._plot(results, self.out / "step_latency.png")
        print(f"wrote {path} and {self.out / 'step_latency.png'}")
        return payload

    def _print(self, results, ratios, base) -> None:
        hs = self.histories
        print(
            f"\nms per streaming step, batch 1, D={self.dim}, N={self.tokens}, "
            f"{self.layers} layers, {self.threads} thread(s) (median of {self.repeats})"
        )
        print(
            f"{'core':<22}"
            + "".join(f"{'h=' + str(h):>10}" for h in hs)
            + "".join(f"{f'x{h}/{base}':>11}" for h in hs if h > base)
            + f"{'state@' + str(hs[-1]):>14}"
        )
        for name, r in results.items():
            row = f"{name:<22}" + "".join(f"{r[h]['median_ms']:>10.3f}" for h in hs)
            row += "".join(f"{ratios[name][h]:>11.2f}" for h in hs if h > base)
            row += f"{r[hs[-1]]['state_bytes'] / 1024:>12.0f}KB"
            print(row)

    def _plot(self, results, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for name, r in results.items():
            hs = sorted(r)
            ax1.plot(hs, [r[h]["median_ms"] for h in hs], marker="o", label=name)
            ax2.plot(hs, [r[h]["state_bytes"] / 1024 for h in hs], marker="o", label=name)
        for ax, ylabel in ((ax1, "ms per step (median)"), (ax2, "state held (KiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("history length (steps)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        ax1.legend()
        fig.suptitle(f"Streaming step at batch 1 on CPU (D={self.dim}, N={self.tokens})")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


# ----------------------------------------------------------------------------- recall study


@dataclass
class Recall:
    """Iterations to solve the synthetic recall task, zeros vs learned initial memory."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One training run per seed and initialisation."""
    steps: int = 30
    """T: distance from the cue to the answer."""
    max_iters: int = 400
    """Budget per run."""
    out: Path = Path("runs/bench")
    """Where recall.json goes."""
    extra: dict = field(default_factory=dict)
    """Extra TTMConfig overrides applied to both arms, e.g. {"summariser": "tl-mha"}."""

    def run(self) -> dict:
        from eval.recall import RecallConfig, small_ttm, train_recall

        torch.set_num_threads(1)
        cfg = RecallConfig(steps=self.steps, max_iters=self.max_iters)
        runs = []
        jobs = [(init, s) for init in ("zeros", "learned") for s in self.seeds]
        for init, seed in tqdm(jobs, desc="recall", unit="run"):
            torch.manual_seed(seed)
            ttm = small_ttm(cfg.dim, memory_init=init, **self.extra)
            probe = torch.randn(64, cfg.steps, cfg.tokens, cfg.dim)
            before = token_retention(ttm, probe)[-1].item()
            influence_before = token_influence(ttm.eval(), probe)[-1].item()
            r = train_recall(ttm.train(), cfg, seed=seed)
            after = token_retention(ttm, probe)[-1].item()  # the t=0 token, at t=T-1
            influence_after = token_influence(ttm.eval(), probe)[-1].item()
            runs.append(
                {
                    "memory_init": init,
                    "seed": seed,
                    "retention_init": before,
                    "retention_trained": after,
                    "influence_init": influence_before,
                    "influence_trained": influence_after,
                    **r,
                }
            )
        print(
            f"\nrecall task, T={self.steps}, budget {self.max_iters} iterations, target {cfg.target}"
        )
        metrics = ("retention_init", "retention_trained", "influence_init", "influence_trained")
        print(
            f"{'init':<9}{'solved':>8}{'median iters':>14}{'median acc':>12}"
            + "".join(f"{m:>20}" for m in metrics)
        )
        summary = {}
        for init in ("zeros", "learned"):
            rs = [r for r in runs if r["memory_init"] == init]
            solved = sum(r["accuracy"] >= cfg.target for r in rs)
            s = {
                "solved": solved,
                "runs": len(rs),
                "median_iters": statistics.median(r["iters"] for r in rs),
                "median_accuracy": statistics.median(r["accuracy"] for r in rs),
            }
            s.update({f"median_{m}": statistics.median(r[m] for r in rs) for m in metrics})
            summary[init] = s
            print(
                f"{init:<9}{solved:>5}/{len(rs):<2}{s['median_iters']:>14}{s['median_accuracy']:>12.3f}"
                + "".join(f"{s['median_' + m]:>20.2e}" for m in metrics)
            )
        print(
            "retention: share of the t=0 token still in memory at t=T-1 through the direct write "
            "path; influence: change of memory at T-1 when that token is nudged, relative to t=0"
        )
        payload = {
            "config": {"steps": self.steps, "max_iters": self.max_iters, "extra": self.extra},
            "machine": _machine(),
            "summary": summary,
            "runs": runs,
        }
        print(f"wrote {_write(self.out, 'recall', payload)}")
        return payload


# ----------------------------------------------------------------------------- training throughput


@dataclass
class TrainThroughput:
    """Samples/s and images/s of behaviour-cloning steps (forward, backward, AdamW) for a
    policy configuration on real demonstrations (default: the Lift image configuration)."""

    dataset: Path
    """robomimic-format HDF5 (e.g. the robomimic Lift fixture, or `ttm-collect --task Lift`)."""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """Temporal cores to time."""
    batch_size: int = 16
    """Sequences per step."""
    window: int = 10
    """T steps per sequence."""
    steps: int = 10
    """Timed optimiser steps per core (after 2 warm-up steps); the median is reported."""
    threads: int = 1
    """torch intra-op threads."""
    device: str = "cpu"
    """cpu or cuda (bf16 autocast on cuda, as ttm-train)."""
    out: Path = Path("runs/bench")
    """Where train_throughput.json goes."""

    def run(self) -> dict:
        from train.data import (
            DataConfig,
            StepBatchSampler,
            compute_stats,
            is_image_key,
            load_demos,
            make_dataset,
        )
        from train.train import infer_obs_keys
        from ttm_policy import PolicyConfig, TTMPolicy

        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        keys = infer_obs_keys(self.dataset)
        demos = load_demos(str(self.dataset), keys, "all")
        data = make_dataset(
            DataConfig(path=str(self.dataset), obs_keys=keys, window=self.window, augment="none"),
            demos,
        )
        sampler = StepBatchSampler(len(data), self.batch_size)
        images = sum(is_image_key(k) for k in keys)
        size = next((demos.obs_shapes[k][0] for k in keys if is_image_key(k)), 84)
        device = torch.device(self.device)
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        results = {}
        for core in tqdm(self.cores, desc="train-throughput", unit="core"):
            cfg = PolicyConfig(obs_keys=keys, image_size=size, crop_size=min(76, size), core=core)
            policy = TTMPolicy(cfg, compute_stats(demos)).to(device).train()
            opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
            times = []
            for i in range(self.steps + 2):
                batch = torch.utils.data.default_collate([data[j] for j in sampler.batch(i)])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with amp:
                    loss, _ = policy(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            dt = statistics.median(times[2:])
            results[core] = {
                "parameters": policy.num_parameters(),
                "median_step_s": dt,
                "samples_per_s": self.batch_size / dt,
                "frames_per_s": self.batch_size * self.window / dt,
                "images_per_s": self.batch_size * self.window * images / dt,
            }
        print(
            f"\nBC training throughput on {self.device}, batch {self.batch_size} x T={self.window}, "
            f"{images} camera(s) {size}px, {self.threads} thread(s) (median of {self.steps} steps)"
        )
        print(
            f"{'core':<16}{'params':>10}{'s/step':>9}{'samples/s':>11}{'frames/s':>10}{'images/s':>10}"
        )
        for core, r in results.items():
            print(
                f"{core:<16}{r['parameters'] / 1e6:>9.2f}M{r['median_step_s']:>9.3f}{r['samples_per_s']:>11.1f}"
                f"{r['frames_per_s']:>10.1f}{r['images_per_s']:>10.1f}"
            )
        payload = {
            "config": {k: str(v) for k, v in asdict(self).items()},
            "machine": _machine(),
            "results": results,
        }
        png = _bar_png(
            self.out / "train_throughput.png",
            list(results),
            [r["images_per_s"] for r in results.values()],
            "camera images / s",
            f"BC training throughput on {self.device}, batch {self.batch_size} x T={self.window}",
        )
        print(f"wrote {_write(self.out, 'train_throughput', payload)} and {png}")
        return payload


# ----------------------------------------------------------------------------- runtime latency


@dataclass
class RuntimeLatency:
    """Latency of the torch-free runtime (`ttm_policy.runtime.OnnxPolicy`, ONNX Runtime on
    CPU, batch 1) per control tick, for an exported checkpoint or, without one, the default
    Lift policy (two 84x84 cameras, eef pos/quat/gripper; untrained), plus its file sizes."""

    checkpoint: Path | None = None
    """checkpoint directory to export and time; None: the default Lift policy per `cores`"""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """temporal cores of the default Lift policy (ignored with --checkpoint)"""
    threads: tuple[int, ...] = (1, 2)
    """ONNX Runtime intra-op threads to time"""
    steps: int = 1000
    """timed ticks per point (after `warmup`)"""
    warmup: int = 50
    """untimed ticks first"""
    out: Path = Path("runs/bench")
    """where runtime_latency.json and the exports (exports/<name>/) go"""

    @staticmethod
    def _lift_stats() -> dict:
        """Plausible normalisation stats for the default Lift keys (an untrained policy)."""
        import numpy as np

        return {
            "obs/robot0_eef_pos/min": np.array([-0.3, -0.3, 0.8]),
            "obs/robot0_eef_pos/max": np.array([0.3, 0.3, 1.2]),
            "obs/robot0_eef_quat/min": -np.ones(4),
            "obs/robot0_eef_quat/max": np.ones(4),
            "obs/robot0_gripper_qpos/min": np.array([0.0, -0.04]),
            "obs/robot0_gripper_qpos/max": np.array([0.04, 0.0]),
            "action/min": -np.ones(7),
            "action/max": np.ones(7),
        }

    @staticmethod
    def _percentiles(times: list[float]) -> dict:
        import numpy as np

        ms = 1e3 * np.asarray(times)
        return {
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }

    def run(self) -> dict:
        import numpy as np

        from ttm_policy import PolicyConfig, TTMPolicy
        from ttm_policy.export import export
        from ttm_policy.runtime import OnnxPolicy

        torch.manual_seed(0)
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        if self.checkpoint is not None:
            jobs = {self.checkpoint.name: self.checkpoint}
        else:
            jobs = {}
            for core in self.cores:
                ckpt = self.out / "exports" / f"lift-{core}-checkpoint"
                TTMPolicy(PolicyConfig(core=core), self._lift_stats()).save_pretrained(ckpt)
                jobs[f"lift-{core}"] = ckpt
        results = {}
        for name, ckpt in tqdm(jobs.items(), desc="runtime-latency", unit="policy"):
            t0 = time.perf_counter()
            export(ckpt, self.out / "exports" / name)
            export_s = time.perf_counter() - t0
            files = json.loads((self.out / "exports" / name / "policy_spec.json").read_text())
            sizes = {
                f: (self.out / "exports" / name / f).stat().st_size
                for f in [*files["files_sha256"], "policy_spec.json"]
            }
            r = {"export_s": export_s, "file_bytes": sizes, "core": files["temporal_core"]}
            for threads in self.threads:
                policy = OnnxPolicy(self.out / "exports" / name, threads=threads)
                obs = [self._obs(policy, rng) for _ in range(32)]
                tick, graph = [], []
                for i in range(self.warmup + self.steps):
                    o = obs[i % len(obs)]
                    t0 = time.perf_counter()
                    policy(o)  # validation + graph + queue: the controller's cost
                    t1 = time.perf_counter()
                    feed, _ = policy.check_observation(o)
                    t2 = time.perf_counter()
                    policy.step(feed, policy.state)  # the graph alone
                    t3 = time.perf_counter()
                    if i >= self.warmup:
                        tick.append(t1 - t0)
                        graph.append(t3 - t2)
                assert policy.fault_count == 0, policy.last_error
                r[f"threads={threads}"] = {
                    "tick": self._percentiles(tick),
                    "graph": self._percentiles(graph),
                }
            results[name] = r
        payload = {
            "config": {k: str(v) for k, v in asdict(self).items()},
            "machine": {**_machine(), "onnxruntime": __import__("onnxruntime").__version__},
            "results": results,
        }
        self._print(results)
        print(f"wrote {_write(self.out, 'runtime_latency', payload)}")
        return payload

    @staticmethod
    def _obs(policy, rng) -> dict:
        import numpy as np

        obs = {}
        for name, o in policy.obs_specs.items():
            if o["kind"] == "image":
                obs[name] = rng.integers(0, 256, o["shape"], dtype=np.uint8)
            else:
                obs[name] = rng.uniform(-0.5, 0.5, o["shape"])  # float64, as envs give it
        return obs

    def _print(self, results: dict) -> None:
        print(
            f"\nruntime tick at batch 1 on CPU (OnnxPolicy.__call__: checks + ONNX Runtime + "
            f"queue), {self.steps} ticks; graph = session.run alone"
        )
        print(
            f"{'policy':<22}{'threads':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'graph p50':>11}{'graph p99':>11}{'onnx KiB':>10}{'state KiB':>10}"
        )
        for name, r in results.items():
            onnx_kib = r["file_bytes"]["policy.onnx"] / 1024
            state_kib = sum(v for f, v in r["file_bytes"].items() if f.startswith("init_")) / 1024
            for threads in self.threads:
                t, g = r[f"threads={threads}"]["tick"], r[f"threads={threads}"]["graph"]
                print(
                    f"{name:<22}{threads:>8}{t['p50_ms']:>9.2f}{t['p90_ms']:>9.2f}"
                    f"{t['p99_ms']:>9.2f}{t['max_ms']:>9.2f}{g['p50_ms']:>11.2f}"
                    f"{g['p99_ms']:>11.2f}{onnx_kib:>10.0f}{state_kib:>10.1f}"
                )


# ----------------------------------------------------------------------------- control latency


@dataclass
class ControlLatency:
    """End-to-end time of one control step at batch 1 (raw uint8 images + low-dim in, action
    out: cropping, normalisation, tokenizers, core, head) against history length, per core,
    for the default Lift policy configuration (untrained weights time the same)."""

    cores: tuple[str, ...] = (
        "ttm",
        "ttm-memoryless",
        "lstm",
        "transformer",
        "transformer-full",
        "none",
    )
    """Policies to time; `transformer-full` is the causal Transformer with an unbounded window."""
    histories: tuple[int, ...] = (1, 16, 64, 256)
    """Control steps already taken when the timed steps run."""
    repeats: int = 30
    """Timed steps per point (the policy state advances; the median is reported)."""
    image_size: int = 84
    """Camera side (two cameras, agentview and eye-in-hand, as robomimic's Lift)."""
    threads: int = 1
    """torch intra-op threads."""
    out: Path = Path("runs/bench")
    """Where control_latency.json and control_latency.png go."""

    def run(self) -> dict:
        import numpy as np

        from ttm_policy import PolicyConfig, TTMPolicy
        from ttm_policy.baselines import CausalTransformerConfig

        torch.manual_seed(0)
        torch.set_num_threads(self.threads)
        lowdim = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
        stats = {
            f"obs/{k}/{m}": np.full(d, v, np.float32)
            for k, d in lowdim.items()
            for m, v in (("min", -1), ("max", 1))
        }
        stats.update({"action/min": -np.ones(7, np.float32), "action/max": np.ones(7, np.float32)})
        rng = np.random.default_rng(0)

        def obs():
            o = {
                f"{c}_image": rng.integers(
                    0, 256, (self.image_size, self.image_size, 3), dtype=np.uint8
                )
                for c in ("agentview", "robot0_eye_in_hand")
            }
            return {**o, **{k: rng.uniform(-1, 1, d).astype(np.float32) for k, d in lowdim.items()}}

        results: dict[str, dict[int, dict]] = {}
        for core in tqdm(self.cores, desc="control-latency", unit="core"):
            kw = (
                {"core": "transformer", "transformer": CausalTransformerConfig(window=None)}
                if core == "transformer-full"
                else {"core": core}
            )
            policy = TTMPolicy(
                PolicyConfig(image_size=self.image_size, crop_size=min(76, self.image_size), **kw),
                stats,
            ).eval()
            policy.reset()
            done, results[core] = 0, {}
            for h in sorted(self.histories):
                while done < h:
                    policy.select_action(obs())
                    done += 1
                times = []
                for _ in range(self.repeats):
                    o = obs()
                    t0 = time.perf_counter()
                    policy.select_action(o)
                    times.append(time.perf_counter() - t0)
                done += self.repeats
                results[core][h] = {
                    "median_ms": 1e3 * statistics.median(times),
                    "p90_ms": 1e3 * sorted(times)[int(0.9 * (len(times) - 1))],
                }
        hs = sorted(self.histories)
        print(
            f"\nms per control step (images {self.image_size}px x2 -> action), batch 1, {self.threads} thread(s)"
        )
        print(f"{'core':<18}" + "".join(f"{'h=' + str(h):>10}" for h in hs))
        for core, r in results.items():
            print(f"{core:<18}" + "".join(f"{r[h]['median_ms']:>10.2f}" for h in hs))
        payload = {
            "config": {k: str(v) for k, v in asdict(self).items()},
            "machine": _machine(),
            "results": results,
        }
        path = _write(self.out, "control_latency", payload)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for core, r in results.items():
            ax.plot(hs, [r[h]["median_ms"] for h in hs], marker="o", label=core)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("history length (control steps)")
        ax.set_ylabel("ms per control step (median)")
        ax.set_title("End-to-end control step, default Lift policy, CPU, batch 1")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / "control_latency.png", dpi=120)
        plt.close(fig)
        print(f"wrote {path} and {self.out / 'control_latency.png'}")
        return payload


# ----------------------------------------------------------------------------- rollout throughput


@dataclass
class RolloutThroughput:
    """Environment steps/s in gymnasium vector envs (one process per env) with 1, 2, 4 envs,
    with and without camera images, under random actions (no policy)."""

    task: str = "Lift"
    """Task (envs.TASKS)."""
    envs: tuple[int, ...] = (1, 2, 4)
    """Vector env sizes."""
    steps: int = 100
    """Vector steps timed per setting (after one reset)."""
    image_size: int = 84
    """Camera side when images are on."""
    out: Path = Path("runs/bench")
    """Where rollout_throughput.json goes."""

    def run(self) -> dict:
        import functools
        import sys

        import gymnasium as gym
        import numpy as np

        from envs.env_args import make_on_egl_device

        results = {}
        for images in (True, False):
            kwargs = {"image_size": self.image_size} if images else {"cameras": []}
            env_args = {"env_name": f"ttm/{self.task}-v0", "type": 2, "env_kwargs": kwargs}
            for n in tqdm(self.envs, desc=f"rollout-throughput images={images}", unit="setting"):
                fns = [functools.partial(make_on_egl_device, None, env_args, {}) for _ in range(n)]
                kw = {"context": "forkserver"} if n > 1 and sys.platform == "linux" else {}
                venv = (gym.vector.AsyncVectorEnv if n > 1 else gym.vector.SyncVectorEnv)(fns, **kw)
                try:
                    venv.reset(seed=list(range(n)))
                    rng = np.random.default_rng(0)
                    t0 = time.perf_counter()
                    for _ in range(self.steps):
                        venv.step(rng.uniform(-1, 1, (n, 7)))
                    dt = time.perf_counter() - t0
                finally:
                    venv.close()
                results[f"{'images' if images else 'no_images'}/{n}"] = {
                    "envs": n,
                    "images": images,
                    "env_steps_per_s": n * self.steps / dt,
                }
        print(
            f"\n{self.task}: env steps/s in vector envs (random actions, {self.image_size}px cameras when on)"
        )
        print(f"{'envs':<6}{'images':>12}{'no images':>12}")
        for n in self.envs:
            print(
                f"{n:<6}{results[f'images/{n}']['env_steps_per_s']:>12.1f}{results[f'no_images/{n}']['env_steps_per_s']:>12.1f}"
            )
        payload = {
            "config": {k: str(v) for k, v in asdict(self).items()},
            "machine": _machine(),
            "results": results,
        }
        png = _bar_png(
            self.out / "rollout_throughput.png",
            list(results),
            [r["env_steps_per_s"] for r in results.values()],
            "env steps / s",
            f"{self.task} in gymnasium vector envs (images / no_images, envs)",
        )
        print(f"wrote {_write(self.out, 'rollout_throughput', payload)} and {png}")
        return payload


@dataclass
class Results:
    """The results table: every temporal core on the same demonstrations and budget, per delay."""

    task: str = "PointCue"
    """Task (envs.TASKS): PointCue, LiftCued, PlaceCued (with delays), Lift, PickPlaceCan, ..."""
    delays: tuple[int, ...] = (10, 30)
    """Delay steps between the cue and the decision (short and long); none for tasks without
    a cue (`--delays` with no value)."""
    cores: tuple[str, ...] = ("ttm", "ttm-memoryless", "lstm", "transformer", "none")
    """Temporal cores to run (the table lists every core evaluated so far)."""
    episodes: int | None = None
    """Expert demonstrations per delay; default: 200 on PointCue, 100 on robosuite tasks."""
    steps: int | None = None
    """Training steps per core (the same budget for all); default: 1500 on LiftCued and
    PlaceCued, 500 elsewhere."""
    eval_episodes: int = 50
    """Evaluation episodes per cell."""
    image_size: int | None = None
    """Camera side; default: 32 on PointCue, 64 on robosuite tasks."""
    cameras: tuple[str, ...] | None = None
    """Cameras; default: the task's own on PointCue, agentview on robosuite tasks."""
    out: Path = Path("runs/results")
    """Where each run, table_<task>/compare.md|png and results_<task>.json go."""
    paired_cues: bool = False
    """Memory tasks: record each scene once per cue (ttm-collect --paired-cues)."""
    write_gate: bool = False
    """TTM cores: the gated memory write (TTMConfig.write_gate)."""
    aux_final_keys: tuple[str, ...] = ()
    """Every core: predict these low-dim keys' final values from every step, an auxiliary
    loss (PolicyConfig.aux_final_keys), e.g. `robot0_eef_pos object`."""

    def run(self) -> None:
        from eval.results import run_table

        run_table(
            self.task,
            self.delays,
            self.cores,
            self.out,
            episodes=self.episodes,
            steps=self.steps,
            eval_episodes=self.eval_episodes,
            image_size=self.image_size,
            cameras=self.cameras,
            paired_cues=self.paired_cues,
            write_gate=self.write_gate,
            aux_final_keys=self.aux_final_keys,
        )


@dataclass
class Compare:
    """Several eval.json files (policies x tasks) -> markdown table + bar chart with intervals."""

    evals: tyro.conf.Positional[tuple[Path, ...]]
    """eval.json files written by ttm-eval."""
    out: Path = Path("runs/compare")
    """Where compare.md and compare.png go."""

    def run(self) -> None:
        from eval.compare import compare

        compare(list(self.evals), self.out)


Command = (
    Annotated[StepLatency, tyro.conf.subcommand("step-latency")]
    | Annotated[Recall, tyro.conf.subcommand("recall")]
    | Annotated[TrainThroughput, tyro.conf.subcommand("train-throughput")]
    | Annotated[Compare, tyro.conf.subcommand("compare")]
    | Annotated[Results, tyro.conf.subcommand("results")]
    | Annotated[ControlLatency, tyro.conf.subcommand("control-latency")]
    | Annotated[RolloutThroughput, tyro.conf.subcommand("rollout-throughput")]
    | Annotated[RuntimeLatency, tyro.conf.subcommand("runtime-latency")]
)


def main(argv: list[str] | None = None) -> None:
    from envs.collect import UsageError

    command = tyro.cli(Command, args=argv)
    try:
        command.run()
    except (UsageError, ValueError, FileNotFoundError) as e:
        # What the user asked for cannot be done (a bad task, delay, core, file, or cells on
        # disk made otherwise): one line, exit 2, as ttm-collect, ttm-train and ttm-eval.
        print(f"ttm-bench: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
