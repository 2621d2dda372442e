"""Every setting of a run, in one dataclass.

Resolution order: the defaults below (the release's MNIST class-0 removal), then an
optional YAML preset, then ``--key=value`` overrides. Values are coerced by the field's
type, unknown keys and impossible values are errors, and the resolved config is written
into every checkpoint and results file, so a result always says what produced it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
SCENARIOS = ("class", "random")
DEVICES = ("auto", "cpu", "cuda")


def default_data_root() -> str:
    """``$CAMU_DATA_ROOT`` when set, else ``datasets/`` in the working directory."""
    return os.environ.get("CAMU_DATA_ROOT", "datasets")


@dataclass
class Config:
    # --- what to forget
    dataset: str = "mnist"  # mnist | fashion_mnist | cifar10 | cifar100
    scenario: str = "class"  # class: one whole class; random: a uniform fraction
    forget_class: int = 0  # class removed in the class scenario (the release: 0)
    forget_fraction: float = 0.1  # share of the training set forgotten in the random scenario
    forget_repeat: int = 1  # rows of D_f repeated this many times (the release: 10 on CIFAR-100 class)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # one run per seed
    method: str = "camu"  # unlearning method, a key of unlearn.METHODS
    # --- the original model (trained once, cached by a hash of these)
    train_epochs: int = 20
    train_lr: float = 1e-3
    train_seed: int = 0  # seed of the original model's initialisation and batch order
    # --- CaMU unlearning
    unlearn_epochs: int = 2
    rep_lr: float = 4e-4  # Adam lr of the representation-level (KL) step
    out_lr: float = 1e-3  # Adam lr of the output-level (cross-entropy) step
    camu_rep_remain_weight: float = 0.5  # weight of KL(p_s || q_s)
    camu_rep_forget_weight: float = 0.5  # weight of KL(p_cf || q_f)
    camu_out_remain_weight: float = 0.9  # weight of CE(f(x_s), y_s)
    camu_out_forget_weight: float = 0.01  # weight of CE(f(x_f), y_cf)
    # --- shared optimisation settings
    batch_size: int = 32  # training and unlearning batch (the release: 32)
    weight_decay: float = 1e-4  # Adam weight decay of every optimiser
    eval_batch_size: int = 1024  # evaluation speed only (CIFAR with eval_train_augment: which crop each image draws)
    # --- evaluation
    mia_train_size: int = 4000  # members from D_s and non-members from the test set
    mia_fit_fraction: float = 0.99  # share of the attacker rows it is fit on
    eval_train_augment: bool = True  # CIFAR: D_r / D_f / MIA features under the training augmentation, as the release
    # --- data and files
    data_root: str = field(default_factory=default_data_root)
    download: bool = True  # let torchvision download missing files
    train_limit: int = 0  # use only the first N training samples (0: all); for tests and smoke runs
    test_limit: int = 0  # use only the first N test samples (0: all)
    out_dir: str = "runs"  # results under out_dir/run_name, checkpoints under out_dir/checkpoints
    run_name: str = ""  # default: DATASET-SCENARIO-METHOD
    # --- hardware
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # CPU threads for torch (0: torch's default)
    channels_last: bool = True  # NHWC convolutions (rounding only; see README, Speed)
    fused_adam: bool = True  # Adam as one fused kernel (rounding only)
    bf16: str = "auto"  # bfloat16 autocast: auto (on for a CPU with native bf16, off on CUDA) | true | false

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset]

    @property
    def model_name(self) -> str:
        return "cnn" if self.dataset in ("mnist", "fashion_mnist") else "resnet18"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConfigError(ValueError):
    """A bad setting; the message is one line naming the key and what is allowed."""


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise ConfigError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if kind is str:
        if value is None:  # an empty YAML value: the field's "unset" (run_name -> its default)
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if typing.get_origin(kind) is list:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, int) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, list):
            raise ConfigError(f"{key}: expected a comma-separated list of integers, got {value!r}")
        out = []
        for item in items:
            if isinstance(item, str):
                item = item.strip()
            try:
                out.append(_coerce(key, item, int))
            except ConfigError:
                raise ConfigError(f"{key}: expected a comma-separated list of integers, got {value!r}") from None
        return out
    raise ConfigError(f"{key}: unsupported field type {kind}")  # pragma: no cover


def apply_overrides(cfg: Config, values: dict[str, Any], source: str = "") -> Config:
    """Set the given keys on a copy of ``cfg``; unknown keys and wrong types raise ConfigError."""
    types = _field_types()
    updates = {}
    for key, value in values.items():
        if key not in types:
            known = ", ".join(sorted(types))
            where = f" (in {source})" if source else ""
            raise ConfigError(f"unknown config key {key!r}{where}; known keys: {known}")
        updates[key] = _coerce(key, value, types[key])
    return dataclasses.replace(cfg, **updates)


def validate(cfg: Config) -> Config:
    """Reject impossible values before any work; fill derived defaults (run_name)."""
    if cfg.dataset not in NUM_CLASSES:
        raise ConfigError(f"dataset: {cfg.dataset!r} is not one of {', '.join(NUM_CLASSES)}")
    if cfg.scenario not in SCENARIOS:
        raise ConfigError(f"scenario: {cfg.scenario!r} is not one of {', '.join(SCENARIOS)}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device: {cfg.device!r} is not one of {', '.join(DEVICES)}")
    from unlearn import METHODS  # late import: the registry imports torch

    if cfg.method not in METHODS:
        raise ConfigError(f"method: {cfg.method!r} is not one of {', '.join(sorted(METHODS))}")
    if not 0 <= cfg.forget_class < cfg.num_classes:
        raise ConfigError(f"forget_class: {cfg.forget_class} is out of range for {cfg.dataset} "
                          f"(0 to {cfg.num_classes - 1})")
    if not 0.0 < cfg.forget_fraction < 1.0:
        raise ConfigError(f"forget_fraction: {cfg.forget_fraction} must lie strictly between 0 and 1")
    if not 0.0 < cfg.mia_fit_fraction <= 1.0:
        raise ConfigError(f"mia_fit_fraction: {cfg.mia_fit_fraction} must lie in (0, 1]")
    if not cfg.seeds:
        raise ConfigError("seeds: give at least one seed, e.g. --seeds=0,1,2")
    if len(set(cfg.seeds)) != len(cfg.seeds) or min(cfg.seeds) < 0:
        raise ConfigError(f"seeds: {cfg.seeds} must be distinct non-negative integers")
    positive = ("forget_repeat", "train_epochs", "batch_size", "eval_batch_size", "mia_train_size")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 1")
    for key in ("unlearn_epochs", "train_limit", "test_limit", "num_threads", "train_seed"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 0")
    for key in ("train_lr", "rep_lr", "out_lr"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be greater than 0")
    weights = ("weight_decay", "camu_rep_remain_weight", "camu_rep_forget_weight",
               "camu_out_remain_weight", "camu_out_forget_weight")
    for key in weights:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 0")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device; use auto or cpu")
    for key in ("out_dir", "data_root"):
        if not getattr(cfg, key):
            raise ConfigError(f"{key}: must not be empty")
    switch = {"true": "true", "1": "true", "yes": "true", "on": "true",
              "false": "false", "0": "false", "no": "false", "off": "false", "auto": "auto"}
    if cfg.bf16.lower() not in switch:
        raise ConfigError(f"bf16: {cfg.bf16!r} is not one of auto, true, false")
    run_name = cfg.run_name or f"{cfg.dataset}-{cfg.scenario}-{cfg.method}"
    if "/" in run_name or run_name in (".", ".."):
        raise ConfigError(f"run_name: {run_name!r} must be a plain folder name")
    return dataclasses.replace(cfg, run_name=run_name, bf16=switch[cfg.bf16.lower()])


def parse_args(argv: list[str], base: Config | None = None, echo: bool = False) -> Config:
    """``[PRESET.yaml] [--key=value ...]`` -> a validated Config.

    With ``echo`` each preset and override is printed, so the log shows what changed.
    """
    cfg = base if base is not None else Config()
    args = list(argv)
    if args and not args[0].startswith("--"):
        preset = Path(args.pop(0))
        if not preset.is_file():
            raise ConfigError(f"preset file {str(preset)!r} does not exist")
        try:
            values = yaml.safe_load(preset.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"preset {preset}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"preset {preset}: expected a mapping of config keys")
        cfg = apply_overrides(cfg, values, source=str(preset))
        if echo:
            print(f"preset {preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    overrides = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected --key=value (a preset file may only come first)")
        key, value = arg[2:].split("=", 1)
        overrides[key] = value
    cfg = apply_overrides(cfg, overrides)
    if echo:
        for key in overrides:
            print(f"override {key} = {getattr(cfg, key)!r}")
    return validate(cfg)


def load_config(argv: list[str] | None = None) -> Config:
    """Parse the command line; on a bad setting print one line and exit with status 2."""
    try:
        return parse_args(sys.argv[1:] if argv is None else argv, echo=True)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
