"""Time every phase of one run on the current device, beside the release's figures.

    python bench.py [configs/NAME.yaml] [--key=value ...]   # same keys as main.py

Phases: one original-model training epoch (fresh model, batch ``batch_size``, after a
short warm-up), split, counterfactual construction, unlearning (the method call, which
for CaMU includes its counterfactual construction, as the release's reported time does),
the five accuracies and the MIA. Writes ``bench.json`` (or ``--bench_out=PATH``).
Uses the cached original model (trains it first when there is none).

The release's published timings come from other machines; ``--release_epoch`` also times, in this
run, one training epoch written the release's way (torchvision's dataset with per-sample transforms
in a DataLoader, batch 32, shuffled, no workers; float32 in PyTorch's default layout;
``torch.optim.Adam``; not the release's code), so the training row has a ratio measured on the same
machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from config import Config, ConfigError, check_keys, help_text, parse_args, unwritable_folder, wants_help
from data import build_counterfactuals, load_dataset
from data.augment import MEAN, STD
from data.datasets import torchvision_dataset
from eval.evaluate import accuracies, all_logits, mia_score
from main import one_line_errors, resolve_device, split_for_seed, sync
from models import build_model
from models.original import original_model
from models.runtime import Runtime, configure_determinism
from models.train import train_classifier
from progress import configure_progress
from storage import write_json
from unlearn import UnlearnTask, get_method

# The release on MNIST class-0 removal (docs/method.md), seconds, as (fastest, slowest) over its measured
# runs: on 2 CPU cores of this project's shared machines, and on one H100. Those runs were on other machines
# and days than any bench run, and shared machines differ by up to 2x, so a ratio to them is a range.
PER_SEED = ("split_s", "unlearn_s", "eval_s", "mia_s")  # a seed's phases, excluding training


def _with_per_seed(figures: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``figures`` plus ``per_seed_s``: the sum of the per-seed phases' fastest, and of their slowest."""
    return {**figures, "per_seed_s": tuple(round(sum(figures[k][i] for k in PER_SEED), 6) for i in (0, 1))}


RELEASE = {
    "cpu": _with_per_seed({"train_epoch_s": (13.2, 28.0), "split_s": (25.4, 48.0), "unlearn_s": (11.5, 24.0),
                           "eval_s": (12.7, 28.0), "mia_s": (3.6, 7.0)}),
    "cuda": _with_per_seed({"train_epoch_s": (6.5, 7.0), "split_s": (50.0, 50.0), "unlearn_s": (5.5, 5.8),
                            "eval_s": (12.0, 13.0), "mia_s": (2.0, 2.0)}),
}
RELEASE_WHERE = {"cpu": "2 CPU cores", "cuda": "one H100"}


# What the release's figures time: CaMU on all of MNIST, class-0 removal, its 2 epochs at batch 32, 4000 MIA rows.
RELEASE_WORK = (("dataset", "mnist"), ("scenario", "class"), ("method", "camu"), ("train_limit", 0), ("test_limit", 0),
                ("forget_class", 0), ("forget_repeat", 1), ("unlearn_epochs", 2), ("batch_size", 32),
                ("mia_train_size", 4000))


def unlike_release(cfg: Config) -> str:
    """'' when ``cfg`` times the work the release's figures time (``RELEASE_WORK``), else what differs."""
    return ", ".join(f"{k}={getattr(cfg, k)}" for k, v in RELEASE_WORK if getattr(cfg, k) != v)


def span(low: float, high: float, digits: int = 1) -> str:
    """``low-high``, or one number when they agree at ``digits`` decimals."""
    a, b = f"{low:.{digits}f}", f"{high:.{digits}f}"
    return a if a == b else f"{a}-{b}"


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


def release_train_transform(dataset: str) -> Callable:
    """The release's per-sample training transform (docs/method.md): ToTensor on MNIST / Fashion-MNIST;
    on CIFAR Resize(224, 224), RandomResizedCrop(224), a random flip, ToTensor, Normalize(ImageNet)."""
    from torchvision import transforms as T  # noqa: N812

    if not dataset.startswith("cifar"):
        return T.ToTensor()
    return T.Compose([T.Resize((224, 224)), T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


def release_style_epoch(cfg: Config, device: torch.device, num_classes: int, warm_batches: int = 50) -> float:
    """Seconds of one training epoch written as the release writes it (module docstring), after
    ``warm_batches`` untimed steps; the same model, recipe and ``train_limit`` as camu's epoch."""
    ds = torchvision_dataset(cfg.dataset, cfg.data_root, True, release_train_transform(cfg.dataset),
                             verify=cfg.verify_data)
    if cfg.train_limit:
        ds = torch.utils.data.Subset(ds, range(min(cfg.train_limit, len(ds))))
    torch.manual_seed(cfg.train_seed)
    model = build_model(cfg.model_name, num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train_lr, weight_decay=cfg.weight_decay)
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        logits, _ = model(x.to(device))
        loss = torch.nn.functional.cross_entropy(logits, y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()

    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    for i, (x, y) in enumerate(loader):  # warm-up
        if i == warm_batches:
            break
        step(x, y)
    sync(device)
    t0 = time.perf_counter()
    for x, y in tqdm(loader, desc="release-style epoch", leave=False):
        step(x, y)
    sync(device)
    return time.perf_counter() - t0


USAGE = """usage: python bench.py [PRESET.yaml] [--bench_out=bench.json] [--release_epoch=auto] [--key=value ...]

Times every phase of one run (seed: the first of --seeds, default 0) on the configured device and
prints the release's figures beside them. Docs: docs/speed.md."""
FLAGS = [("--bench_out=PATH", "where the timings are written (default: bench.json)"),
         ("--release_epoch=auto|true|false", "also time one training epoch written the release's way, in this run "
          "(auto: on MNIST / Fashion-MNIST; on CIFAR a 224 px epoch with per-sample transforms takes hours on a CPU)"),
         ("-h, --help", "this text")]


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(help_text(USAGE, FLAGS))
        return 0
    configure_progress()
    out_path, release_epoch = "bench.json", "auto"
    rest = []
    for arg in argv:
        if arg.startswith("--bench_out="):
            out_path = arg.split("=", 1)[1]
        elif arg.startswith("--release_epoch="):
            release_epoch = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    try:
        if release_epoch not in ("auto", "true", "false"):
            raise ConfigError(f"--release_epoch: {release_epoch!r} is not one of auto, true, false")
        check_keys(rest, ("bench_out", "release_epoch"))
        problem = "it is a folder" if Path(out_path).is_dir() else unwritable_folder(str(Path(out_path).parent))
        if problem:  # else found after every phase was timed
            raise ConfigError(f"--bench_out: {out_path!r}: {problem}")
        cfg = parse_args(rest + ["--seeds=0"] if not any(a.startswith("--seeds=") for a in rest) else rest)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    time_release_epoch = release_epoch == "true" or (release_epoch == "auto" and not cfg.dataset.startswith("cifar"))
    return one_line_errors(lambda: bench(cfg, out_path, time_release_epoch),
                           f"no timings written ({out_path} is written once every phase is timed)")


def bench(cfg: Config, out_path: str, time_release_epoch: bool) -> int:
    """Time every phase of the first seed of ``cfg``, write ``out_path`` and print the table."""
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
    if time_release_epoch:
        phases["release_style_epoch_s"] = release_style_epoch(cfg, device, data.num_classes)

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
    per_seed = sum(phases[k] for k in PER_SEED)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    release = RELEASE[device.type]
    unlike = unlike_release(cfg)
    doc = {"device": name, "phases": phases, "per_seed_s": per_seed,
           "metrics": {**acc, "mia": mia}, "config": cfg.to_dict(),
           "release_s": {k: list(v) for k, v in release.items()}}
    write_json(out_path, doc)

    print(f"{cfg.dataset} {cfg.scenario}, {name}")
    print(f"{'phase':<18}{'camu s':>10}{'release s':>14}{'speed-up':>16}")
    for key, value in [*phases.items(), ("per_seed_s", per_seed)]:
        if key == "release_style_epoch_s":
            continue
        low, high = release.get(key, (None, None)) if not unlike else (None, None)
        ref = span(low, high) if low else "-"
        ratio = f"{span(low / value, high / value, 0 if low / value >= 10 else 1)}x" if low else "-"
        print(f"{key:<18}{value:>10.3f}{ref:>14}{ratio:>16}")
    if unlike:
        print(f"release s: left out, as the release's figures time CaMU on all of MNIST, class-0 removal, 2 "
              f"epochs at batch 32 (this run: {unlike})")
    else:
        print(f"release s: the release's own runs on {RELEASE_WHERE[device.type]}, fastest-slowest, on other "
              f"machines and days than this run; a firm ratio needs both timed in one session (docs/speed.md)")
    if "release_style_epoch_s" in phases:
        mine, theirs = phases["train_epoch_s"], phases["release_style_epoch_s"]
        print(f"this run, one training epoch written the release's way (per-sample transforms in a DataLoader, "
              f"default layout, torch.optim.Adam): {theirs:.3f} s; camu's {mine:.3f} s: {theirs / mine:.2f}x"
              + (" (one timing each, on a slice: it can swing several-fold with the machine's load; the full data "
                 "is steadier)" if cfg.train_limit else ""))
    print(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
