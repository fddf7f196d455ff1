"""`ttm-bench runtime-latency`: exported ONNX policy latency at batch 1 (p50/p99) and file
sizes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import config_strings, machine, print_table, report


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
        self._print(results)
        return report(
            self.out,
            "runtime_latency",
            config_strings(self),
            machine={**machine(), "onnxruntime": __import__("onnxruntime").__version__},
            results=results,
        )

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
        rows = [["policy", "threads", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
        rows[0] += ["graph p50", "graph p99", "onnx KiB", "state KiB"]
        for name, r in results.items():
            onnx_kib = r["file_bytes"]["policy.onnx"] / 1024
            state_kib = sum(v for f, v in r["file_bytes"].items() if f.startswith("init_")) / 1024
            for threads in self.threads:
                t, g = r[f"threads={threads}"]["tick"], r[f"threads={threads}"]["graph"]
                rows.append(
                    [name, threads, *(f"{t[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms"))]
                    + [f"{t['max_ms']:.2f}", f"{g['p50_ms']:.2f}", f"{g['p99_ms']:.2f}"]
                    + [f"{onnx_kib:.0f}", f"{state_kib:.1f}"]
                )
        print_table(rows, [22, 8, 9, 9, 9, 9, 11, 11, 10, 10])
