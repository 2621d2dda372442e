"""Every setting of a run, in one dataclass.

Resolution order: the defaults below (the release's MNIST class-0 removal), then an
optional YAML preset, then ``--key=value`` overrides. Values are coerced by the field's
type, unknown keys and impossible values are errors, and the resolved config is written
into every checkpoint and results file, so a result always says what produced it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
SCENARIOS = ("class", "random")
COMPILE_MODES = ("off", "default", "reduce-overhead")
DEVICES = ("auto", "cpu", "cuda")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")


def default_data_root() -> str:
    """``$CAMU_DATA_ROOT`` when set, else ``datasets/`` in the working directory."""
    return os.environ.get("CAMU_DATA_ROOT", "datasets")


def opt(default: Any, help: str) -> Any:
    """A config field with its one-line meaning, shown by ``--help`` and ``docs/config.md``.

    A list default is copied per instance; a callable default is called per instance.
    """
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # --- what to forget
    dataset: str = opt("mnist", "mnist | fashion_mnist | cifar10 | cifar100")
    scenario: str = opt("class", "class: one whole class; random: a uniform fraction")
    forget_class: int = opt(0, "class removed in the class scenario (the release: 0)")
    forget_fraction: float = opt(0.1, "share of the training set forgotten in the random scenario")
    forget_repeat: int = opt(1, "rows of D_f repeated this many times (the release: 10 on CIFAR-100 class)")
    seeds: list[int] = opt([0, 1, 2, 3, 4], "one run per seed")
    method: str = opt("camu", "unlearning method, a key of unlearn.METHODS")
    # --- the original model (trained once, cached by a hash of these)
    train_epochs: int = opt(20, "epochs of the original model")
    train_lr: float = opt(1e-3, "Adam learning rate of the original model")
    train_seed: int = opt(0, "seed of the original model's initialisation and batch order")
    # --- CaMU unlearning
    unlearn_epochs: int = opt(2, "CaMU epochs over the counterfactual set")
    rep_lr: float = opt(4e-4, "Adam lr of the representation-level (KL) step")
    out_lr: float = opt(1e-3, "Adam lr of the output-level (cross-entropy) step")
    camu_rep_remain_weight: float = opt(0.5, "weight of KL(p_s || q_s)")
    camu_rep_forget_weight: float = opt(0.5, "weight of KL(p_cf || q_f)")
    camu_out_remain_weight: float = opt(0.9, "weight of CE(f(x_s), y_s)")
    camu_out_forget_weight: float = opt(0.01, "weight of CE(f(x_f), y_cf)")
    # --- shared optimisation settings
    batch_size: int = opt(32, "training and unlearning batch (the release: 32)")
    weight_decay: float = opt(1e-4, "Adam weight decay of every optimiser")
    eval_batch_size: int = opt(1024,
        "evaluation speed only (CIFAR with eval_train_augment: which crop each image draws)")
    # --- evaluation
    compare_retrain: bool = opt(True, "also evaluate a model retrained on D_r (cached per split) and report gaps to it")
    mia_attacks: list[str] = opt(["efficacy", "loss", "entropy"], "beside the XGBoost MIA")
    ulira_shadows: int = opt(4,
        "U-LiRA-lite: shadow CNNs trained from scratch on random halves (>= 2; expensive, opt-in)")
    ulira_epochs: int = opt(2, "U-LiRA-lite: training epochs of each shadow (original recipe otherwise)")
    mia_train_size: int = opt(4000, "members from D_s and non-members from the test set")
    mia_fit_fraction: float = opt(0.99, "share of the attacker rows it is fit on")
    eval_train_augment: bool = opt(True,
        "CIFAR: D_r / D_f / MIA features under the training augmentation, as the release")
    # --- relearning experiment (the paper's figure): one epoch of fine-tuning on D_r after unlearning
    relearn: bool = opt(False, "also fine-tune each unlearned model on D_r and record Acc(D_r) - Acc(D_f)")
    relearn_lr: float = opt(0.0, "Adam lr of the fine-tuning (0: the paper's, 1e-3; 1e-4 on CIFAR-100)")
    relearn_every: int = opt(100, "record the gap every this many mini-batches (and before the first)")
    # --- data and files
    data_root: str = opt(default_data_root,
        "where torchvision finds (or downloads) the data; default $CAMU_DATA_ROOT, else datasets/")
    download: bool = opt(True, "let torchvision download missing files")
    train_limit: int = opt(0, "use only the first N training samples (0: all); for tests and smoke runs")
    test_limit: int = opt(0, "use only the first N test samples (0: all)")
    out_dir: str = opt("runs", "results under out_dir/run_name, checkpoints under out_dir/checkpoints")
    run_name: str = opt("", "default: DATASET-SCENARIO-METHOD")
    # --- baselines: each key carries its method's prefix (sources in the method's file)
    # >>> block A: finetune, neggrad, neggrad_plus, random_label
    finetune_epochs: int = opt(2, "FT: passes over D_r (the SalUn release: 10 on CIFAR-10; fewer for the CPU budget)")
    finetune_lr: float = opt(0.01, "FT: learning rate (SalUn / Unlearn-Sparse release: 0.01)")
    finetune_optimizer: str = opt("sgd", "FT: sgd | adam (the release: SGD)")
    finetune_momentum: float = opt(0.9, "FT: SGD momentum (the release: 0.9)")
    neggrad_epochs: int = opt(5, "NG: at most this many passes of gradient ascent over D_f (SalUn release GA: 5)")
    neggrad_lr: float = opt(1e-4, "NG: learning rate of the ascent (SalUn release GA: 1e-4)")
    neggrad_optimizer: str = opt("adam", "NG: sgd | adam (the release: SGD; Adam bounds each step, see neggrad.py)")
    neggrad_momentum: float = opt(0.9, "NG: SGD momentum when neggrad_optimizer=sgd (the release: 0.9)")
    neggrad_stop_acc: float = opt(0.0, "NG: stop once a forget batch's accuracy (%) is at most this; negative: never")
    neggrad_plus_epochs: int = opt(1, "NG+: passes over D_r, D_f cycled alongside (SCRUB release: 10; CPU budget)")
    neggrad_plus_lr: float = opt(1e-4, "NG+: learning rate (SCRUB release: 0.01 with SGD; see neggrad_plus.py)")
    neggrad_plus_optimizer: str = opt(
        "adam", "NG+: sgd | adam (SCRUB release: SGD, which never starts forgetting on MNIST)")
    neggrad_plus_momentum: float = opt(0.0, "NG+: SGD momentum when neggrad_plus_optimizer=sgd (SCRUB release: none)")
    neggrad_plus_alpha: float = opt(0.95, "NG+: loss = alpha * CE(D_r) - (1 - alpha) * CE(D_f) (SCRUB release: 0.95)")
    neggrad_plus_stop_acc: float = opt(0.0,
        "NG+: stop once a forget batch's accuracy (%) is at most this; negative: never")
    random_label_epochs: int = opt(1, "RL: passes over D_f (random labels) and D_r shuffled together (SalUn: 10)")
    random_label_lr: float = opt(0.01, "RL: learning rate (SalUn release RL: 0.01 to 0.013)")
    random_label_optimizer: str = opt("sgd", "RL: sgd | adam (the release: SGD)")
    random_label_momentum: float = opt(0.9, "RL: SGD momentum (the release: 0.9)")
    # <<< block A
    # >>> block B: boundary_shrink, boundary_expand, unrolling_sgd, bad_teacher
    boundary_shrink_epochs: int = opt(10, "BS: passes over D_f relabelled to the nearest wrong class (release: 10)")
    boundary_shrink_lr: float = opt(1e-5, "BS: SGD learning rate (paper and release: 1e-5)")
    boundary_shrink_momentum: float = opt(0.9, "BS: SGD momentum (release: 0.9)")
    boundary_shrink_bound: float = opt(0.1, "BS: FGSM L-inf step in pixel units of [0, 1] (release: 0.1)")
    boundary_expand_epochs: int = opt(10, "BE: passes over D_f labelled as the shadow class (release: 10)")
    boundary_expand_lr: float = opt(1e-5, "BE: SGD learning rate (paper and release: 1e-5)")
    boundary_expand_momentum: float = opt(0.9, "BE: SGD momentum (release: 0.9)")
    unrolling_sgd_scale: float = opt(1.0, "Unrolling SGD: multiplier of the single-gradient step (paper: 1)")
    bad_teacher_epochs: int = opt(1, "TS: passes over D_f + the D_r subset (release notebook: 1)")
    bad_teacher_lr: float = opt(1e-4, "TS: Adam learning rate (release notebook: 1e-4)")
    bad_teacher_retain_fraction: float = opt(0.3,
        "TS: share of D_r distilled from the competent teacher (release: 0.3)")
    bad_teacher_temperature: float = opt(1.0, "TS: KL temperature (release notebook: 1)")
    bad_teacher_batch_size: int = opt(256, "TS: batch of the mixed D_f + D_r subset (release notebook: 256)")
    # <<< block B
    # >>> block C: scrub, salun, ssd
    scrub_epochs: int = opt(3, "SCRUB epochs (sgda_epochs): each ends with a min pass over D_r")
    scrub_msteps: int = opt(2, "the first this many epochs start with a max pass over D_f")
    scrub_lr: float = opt(5e-4, "SGD learning rate (sgda_learning_rate)")
    scrub_momentum: float = opt(0.9, "SGD momentum")
    scrub_weight_decay: float = opt(5e-4, "SGD weight decay (SCRUB's own, not the shared weight_decay)")
    scrub_lr_decay_epochs: list[int] = opt([3, 5, 9], "lr x decay_rate after each")
    scrub_lr_decay_rate: float = opt(0.1, "learning-rate factor per passed entry of scrub_lr_decay_epochs")
    scrub_kd_t: float = opt(4.0, "distillation temperature kd_T of the student-teacher KL")
    scrub_gamma: float = opt(0.99, "weight of cross-entropy on D_r in the min step")
    scrub_alpha: float = opt(0.001, "weight of KL(teacher || student) on D_r in the min step")
    scrub_forget_batch_size: int = opt(512, "batch of the max steps over D_f")
    scrub_remain_batch_size: int = opt(256, "batch of the min steps over D_r")
    salun_threshold: float = opt(0.5, "share of weights (largest |grad| of the forget loss) the saliency mask frees")
    salun_epochs: int = opt(10, "random-label epochs, each a pass over D_f (random labels) then over D_r")
    salun_lr: float = opt(0.013, "SGD learning rate")
    salun_momentum: float = opt(0.9, "SGD momentum")
    salun_weight_decay: float = opt(5e-4, "SGD weight decay (applied to salient weights only)")
    salun_batch_size: int = opt(256, "batch of the mask pass and of unlearning")
    ssd_alpha: float = opt(10.0, "selection weighting: dampen where forget importance > alpha * full importance")
    ssd_lambda: float = opt(1.0, "dampening constant: factor min(lambda * full / forget, 1)")
    ssd_batch_size: int = opt(64, "batch of the importance passes (importance = mean squared batch gradient)")
    # <<< block C
    # >>> block D: concept_poison (concept-level class unlearning)
    # <<< block D
    # >>> block E: tuning
    # <<< block E
    # --- hardware
    device: str = opt("auto", "auto | cpu | cuda")
    num_threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    channels_last: bool = opt(True, "NHWC convolutions (rounding only; see README, Speed)")
    fused_adam: bool = opt(True, "Adam as one fused kernel (rounding only)")
    compile: str = opt("off", "torch.compile of every model: off | default | reduce-overhead (CUDA graphs on a GPU)")
    bf16: str = opt("auto", "bfloat16 autocast: auto (on for a CPU with native bf16, off on CUDA) | true | false")
    # >>> block G: CUDA path (determinism, relearning cost)
    # <<< block G
    # >>> block F: running beyond one machine (launchers, SLURM)
    slurm_partition: str = opt("", "reproduce.py --launcher=submitit: SLURM partition (empty: the cluster's default)")
    slurm_gpus_per_task: int = opt(1, "reproduce.py --launcher=submitit: GPUs of each job (0: CPU jobs)")
    slurm_cpus_per_task: int = opt(8, "reproduce.py --launcher=submitit: CPU cores of each job")
    slurm_mem_gb: float = opt(32.0, "reproduce.py --launcher=submitit: memory of each job, GB")
    slurm_timeout_min: int = opt(240, "reproduce.py --launcher=submitit: minutes per job; a timed-out job is requeued")
    slurm_array_parallelism: int = opt(16, "reproduce.py --launcher=submitit: jobs of a stage (array tasks) at most")
    slurm_additional: str = opt("", "more sbatch options, space-separated key=value (e.g. 'account=lab qos=high')")
    submitit_cluster: str = opt("slurm", "slurm | local (jobs as processes on this machine) | debug (in this process)")
    lock_timeout_min: float = opt(0.0, "minutes to wait for a checkpoint another process is training (0: no limit)")
    # <<< block F

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
        inner = typing.get_args(kind)[0]
        what = "integers" if inner is int else "names"
        items = [s for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        if items is None:
            items = []
        if isinstance(items, (int, str)) and not isinstance(items, bool):
            items = [items]
        if not isinstance(items, list):
            raise ConfigError(f"{key}: expected a comma-separated list of {what}, got {value!r}")
        out = []
        for item in items:
            if isinstance(item, str):
                item = item.strip()
            try:
                out.append(_coerce(key, item, inner))
            except ConfigError:
                raise ConfigError(f"{key}: expected a comma-separated list of {what}, got {value!r}") from None
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
    from eval.mia_suite import ATTACKS

    for name in cfg.mia_attacks:
        if name not in ATTACKS:
            raise ConfigError(f"mia_attacks: {name!r} is not one of {', '.join(ATTACKS)}")
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
    positive = ("forget_repeat", "train_epochs", "batch_size", "eval_batch_size", "mia_train_size", "relearn_every")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 1")
    for key in ("unlearn_epochs", "train_limit", "test_limit", "num_threads", "train_seed", "relearn_lr"):
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
    if cfg.compile not in COMPILE_MODES:
        raise ConfigError(f"compile: {cfg.compile!r} is not one of {', '.join(COMPILE_MODES)}")
    # running beyond one machine (issue 14): launcher keys
    if cfg.submitit_cluster not in SUBMITIT_CLUSTERS:
        raise ConfigError(f"submitit_cluster: {cfg.submitit_cluster!r} is not one of {', '.join(SUBMITIT_CLUSTERS)}")
    for key in ("slurm_gpus_per_task", "lock_timeout_min"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 0")
    for key in ("slurm_cpus_per_task", "slurm_timeout_min", "slurm_array_parallelism"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 1")
    if not cfg.slurm_mem_gb > 0:
        raise ConfigError(f"slurm_mem_gb: {cfg.slurm_mem_gb} must be greater than 0")
    for item in cfg.slurm_additional.split():
        if not re.fullmatch(r"[A-Za-z][\w-]*=\S+", item):
            raise ConfigError(f"slurm_additional: {item!r} is not key=value (e.g. 'account=lab qos=high')")
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
