"""Time every phase of one run on the current device, beside the release's figures.

    python bench.py [configs/NAME.yaml] [--key=value ...]   # same keys as main.py

Phases: one original-model training epoch (fresh model, batch ``batch_size``, after a
short warm-up), split, counterfactual construction, unlearning (the method call, which
for CaMU includes its counterfactual construction, as the release's reported time does),
the five accuracies and the MIA. Writes ``bench.json`` (or ``--bench_out=PATH``).
Uses the cached original model (trains it first when there is none).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from config import ConfigError, help_text, parse_args, wants_help
from data import build_counterfactuals, load_dataset
from eval.evaluate import accuracies, all_logits, mia_score
from main import resolve_device, split_for_seed, sync
from models import build_model
from models.original import original_model
from models.runtime import Runtime, configure_determinism
from models.train import train_classifier
from progress import configure_progress
from storage import write_json
from unlearn import UnlearnTask, get_method

# The release on MNIST class-0 removal (docs/method.md), seconds.
RELEASE = {
    "cpu": {"train_epoch_s": 13.2, "split_s": 25.4, "unlearn_s": 11.5, "eval_s": 12.7, "mia_s": 3.6,
            "per_seed_s": 53.0},
    "cuda": {"train_epoch_s": 6.75, "split_s": 50.0, "unlearn_s": 5.5, "eval_s": 12.5, "mia_s": 2.0,
             "per_seed_s": 70.0},
}


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls (device-synchronised) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


USAGE = """usage: python bench.py [PRESET.yaml] [--bench_out=bench.json] [--key=value ...]

Times every phase of one run (seed: the first of --seeds, default 0) on the configured device and
prints the release's figures beside them. Docs: docs/speed.md."""
FLAGS = [("--bench_out=PATH", "where the timings are written (default: bench.json)"), ("-h, --help", "this text")]


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(help_text(USAGE, FLAGS))
        return 0
    configure_progress()
    out_path = "bench.json"
    rest = []
    for arg in argv:
        if arg.startswith("--bench_out="):
            out_path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    try:
        cfg = parse_args(rest + ["--seeds=0"] if not any(a.startswith("--seeds=") for a in rest) else rest)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed = cfg.seeds[0]
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.download, device, cfg.train_limit, cfg.test_limit,
                        verify=cfg.verify_data)
    original, _ = original_model(cfg, data)
    phases: dict[str, float] = {}

    # one training epoch of a fresh model; warm-up: one short epoch on a slice
    torch.manual_seed(cfg.train_seed)
    runtime = Runtime.from_config(cfg, device)  # the same layout, precision and optimiser as the original's training
    fresh = runtime.prepare(build_model(cfg.model_name, data.num_classes).to(device))
    warm = torch.arange(min(len(data.train), 50 * cfg.batch_size), device=device)
    everything = torch.arange(len(data.train), device=device)

    def epoch(indices: torch.Tensor, desc: str) -> list[float]:
        return train_classifier(fresh, data, indices, 1, cfg.train_lr, cfg.weight_decay, cfg.batch_size, seed,
                                desc=desc, runtime=runtime)

    epoch(warm, "warm-up")
    phases["train_epoch_s"], _ = timed(lambda: epoch(everything, "bench"), device)

    phases["split_s"], split = timed(lambda: split_for_seed(cfg, data.train.labels, seed), device, repeat=5)
    # only the size survives the timing: a spare counterfactual set would hold 6 GB at 224 px
    phases["counterfactual_s"], _ = timed(lambda: len(build_counterfactuals(data, split, seed)), device, repeat=3)
    method = get_method(cfg.method)
    model = runtime.copy(original)
    phases["unlearn_s"], _ = timed(lambda: method(model, original, UnlearnTask(data, split, seed), cfg), device)

    def five_accuracies() -> tuple[dict, tuple]:
        logits = all_logits(model, data, cfg, seed)
        return accuracies(*logits, data, split, cfg.forget_class), logits

    timed(five_accuracies, device)  # warm-up
    phases["eval_s"], (acc, logits) = timed(five_accuracies, device, repeat=3)
    phases["mia_s"], mia = timed(lambda: mia_score(*logits, split, cfg, seed), device, repeat=3)
    per_seed = phases["split_s"] + phases["unlearn_s"] + phases["eval_s"] + phases["mia_s"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    doc = {"device": name, "phases": phases, "per_seed_s": per_seed,
           "metrics": {**acc, "mia": mia}, "config": cfg.to_dict()}
    write_json(out_path, doc)

    release = RELEASE[device.type]
    print(f"{cfg.dataset} {cfg.scenario}, {name}")
    print(f"{'phase':<18}{'camu s':>10}{'release s':>12}{'speed-up':>10}")
    for key, value in [*phases.items(), ("per_seed_s", per_seed)]:
        ref = release.get(key)
        ratio = f"{ref / value:.1f}x" if ref else "-"
        print(f"{key:<18}{value:>10.3f}{(ref if ref else float('nan')):>12.1f}{ratio:>10}")
    print(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
