"""`ttm-bench step-latency`: time per streaming step at batch 1 against history length, per
temporal core at equal width and depth."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from eval.bench.report import lines_png, median_p90_ms, print_table, report
from ttm_policy import (
    CausalTransformerConfig,
    CausalTransformerCore,
    LSTMConfig,
    LSTMCore,
    TokenTuringMachine,
    TTMConfig,
)
from ttm_policy.state import num_bytes


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
        h: {**median_p90_ms(ts), "state_bytes": num_bytes(states[h])} for h, ts in times.items()
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
        self._print(results, ratios, base)
        ms = {name: {h: p["median_ms"] for h, p in r.items()} for name, r in results.items()}
        kib = {
            name: {h: p["state_bytes"] / 1024 for h, p in r.items()} for name, r in results.items()
        }
        png = lines_png(
            self.out / "step_latency.png",
            [("ms per step (median)", ms), ("state held (KiB)", kib)],
            xlabel="history length (steps)",
            title=f"Streaming step at batch 1 on CPU (D={self.dim}, N={self.tokens})",
            figsize=(10, 4),
            ylog=True,
        )
        return report(
            self.out,
            "step_latency",
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()},
            (png,),
            base_history=base,
            results=results,
            ratio_to_base=ratios,
        )

    def _print(self, results, ratios, base) -> None:
        hs = self.histories
        later = [h for h in hs if h > base]
        print(
            f"\nms per streaming step, batch 1, D={self.dim}, N={self.tokens}, "
            f"{self.layers} layers, {self.threads} thread(s) (median of {self.repeats})"
        )
        header = ["core", *(f"h={h}" for h in hs), *(f"x{h}/{base}" for h in later)]
        rows = [[*header, f"state@{hs[-1]}"]]
        for name, r in results.items():
            rows.append(
                [name, *(f"{r[h]['median_ms']:.3f}" for h in hs)]
                + [f"{ratios[name][h]:.2f}" for h in later]
                + [f"{r[hs[-1]]['state_bytes'] / 1024:.0f}KB"]
            )
        print_table(rows, [22] + [10] * len(hs) + [11] * len(later) + [14])
