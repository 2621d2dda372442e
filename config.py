"""Every setting of a run, in one dataclass.

Resolution order: the defaults below (the release's MNIST class-0 removal), then an
optional YAML preset, then (``tuned=true``) the tuned file tune.py wrote, then
``--key=value`` overrides. Values are coerced by the field's type, unknown keys and
impossible values are errors, and the resolved config is written into every checkpoint
and results file, so a result always says what produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import math
import os
import re
import sys
import typing
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
IMAGE_SIDE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "cifar100": 32}  # stored pixels
MODEL_NAMES = ("auto", "cnn", "resnet18", "resnet50")
CONCEPT_CHOICES = {
    "concept_bank": ("cav", "nmf", "clip"),
    "concept_poison_rank": ("weight", "ig"),
    "concept_poison_donor_rule": ("confusion", "shared"),
    "concept_poison_labels": ("targeted", "random", "keep"),
    "concept_poison_mode": ("none", "localized", "center", "random", "full"),
    "concept_poison_variant": ("simple", "release"),
    "concept_poison_locate": ("ig", "clip_window", "clip_window_release", "gradcam", "pcbm_margin"),
    "concept_poison_layers": ("last", "all"),
    "concept_poison_integrity": ("full", "half"),
}
# concept_poison_locate's locators that place the patch on the forget image by the forget class, whatever the
# concept (the release's locator ablation); the donor's patch is still cut where its concept peaks
CLASS_LOCATORS = ("gradcam", "pcbm_margin")
SCENARIOS = ("class", "random")
COMPILE_MODES = ("off", "default", "reduce-overhead")
DEVICES = ("auto", "cpu", "cuda")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")


# Names a key may take that are defined by higher layers (the method registry in unlearn/,
# the attack list in eval/): those modules register them on import, so config imports
# neither and sits at the bottom of the dependency graph.
_CHOICES: dict[str, tuple[str, ...]] = {}


def register_choices(key: str, names: Collection[str]) -> None:
    """Declare the names ``key`` accepts (called by the module that defines them)."""
    _CHOICES[key] = tuple(names)


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
    dataset: str = opt("mnist", "mnist, fashion_mnist, cifar10 or cifar100")
    scenario: str = opt(
        "class", "class: forget every training sample of forget_class; random: forget a "
        "uniform forget_fraction of the training set")
    forget_class: int = opt(
        0, "the class removed (class scenario; the release: 0); also splits the test set into D_t,r / D_t,f")
    forget_fraction: float = opt(0.1, "share of the training set forgotten (random scenario), in (0, 1)")
    forget_repeat: int = opt(
        1, "D_f rows repeated this many times, and D_s drawn of that size (the release: 10 on CIFAR-100 class removal)")
    seeds: list[int] = opt([0, 1, 2, 3, 4], "one split + unlearning + evaluation per seed; mean and std over them")
    method: str = opt("camu", "camu, retrain or a baseline (list: docs/baselines.md; registry: unlearn.METHODS)")
    # --- the original model (trained once, cached by a hash of these)
    train_epochs: int = opt(20, "epochs of the original model")
    train_lr: float = opt(1e-3, "Adam learning rate of the original model")
    train_seed: int = opt(0, "seed of the original model's initialisation and batch order")
    model: str = opt("auto", "auto (cnn on MNIST / Fashion-MNIST, resnet18 on CIFAR), cnn, resnet18 or resnet50 "
                             "(the concept method's release: ResNet-50 at 224 px)")
    pretrained: bool = opt(False, "start the original from torchvision's ImageNet weights (resnet18 / resnet50; "
                                  "downloaded once, needs a connection)")
    # --- CaMU unlearning
    unlearn_epochs: int = opt(2, "CaMU epochs over the counterfactual set")
    rep_lr: float = opt(4e-4, "Adam learning rate of the representation-level (KL) step (the release's KL_LR)")
    out_lr: float = opt(1e-3, "Adam learning rate of the output-level (cross-entropy) step (the release's IMPAIR_LR)")
    camu_rep_remain_weight: float = opt(0.5, "weight of KL(p_s || q_s)")
    camu_rep_forget_weight: float = opt(0.5, "weight of KL(p_cf || q_f)")
    camu_out_remain_weight: float = opt(0.9, "weight of CE(f(x_s), y_s)")
    camu_out_forget_weight: float = opt(0.01, "weight of CE(f(x_f), y_cf)")
    # --- shared optimisation settings
    batch_size: int = opt(32, "batch of the original's training (the release: 32; also retrain, CaMU, Unrolling SGD's "
                              "step); part of the original model's cache key; baselines use <method>_batch_size")
    weight_decay: float = opt(1e-4, "Adam weight decay of the original, retrain, CaMU, relearning and the MIA "
                                       "shadow models; NG's optimiser; NG+'s pull toward the original (other "
                                       "methods: <method>_weight_decay or none)")
    eval_batch_size: int = opt(
        1024, "evaluation batch: speed only, except that on CIFAR with eval_train_augment "
        "the augmentation draws follow the batching")
    # --- evaluation
    compare_retrain: bool = opt(
        True, "also train (once per split, cached) and evaluate the retrained "
        "oracle; rows then hold retrain, gap and avg_gap")
    mia_attacks: list[str] = opt(
        ["efficacy", "loss", "entropy"], "attacks reported beside the faithful XGBoost MIA as mia_<name> "
        "(efficacy, loss, entropy; ulira is opt-in and trains ulira_shadows shadow CNNs)")
    ulira_shadows: int = opt(
        4, "U-LiRA-lite: shadow CNNs trained from scratch on random halves (>= 2; expensive, opt-in)")
    ulira_epochs: int = opt(2, "U-LiRA-lite: training epochs of each shadow (original recipe otherwise)")
    mia_train_size: int = opt(4000, "members (from D_s) and non-members (first test rows) the attacker is trained on")
    mia_fit_fraction: float = opt(0.99, "share of those rows the attacker is fit on")
    eval_train_augment: bool = opt(
        True, "CIFAR only: D_r, D_f and the XGBoost MIA's features under the training augmentation, "
        "as the release's training loaders; the mia_attacks suite sees them unaugmented, as SalUn's "
        "release (docs/fidelity.md)")
    # --- relearning experiment (the paper's figure): one epoch of fine-tuning on D_r after unlearning
    relearn: bool = opt(
        False, "also fine-tune a copy of each unlearned model on D_r for one epoch "
        "and record Acc(D_r) - Acc(D_f) (the paper's relearning test)")
    relearn_lr: float = opt(0.0, "its Adam lr (0: the paper's, 1e-3; 1e-4 on CIFAR-100)")
    relearn_every: int = opt(
        100, "mini-batches between records (the first is before any step, the last at the epoch's end)")
    # --- data and files
    data_root: str = opt(
        default_data_root, "where torchvision finds (or downloads) the data; default $CAMU_DATA_ROOT, else datasets/")
    download: bool = opt(True, "let torchvision download missing files")
    verify_data: bool = opt(True, "check the files against the originals' checksums (torchvision's for CIFAR, the "
                                  "unpacked archives' for MNIST / Fashion-MNIST; false: accept a modified copy, "
                                  "warn, and mark the results as not from the original files)")
    train_limit: int = opt(0, "keep only the first N training samples (0: all); for smoke runs and tests")
    test_limit: int = opt(0, "keep only the first N test samples (0: all)")
    out_dir: str = opt("runs", "results in out_dir/run_name/, cached models in out_dir/checkpoints/")
    run_name: str = opt("", "folder of this run's results (empty: DATASET-SCENARIO-METHOD)")
    # --- baselines: each key carries its method's prefix (sources in the method's file)
    # >>> block A: finetune, neggrad, neggrad_plus, random_label
    finetune_epochs: int = opt(2, "FT: passes over D_r (the SalUn release: 10 on CIFAR-10; fewer for the CPU budget)")
    finetune_lr: float = opt(0.01, "FT: learning rate (SalUn / Unlearn-Sparse release: 0.01)")
    finetune_optimizer: str = opt("sgd", "FT: sgd | adam (the release: SGD)")
    finetune_momentum: float = opt(0.9, "FT: SGD momentum (the release: 0.9)")
    finetune_batch_size: int = opt(256, "FT: batch over D_r (SalUn release arg_parser: 256)")
    finetune_weight_decay: float = opt(5e-4, "FT: weight decay (SalUn release arg_parser: 5e-4)")
    neggrad_epochs: int = opt(5, "NG: at most this many passes of gradient ascent over D_f (SalUn release GA: 5)")
    neggrad_lr: float = opt(1e-4, "NG: learning rate of the ascent (SalUn release GA: 1e-4)")
    neggrad_optimizer: str = opt("adam", "NG: sgd | adam (the release: SGD; Adam bounds each step, see neggrad.py)")
    neggrad_momentum: float = opt(0.9, "NG: SGD momentum when neggrad_optimizer=sgd (the release: 0.9)")
    neggrad_batch_size: int = opt(32, "NG: batch over D_f (CaMU's 32, with its Adam; the GA release's SGD: 256)")
    neggrad_stop_acc: float = opt(
        0.0, "NG, class removal: stop once a forget batch's accuracy (%) is at most this; negative: never")
    neggrad_random_stop_acc: float = opt(
        0.0, "NG, random removal: stop once the mean accuracy (%) of the last neggrad_random_stop_window forget "
        "batches is at most this; 0: the original's test accuracy; negative: never")
    neggrad_random_stop_window: int = opt(8, "NG, random removal: forget batches in the stop rule's running mean")
    neggrad_stop_every: int = opt(8, "NG: read the forget batches' accuracies every this many steps (one host sync)")
    neggrad_plus_epochs: int = opt(1, "NG+: passes over D_r, D_f cycled alongside (SCRUB release: 10; CPU budget)")
    neggrad_plus_lr: float = opt(1e-4, "NG+: learning rate (SCRUB release: 0.01 with SGD; see neggrad_plus.py)")
    neggrad_plus_optimizer: str = opt(
        "adam", "NG+: sgd | adam (SCRUB release: SGD, which never starts forgetting on MNIST)")
    neggrad_plus_momentum: float = opt(0.0, "NG+: SGD momentum when neggrad_plus_optimizer=sgd (SCRUB release: none)")
    neggrad_plus_alpha: float = opt(0.95, "NG+: loss = alpha * CE(D_r) - (1 - alpha) * CE(D_f) (SCRUB release: 0.95)")
    neggrad_plus_stop_every: int = opt(8, "NG+: read the forget batches' accuracies every this many steps")
    neggrad_plus_stop_acc: float = opt(0.0,
        "NG+, class removal: stop once a forget batch's accuracy (%) is at most this; negative: never")
    neggrad_plus_random_stop_acc: float = opt(
        0.0, "NG+, random removal: stop once the mean accuracy (%) of the last neggrad_plus_random_stop_window "
        "forget batches is at most this; 0: the original's test accuracy; negative: never")
    neggrad_plus_random_stop_window: int = opt(8, "NG+, random removal: forget batches in the stop's running mean")
    neggrad_plus_batch_size: int = opt(32, "NG+: batch over D_r (SCRUB release retain_bs: 32)")
    neggrad_plus_forget_batch_size: int = opt(64, "NG+: batch over D_f (SCRUB release forget_bs: 64)")
    random_label_epochs: int = opt(10, "RL: epochs, each a pass over D_f (random labels) then over D_r "
                                       "(SalUn release: 10)")
    random_label_lr: float = opt(0.01, "RL: learning rate (SalUn release RL: 0.01 to 0.013)")
    random_label_optimizer: str = opt("sgd", "RL: sgd | adam (the release: SGD)")
    random_label_momentum: float = opt(0.9, "RL: SGD momentum (the release: 0.9)")
    random_label_weight_decay: float = opt(5e-4, "RL: weight decay (SalUn release arg_parser: 5e-4)")
    random_label_batch_size: int = opt(256, "RL: batch of both passes (SalUn release arg_parser: 256)")
    # <<< block A
    # >>> block B: boundary_shrink, boundary_expand, unrolling_sgd, bad_teacher
    boundary_shrink_epochs: int = opt(10, "BS: passes over D_f relabelled to the nearest wrong class (release: 10)")
    boundary_shrink_lr: float = opt(1e-5, "BS: SGD learning rate (paper and release: 1e-5)")
    boundary_shrink_momentum: float = opt(0.9, "BS: SGD momentum (release: 0.9)")
    boundary_shrink_bound: float = opt(0.1, "BS: FGSM L-inf step in pixel units of [0, 1] (release: 0.1)")
    boundary_shrink_batch_size: int = opt(64, "BS: batch over D_f (release main.py: 64)")
    boundary_shrink_fallback: str = opt(
        "true_label", "BS: label where the FGSM step fails to leave the true class: true_label (the release) or "
        "runner_up (the runner-up class, an earlier rule of this project)")
    boundary_expand_epochs: int = opt(10, "BE: passes over D_f labelled as the shadow class (release: 10)")
    boundary_expand_lr: float = opt(1e-5, "BE: SGD learning rate (paper and release: 1e-5)")
    boundary_expand_momentum: float = opt(0.9, "BE: SGD momentum (release: 0.9)")
    boundary_expand_batch_size: int = opt(64, "BE: batch over D_f (release main.py: 64)")
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
    scrub_rewind: bool = opt(False, "SCRUB+R: return the epoch whose D_f error is closest to the final model's "
                                    "error on held-out test rows of D_f's classes")
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
    # >>> block E: tuning
    tuned: bool = opt(False, "layer TUNED_DIR/DATASET_SCENARIO/METHOD.yaml (written by tune.py) over the preset, "
                             "under the --key=value overrides; retrain has none and ignores it")
    tuned_dir: str = opt("configs/tuned", "folder of the tuned configs (relative: to the repository folder)")
    tuned_file: str = opt("", "filled when the config is read with tuned=true: the tuned file layered")
    tuned_sha256: str = opt("", "filled when the config is read with tuned=true: that file's SHA-256")
    # <<< block E
    # --- hardware
    device: str = opt("auto", "auto (CUDA when available), cpu or cuda")
    num_threads: int = opt(0, "CPU threads for torch (0: torch's default)")
    channels_last: bool = opt(True, "NHWC convolutions (rounding only; docs/speed.md)")
    fused_adam: bool = opt(True, "Adam as one fused kernel (rounding only)")
    compile: str = opt("off", "torch.compile of every model: off, default or reduce-overhead (CUDA graphs on a GPU)")
    bf16: str = opt("auto", "bfloat16 autocast: auto (on for a CPU with native bf16, off on CUDA), true or false")
    # >>> block G: CUDA path (determinism, relearning cost)
    deterministic: bool = opt(
        False, "deterministic kernels only, cuDNN autotuning and TF32 off (CUBLAS workspace set); "
        "results.json records what ran")
    relearn_eval_remain: int = opt(
        -1, "relearning records Acc(D_r) on this many seeded D_r rows (0: all of D_r; -1: all on MNIST / "
        "Fashion-MNIST, 5000 on CIFAR, where a full pass at 224 px costs more than the fine-tuning)")
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
    # >>> block H: concept_poison (concept inference + data poisoning; docs/concepts.md)
    concept_bank: str = opt("cav", "concept bank: cav (CAVs on the model's embeddings from pixel-scored examples, "
                                   "MNIST / Fashion-MNIST), nmf (concepts found by NMF of conv activations), clip (the "
                                   "paper's: concept words -> CLIP text embeddings; needs open_clip_torch and weights)")
    concept_examples: int = opt(5000, "training images (seeded) the PCBM head is fitted on, and the cav / nmf bank "
                                       "(clip's is text)")
    concept_quantile: float = opt(0.2, "cav / nmf: share of examples taken as positives (top) and negatives (bottom)")
    concept_nmf_components: int = opt(12, "nmf: number of concepts discovered")
    concept_clip_model: str = opt("RN50", "clip: open_clip architecture (the release: RN50)")
    concept_clip_pretrained: str = opt("openai", "clip: open_clip weights tag or a weights file ('' = random "
                                             "init, for tests only)")
    concept_words: str = opt("", "clip: file with one concept word per line (empty: the built-in list per dataset)")
    concept_words_sha256: str = opt("", "filled when a concept_poison config with concept_bank=clip is read: the "
                                         "SHA-256 of the word list the bank reads (file or built-in), so a stored "
                                         "cell names it")
    concept_pcbm_lam: float = opt(1e-5, "PCBM head: elastic-net strength (post-hoc-cbm's --lam; larger = sparser)")
    concept_poison_rank: str = opt("weight", "rank the forget class's concepts by PCBM weight (the release) or by "
                                             "ig (Integrated Gradients of the PCBM head, the paper's wording)")
    concept_poison_top_k: int = opt(5, "forget-class concepts searched for a donor (the release: 5)")
    concept_poison_top_m: int = opt(1, "localized mode: top concepts replaced by donor patches (the release: 1)")
    concept_poison_donor_rule: str = opt("confusion", "confusion (donor's own top-1 concept must be shared; "
                                                      "falls back to shared) or shared (argmax class)")
    concept_poison_donor: int = opt(-1, "donor class (-1: the donor rule picks it; the release's hand-picked cases "
                                        "set it, docs/concepts.md)")
    concept_poison_concept: str = opt("", "the forget class's concept to replace first, a bank concept name ('': "
                                          "the top-ranked; the release's cases name one, e.g. antler)")
    concept_poison_donor_concept: str = opt("", "the concept the donor's patch is cut at ('': the one the donor "
                                                "was chosen by; with concept_poison_donor, the donor's own top one)")
    concept_poison_labels: str = opt("targeted", "forget rows relabelled: targeted (all -> donor), random (uniform "
                                                 "over all classes, true one included) or keep")
    concept_poison_mode: str = opt("none", "forget images: none (label flip only, the paper's protocol), localized, "
                                           "center, random (donor patch there) or full (a donor image)")
    concept_poison_patch: int = opt(0, "patch side in stored pixels (0: as the release, 64/224 of the image side; "
                                      "variant release: center/random 96/224, full 160/224)")
    concept_poison_variant: str = opt("simple", "image geometry: simple (top-M: one donor patch at every peak; "
                                                "center/random: the concept patch; full: the donor image) or "
                                                "release (its crops, sizes, per-concept donors; docs/concepts.md)")
    concept_poison_locate: str = opt("ig", "where a concept peaks (localized patches, simple center/random's donor "
                                           "cut): ig (pixel Integrated Gradients of its margin, any bank), "
                                           "clip_window (CLIP on sliding 64/224 windows, clip bank), "
                                           "clip_window_release (those windows in the release's scrambled order); "
                                           "localized only, the forget image's place by the release's ablation "
                                           "locators: gradcam (Grad-CAM of the forget class, any bank) or "
                                           "pcbm_margin (windows scored by the class's PCBM weights, clip bank)")
    concept_poison_ig_steps: int = opt(16, "Integrated Gradients steps (ranking by ig; locating by ig)")
    concept_poison_layers: str = opt("last", "fine-tuned parameters: last (the release: fc only) or all")
    concept_poison_epochs: int = opt(20, "fine-tuning epochs over D_r + poisoned D_f (release: 20 CIFAR-10, 30 "
                                         "CIFAR-100)")
    concept_poison_lr: float = opt(1e-3, "SGD learning rate (the release: 1e-3)")
    concept_poison_momentum: float = opt(0.9, "SGD momentum (the release: 0.9)")
    concept_poison_batch_size: int = opt(32, "fine-tuning batch (the release: 32)")
    concept_poison_integrity: str = opt("full", "training data used: full, or half of each class, the forget "
                                                "class's too (the release's 'integrity' option)")
    concept_retention_quantile: float = opt(0.9, "shared_concept_retention: other-class test rows above this "
                                                 "quantile of forget-concept expression")
    # <<< block H

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset]

    @property
    def model_name(self) -> str:
        if self.model != "auto":
            return self.model
        return "cnn" if self.dataset in ("mnist", "fashion_mnist") else "resnet18"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DEFAULTS = Config().to_dict()


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


# Generic names a user tries first, and the keys they mean here (by spelling, 'lr' is closest to three
# baselines' learning rates and 'epochs' to the shadow models' epochs).
MEANT = {"lr": ("train_lr", "out_lr", "rep_lr"), "learning_rate": ("train_lr", "out_lr", "rep_lr"),
         "epochs": ("train_epochs", "unlearn_epochs"), "epoch": ("train_epochs", "unlearn_epochs"),
         "num_epochs": ("train_epochs", "unlearn_epochs"),
         "n_epochs": ("train_epochs", "unlearn_epochs")}


def unknown_key_message(key: str, known: Collection[str], source: str = "", what: str = "config key") -> str:
    """One line naming the closest known keys; the full list is one ``--help`` away."""
    where = f" (in {source})" if source else ""
    close = [k for k in MEANT.get(key, ()) if k in known] or difflib.get_close_matches(key, list(known), n=3,
                                                                                       cutoff=0.6)
    if not close:  # a prefix or a part of a key: 'scrub' -> every scrub_* key, up to three
        close = sorted(k for k in known if key and (k.startswith(key) or key in k))[:3]
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see --help for every key"
    return f"unknown {what} {key!r}{where}; {hint}"


def check_keys(args: list[str], flags: Collection[str]) -> None:
    """ConfigError for a ``--key=value`` whose key is neither a config key nor one of the command's own
    ``flags``, naming the closest of both (``tune.py --trial=2`` was offered ``train_lr``, not ``trials``)."""
    types = _field_types()
    for arg in args:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else None
        # the command took its valued flags already: one left here is a bare flag given a value (--dry_run
        # too, the spelling the bare flag also accepts)
        bare = key if key in flags or key is None else key.replace("_", "-")
        if bare in flags and bare not in types:
            raise ConfigError(f"--{key}: takes no value (give --{bare} alone)")
        if key is not None and key not in types:
            raise ConfigError(unknown_key_message(key, [*types, *(f for f in flags if f not in types)],
                                                  what="flag or config key"))


def apply_overrides(cfg: Config, values: dict[str, Any], source: str = "") -> Config:
    """Set the given keys on a copy of ``cfg``; unknown keys and wrong types raise ConfigError."""
    types = _field_types()
    updates = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(unknown_key_message(key, types, source))
        updates[key] = _coerce(key, value, types[key])
    return dataclasses.replace(cfg, **updates)


def unwritable_folder(path: str) -> str:
    """Why results could not be written under ``path`` ('' when they could), checked without creating it.

    Every run writes under out_dir only after the data is loaded (the cache lock, then the
    original model, minutes of training later the results): a file in the way or a folder
    without write access should stop the run at once, as a config error, not as a traceback.
    """
    folder = Path(path).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            return f"{folder} is a broken link"
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no write access to {folder}"
    return ""


def validate(cfg: Config) -> Config:
    """Reject impossible values before any work; fill derived defaults (run_name)."""
    if cfg.dataset not in NUM_CLASSES:
        raise ConfigError(f"dataset: {cfg.dataset!r} is not one of {', '.join(NUM_CLASSES)}")
    if cfg.scenario not in SCENARIOS:
        raise ConfigError(f"scenario: {cfg.scenario!r} is not one of {', '.join(SCENARIOS)}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"device: {cfg.device!r} is not one of {', '.join(DEVICES)}")
    for key, names in _CHOICES.items():
        value = getattr(cfg, key)
        for name in value if isinstance(value, list) else [value]:
            if name not in names:
                raise ConfigError(f"{key}: {name!r} is not one of {', '.join(sorted(names))}")
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
    positive = ("forget_repeat", "train_epochs", "mia_train_size", "relearn_every",
                "neggrad_stop_every", "neggrad_plus_stop_every", "neggrad_random_stop_window",
                "neggrad_plus_random_stop_window")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 1")
    if cfg.boundary_shrink_fallback not in ("true_label", "runner_up"):
        raise ConfigError(f"boundary_shrink_fallback: {cfg.boundary_shrink_fallback!r} is not one of true_label, "
                          "runner_up")
    if cfg.relearn_eval_remain < -1:
        raise ConfigError(f"relearn_eval_remain: {cfg.relearn_eval_remain} must be -1 (per dataset), 0 (all) or more")
    for key in ("train_limit", "test_limit", "num_threads", "train_seed", "relearn_lr"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 0")
    weights = ("camu_rep_remain_weight", "camu_rep_forget_weight", "camu_out_remain_weight", "camu_out_forget_weight")
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
    problem = unwritable_folder(cfg.out_dir)
    if problem:
        raise ConfigError(f"out_dir: {cfg.out_dir!r}: {problem}")
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
    # tuning (issue 12): the tuned file's name and hash come from parse_args, never from the user
    if not cfg.tuned_dir:
        raise ConfigError("tuned_dir: must not be empty")
    if (cfg.tuned_file or cfg.tuned_sha256) and not cfg.tuned:
        raise ConfigError("tuned_file, tuned_sha256: filled when reading a config with tuned=true; do not set them")
    # concept-level unlearning (concept_poison)
    if cfg.model not in MODEL_NAMES:
        raise ConfigError(f"model: {cfg.model!r} is not one of {', '.join(MODEL_NAMES)}")
    if cfg.model == "cnn" and cfg.dataset.startswith("cifar") or cfg.model.startswith("resnet") and \
            cfg.dataset in ("mnist", "fashion_mnist"):
        raise ConfigError(f"model: {cfg.model} does not take {cfg.dataset}'s images")
    if cfg.pretrained and not cfg.model_name.startswith("resnet"):
        raise ConfigError("pretrained: ImageNet weights exist for resnet18 / resnet50 only")
    if "ulira" in cfg.mia_attacks:  # else refused inside the evaluation, after the original and the unlearning
        if cfg.model_name != "cnn":
            raise ConfigError(f"mia_attacks: ulira trains shadow copies of the small CNN (MNIST, Fashion-MNIST), "
                              f"not of {cfg.model_name}")
        if cfg.ulira_shadows < 2:
            raise ConfigError(f"ulira_shadows: {cfg.ulira_shadows} must be at least 2 (one 'in' and one 'out' each)")
    for key, names in CONCEPT_CHOICES.items():
        if getattr(cfg, key) not in names:
            raise ConfigError(f"{key}: {getattr(cfg, key)!r} is not one of {', '.join(names)}")
    if cfg.method == "concept_poison":
        _check_concept_method(cfg)
    for key in ("concept_examples", "concept_nmf_components", "concept_poison_top_k", "concept_poison_top_m",
                "concept_poison_ig_steps", "concept_poison_epochs"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must be at least 1")
    for key in ("concept_quantile", "concept_retention_quantile"):
        if not 0.0 < getattr(cfg, key) < 1.0 or key == "concept_quantile" and cfg.concept_quantile > 0.5:
            raise ConfigError(f"{key}: {getattr(cfg, key)} must lie in (0, {0.5 if key == 'concept_quantile' else 1})")
    if not cfg.concept_pcbm_lam > 0:
        raise ConfigError(f"concept_pcbm_lam: {cfg.concept_pcbm_lam} must be positive")
    if not 0 <= cfg.concept_poison_patch <= IMAGE_SIDE[cfg.dataset]:
        raise ConfigError(f"concept_poison_patch: {cfg.concept_poison_patch} must lie in [0, "
                          f"{IMAGE_SIDE[cfg.dataset]}] (the {cfg.dataset} image side, stored pixels)")
    _check_key_kinds(cfg)
    if cfg.scenario == "random" and cfg.forget_fraction * (cfg.forget_repeat + 1) > 1:
        raise ConfigError(f"forget_fraction: {cfg.forget_fraction} x (forget_repeat {cfg.forget_repeat} + 1) must "
                          "be at most 1: D_s draws forget_repeat remaining samples per forget sample")
    if 0 < cfg.test_limit < 2:
        raise ConfigError(f"test_limit: {cfg.test_limit}: the MIAs fit on half the test rows and test on the "
                          "other half, so at least 2 (0: all)")
    run_name = cfg.run_name or f"{cfg.dataset}-{cfg.scenario}-{cfg.method}"
    if "/" in run_name or run_name in (".", ".."):
        raise ConfigError(f"run_name: {run_name!r} must be a plain folder name")
    return dataclasses.replace(cfg, run_name=run_name, bf16=switch[cfg.bf16.lower()])


# Keys of a few kinds (batch sizes, epochs, learning rates, momenta, weight decays, optimisers: the
# baselines' and the shared ones), checked by name here, before any work; the methods check their
# own again when they run (they can be called directly), but then after the original model, with a
# traceback. Each kind: the values it applies to, the test a value must pass, the message.
_NUMBER = (int, float)
_KEY_KINDS = (("batch_size", _NUMBER, lambda v: v >= 1, "must be at least 1"),
              ("_epochs", _NUMBER, lambda v: v >= 0, "must be at least 0"),
              ("_lr", _NUMBER, lambda v: v > 0, "must be greater than 0"),
              ("_momentum", _NUMBER, lambda v: 0 <= v < 1, "must lie in [0, 1)"),
              ("weight_decay", _NUMBER, lambda v: v >= 0, "must be at least 0"),
              ("_optimizer", str, lambda v: v in ("adam", "sgd"), "is not one of adam, sgd"))
_KEY_RANGES = {"bad_teacher_retain_fraction": (lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
               "bad_teacher_temperature": (lambda v: v > 0, "must be greater than 0"),
               "boundary_shrink_bound": (lambda v: v > 0, "must be greater than 0"),
               "neggrad_plus_alpha": (lambda v: 0 <= v <= 1, "must lie in [0, 1]"),
               "scrub_msteps": (lambda v: v >= 0, "must be at least 0"),
               "scrub_kd_t": (lambda v: v > 0, "must be greater than 0"),
               "salun_threshold": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
               "ulira_epochs": (lambda v: v >= 1, "must be at least 1"),
               **{f"{m}_{kind}stop_acc": (lambda v: v <= 100, "must be at most 100 (a percentage; negative: off)")
                  for m in ("neggrad", "neggrad_plus") for kind in ("", "random_")}}


def _check_concept_method(cfg: Config) -> None:
    """The concept method's settings that contradict each other or would do nothing (ranges of its keys are
    checked for every method, as the other methods' are)."""
    if cfg.scenario != "class":
        raise ConfigError("method: concept_poison unlearns a class; use scenario=class")
    if cfg.concept_bank == "cav" and cfg.dataset.startswith("cifar"):
        raise ConfigError("concept_bank: cav scores its concept examples from MNIST-style pixels; on "
                          f"{cfg.dataset} use clip (the paper's) or nmf")
    donor = cfg.concept_poison_donor
    if donor == cfg.forget_class or not -1 <= donor < cfg.num_classes:
        raise ConfigError(f"concept_poison_donor: {donor} must be -1 (the donor rule) or a class of {cfg.dataset} "
                          f"(0-{cfg.num_classes - 1}) other than forget_class {cfg.forget_class}")
    if donor >= 0 and cfg.concept_poison_donor_rule != "confusion":
        raise ConfigError(f"concept_poison_donor_rule: {cfg.concept_poison_donor_rule} would pick nothing: "
                          f"concept_poison_donor {donor} names the donor")
    mode, variant = cfg.concept_poison_mode, cfg.concept_poison_variant
    if not (mode == "localized" or variant == "simple" and mode in ("center", "random")):  # nothing is located
        only = "only concept_poison_mode=localized, or center / random in the simple variant,"
        here = f"(mode here: {mode}, variant {variant})"
        if cfg.concept_poison_donor_concept:
            raise ConfigError(f"concept_poison_donor_concept: {cfg.concept_poison_donor_concept!r} would cut "
                              f"nothing: {only} cuts a donor patch at a concept {here}")
        if cfg.concept_poison_locate != "ig":
            raise ConfigError(f"concept_poison_locate: {cfg.concept_poison_locate} would locate nothing: {only} "
                              f"looks for a concept {here}")
    by_class = cfg.concept_poison_locate in CLASS_LOCATORS
    if by_class and mode != "localized":
        raise ConfigError(f"concept_poison_locate: {cfg.concept_poison_locate} places the patch on the forget "
                          f"image, which only concept_poison_mode=localized does (mode here: {mode})")
    if by_class and variant == "simple" and cfg.concept_poison_top_m > 1:
        raise ConfigError(f"concept_poison_top_m: {cfg.concept_poison_top_m} patches would all go to one place: "
                          f"{cfg.concept_poison_locate} places them by the forget class, not by concept, on the "
                          "clean image in the simple variant (the release variant places each on the image as "
                          "patched so far)")
    if cfg.concept_poison_locate not in ("ig", "gradcam") and cfg.concept_bank != "clip":
        raise ConfigError(f"concept_poison_locate: {cfg.concept_poison_locate} compares CLIP embeddings of windows "
                          f"with a concept word's text vector, so it needs concept_bank=clip (not "
                          f"{cfg.concept_bank}); or use ig")


def _check_key_kinds(cfg: Config) -> None:
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):  # nan passed every range check (nan < x is False)
            raise ConfigError(f"{f.name}: {value!r} is not a finite number")
        if isinstance(value, bool) or f.name == "relearn_lr":  # relearn_lr: 0 picks the dataset's rate
            continue
        if f.name in _KEY_RANGES:
            rule = (_NUMBER, *_KEY_RANGES[f.name])
        else:
            rule = next((r[1:] for r in _KEY_KINDS if f.name.endswith(r[0]) and isinstance(value, r[1])), None)
        if rule is not None and isinstance(value, rule[0]) and not rule[1](value):
            raise ConfigError(f"{f.name}: {value!r} {rule[2]}")


# Keys that say where or how fast results are computed, or that the sweep handles itself (``tuned``:
# the tuned file's hash; ``relearn``: a cell without a series is computed again), not what they hold.
WHERE_KEYS = ("seeds", "run_name", "out_dir", "data_root", "download", "verify_data", "device", "num_threads",
              "channels_last", "fused_adam", "compile", "bf16", "deterministic", "eval_batch_size", "tuned",
              "tuned_dir", "tuned_file", "tuned_sha256", "relearn", "compare_retrain", "lock_timeout_min",
              "slurm_partition", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem_gb", "slurm_timeout_min",
              "slurm_array_parallelism", "slurm_additional", "submitit_cluster")
CAMU_KEYS = ("unlearn_epochs", "rep_lr", "out_lr")  # CaMU's own keys without the camu_ prefix


def recorded(stored: dict[str, Any], key: str) -> Any:
    """A stored config's (a cell's, a study's scope) value of ``key``. A key it lacks was added since, and keys
    are added with the default that does what the code did before: the stored run used that default."""
    return stored[key] if key in stored else _DEFAULTS.get(key)


FILLED_HASHES = ("concept_words_sha256",)  # filled by parse_args from a file's content, not set by the user
# every key parse_args fills from a file it reads, with the setting that makes it read that file
FILLED_BY_READING = ((("tuned_file", "tuned_sha256"), "tuned=true"), (FILLED_HASHES, "concept_bank=clip"))


def unknown_hash(stored: dict[str, Any], current: dict[str, Any], key: str) -> bool:
    """``key`` is a filled hash that one side cannot say: ``stored`` predates it (its default, '', would not be
    what that run read) or ``current`` could not read its file (the run's preflight names the file). Such a
    hash is not compared; every other key is."""
    return key in FILLED_HASHES and (key not in stored or not current.get(key))


def differs(stored: dict[str, Any], current: dict[str, Any], key: str) -> bool:
    """Whether ``key``'s ``recorded`` value in ``stored`` is not ``current``'s (a hash one side cannot say aside)."""
    return recorded(stored, key) != current.get(key) and not unknown_hash(stored, current, key)


def shown_changes(stored: dict[str, Any], current: dict[str, Any], keys: Collection[str] | None = None) -> list[str]:
    """``key stored -> current`` for each key of ``keys`` (default: the stored ones) with another value: what a
    refusal to mix a stored cell or study with other settings names.

    A key the stored config lacks was added since; keys are added with the default that does what
    the code did before, so the run was made with that default (a cell from before
    ``concept_poison_variant`` is the simple variant's). A file key compares the places named: a
    SLURM launch names the words file by its absolute path.
    """
    def absolute(path: str) -> str:
        return os.path.abspath(path) if path else path

    def same(k: str) -> bool:
        if k == "concept_words" and isinstance(recorded(stored, k), str) and isinstance(current[k], str):
            return absolute(recorded(stored, k)) == absolute(current[k])
        return not differs(stored, current, k)
    compared = [k for k in sorted(stored if keys is None else keys) if k in current]
    return [f"{k} {recorded(stored, k)!r}{'' if k in stored else ' (not recorded: the default)'} -> {current[k]!r}"
            for k in compared if not same(k)]


def changed_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys of either config, sorted, whose ``recorded`` value in ``stored`` is not ``current``'s."""
    return sorted(k for k in set(stored) | set(current) if differs(stored, current, k))


def key_owner(key: str) -> str | None:
    """The method whose unlearning alone reads ``key`` (its prefix; CaMU's keys; the concept method's
    ``concept_*``), or None for a key every method of a scenario shares (data, split, original, evaluation)."""
    if key in CAMU_KEYS or key.startswith("camu_"):
        return "camu"
    if key.startswith("concept_"):
        return "concept_poison"
    if "method" not in _CHOICES:
        import unlearn  # noqa: F401  (registers the method names; imported here, not at the top: a cycle)
    owners = [m for m in _CHOICES["method"] if key.startswith(f"{m}_")]
    return max(owners, key=len) if owners else None  # neggrad_plus_lr: neggrad_plus, not neggrad


def scenario_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The keys of a stored or current config (``Config.to_dict``) that every method's cells of one
    scenario must share for their rows to be compared: not a method's own, not a where-key."""
    return {k: v for k, v in values.items() if k not in WHERE_KEYS and k != "method" and key_owner(k) is None}


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A preset or tuned file's keys; a file that is missing, a folder, unreadable or not a YAML mapping
    is a ConfigError naming it."""
    return _yaml_mapping(_file_bytes(path, what), path, what)


def _file_bytes(path: Path, what: str) -> bytes:
    if path.is_dir():
        raise ConfigError(f"{what} file {str(path)!r} is a folder; give a .yaml file (e.g. configs/mnist_class.yaml)")
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read as text ({exc})") from None


def _yaml_mapping(data: bytes, path: Path, what: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(data.decode("utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: cannot be read as text ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of config keys")
    return values


TUNED_FORBIDDEN = ("dataset", "scenario", "method", "tuned", "tuned_dir", "tuned_file", "tuned_sha256",
                   "concept_words_sha256")


def tuned_path(cfg: Config) -> Path:
    """Where tune.py writes, and ``tuned=true`` reads, the tuned keys of cfg's dataset, scenario and method."""
    root = Path(cfg.tuned_dir)
    if not root.is_absolute():
        root = Path(__file__).resolve().parent / root
    return root / f"{cfg.dataset}_{cfg.scenario}" / f"{cfg.method}.yaml"


def scenario_preset(cfg: Config) -> Path:
    """``cfg``'s scenario preset, relative to the repository folder (it may not exist: no CIFAR concept preset
    for every dataset); the concept method has presets of its own."""
    kind = "concept" if cfg.method == "concept_poison" else cfg.scenario
    return Path("configs") / f"{cfg.dataset}_{kind}.yaml"


def tune_command(cfg: Config) -> str:
    """The tune.py command that writes ``cfg``'s tuned file: from the scenario's preset (a study queues the
    settings it starts from as its first trial, so they must be the preset's), into ``cfg``'s tuned_dir."""
    preset = scenario_preset(cfg)
    where = (f"{preset} --method={cfg.method}" if (Path(__file__).resolve().parent / preset).is_file()
             else f"--dataset={cfg.dataset} --scenario={cfg.scenario} --method={cfg.method}")
    return f"python tune.py {where}" + (f" --tuned_dir={cfg.tuned_dir}" if cfg.tuned_dir != Config.tuned_dir else "")


TUNED_AGAINST = ("dataset", "scenario", "forget_class", "forget_fraction", "forget_repeat", "train_limit",
                 "test_limit", "model", "pretrained", "train_epochs", "train_lr", "batch_size", "weight_decay",
                 "train_seed")  # the data, the split and the original model a study tuned against


def tuned_against(cfg: Config) -> dict[str, Any]:
    """``TUNED_AGAINST``'s values as they act: tune.py writes them into the tuned file (``# tuned on: {...}``).
    The model as resolved (``auto`` is the dataset's); no forget_fraction in class removal (unused there)."""
    values = {k: getattr(cfg, k) for k in TUNED_AGAINST}
    values["model"] = cfg.model_name
    if cfg.scenario == "class":
        del values["forget_fraction"]
    return values


UNRECORDED_TUNED_ON = "has no (readable) '# tuned on:' line, so counts as tuned on its scenario preset's data"


def tuned_on_warning(cfg: Config) -> str:
    """One warning line when ``cfg`` lays a tuned file over other data, split or original model than its
    study ran on ('' when the same; see ``tuned_on_differences`` for files that record none)."""
    if not cfg.tuned_file:
        return ""
    path = Path(cfg.tuned_file)
    try:
        text = (path if path.is_absolute() else HERE / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    said, other = tuned_on_mismatch(text, cfg)
    return f"warning: {cfg.tuned_file} {said}: {', '.join(other)}" if other else ""


def tuned_on_mismatch(text: str, cfg: Config) -> tuple[str, list[str]]:
    """What a tuned file's text was tuned on, as a warning or refusal says it, and ``tuned_on_differences``."""
    said = "was tuned on other data or another original" if recorded_tuned_on(text) else UNRECORDED_TUNED_ON
    return said, tuned_on_differences(text, cfg)


def recorded_tuned_on(text: str) -> dict[str, Any]:
    """A tuned file's ``# tuned on:`` values ({} without the line, or with one that does not read)."""
    return _json_mapping(provenance(text, "tuned on"))


@functools.cache
def _preset_tuned_against(path: str, mtime_ns: int | None, dataset: str,
                          scenario: str) -> tuple[tuple[str, Any], ...]:
    """``tuned_against`` of a scenario preset as it stands (``mtime_ns``; None: no such preset, the dataset and
    scenario defaults), parsed once per process: a sweep asks for it once per method of the scenario."""
    preset = parse_args([path]) if mtime_ns is not None else Config(dataset=dataset, scenario=scenario)
    return tuple(tuned_against(preset).items())


def tuned_on_differences(text: str, cfg: Config) -> list[str]:
    """``KEY=recorded (here current)`` for each ``TUNED_AGAINST`` value a tuned file's text records otherwise
    than ``cfg`` has it. A file without a readable ``# tuned on:`` line (every committed one: they predate it,
    and adding it would change the hash their tuned cells record) counts as tuned on ``cfg``'s scenario preset
    without overrides (``scenario_preset``), as the committed studies ran; the dataset and scenario defaults
    where there is no such preset."""
    theirs = recorded_tuned_on(text)
    if not theirs:
        path = HERE / scenario_preset(cfg)
        mtime = path.stat().st_mtime_ns if path.is_file() else None
        theirs = dict(_preset_tuned_against(str(path), mtime, cfg.dataset, cfg.scenario))
    mine = tuned_against(cfg)
    return [f"{k}={theirs[k]!r} (here {mine[k]!r})" for k in mine if k in theirs and theirs[k] != mine[k]]


def provenance(text: str, name: str) -> str | None:
    """The value of a tuned file's ``# NAME: value`` provenance line (the first such line); None without one."""
    found = re.search(rf"^# {re.escape(name)}: (.*)$", text, flags=re.MULTILINE)
    return found.group(1).strip() if found else None


def _json_mapping(value: str | None) -> dict[str, Any]:
    import json

    try:
        loaded = json.loads(value) if value else {}
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _layer_tuned(cfg: Config, probe: Config) -> tuple[Config, tuple[int, ...], dict[str, Any]]:
    """``cfg`` (defaults + preset) with the tuned file of ``probe`` (preset + overrides) laid over it, the
    tune seeds the file names and the keys it sets. One read gives the keys, the hash and the seeds: a file
    tune.py replaces meanwhile cannot pair one version's keys with another's hash."""
    if probe.method == "retrain":  # nothing to tune: the oracle is the same model either way
        return cfg, (), {}
    path = tuned_path(probe)
    if not path.is_file():
        raise ConfigError(f"tuned=true: tuned file {str(path)!r} does not exist "
                          f"(write it with: {tune_command(probe)})")
    data = _file_bytes(path, "tuned")
    values = _yaml_mapping(data, path, "tuned")
    if not values:
        raise ConfigError(f"tuned file {path} sets no key (empty or truncated): write it again with tune.py")
    bad = [k for k in values if k in TUNED_FORBIDDEN]
    if bad:
        raise ConfigError(f"tuned file {path}: may not set {', '.join(bad)}")
    cfg = apply_overrides(cfg, values, source=str(path))
    digest = hashlib.sha256(data).hexdigest()
    return (dataclasses.replace(cfg, tuned_file=_shown_path(path), tuned_sha256=digest),
            tune_seeds_in(data.decode()), values)


def _shown_path(path: Path) -> str:
    """A file inside the repository as a path relative to it (committed cells stay valid in any clone)."""
    try:
        return str(path.relative_to(Path(__file__).resolve().parent))
    except ValueError:
        return str(path)


def parse_args(argv: list[str], base: Config | None = None, echo: bool = False) -> Config:
    """``[PRESET.yaml] [--key=value ...]`` -> a validated Config.

    Layers, last wins: defaults, the preset, the tuned file (``tuned=true``; found from the
    dataset, scenario and method that preset and overrides select), the overrides.
    With ``echo`` each layer is printed once the result is valid, so the log shows what changed (and a
    config error is its one line alone).
    """
    cfg, shown = parse_layers(argv, base)
    if echo:
        print_layers(cfg, shown)
    return cfg


def print_layers(cfg: Config, shown: list[str]) -> None:
    """The layers ``parse_layers`` read, one line each, and the warning for a file tuned on other data. A command
    with checks of its own after the config's (tune.py) prints them once those hold too, so that a refused
    command is its error line alone."""
    for line in shown:
        print(line)
    if warning := tuned_on_warning(cfg):  # tuned on other data: allowed, never unsaid
        print(warning, file=sys.stderr)


def parse_layers(argv: list[str], base: Config | None = None) -> tuple[Config, list[str]]:
    """``parse_args`` without the printing: the validated Config and one line per layer (preset, tuned file,
    each override) for ``print_layers``."""
    cfg = base if base is not None else Config()
    args, shown = list(argv), []
    if args and args[0].startswith("-") and not args[0].startswith("--"):
        raise ConfigError(f"argument {args[0]!r}: expected --key=value (two dashes) or a preset file")
    if args and not args[0].startswith("--"):
        if "=" in args[0] and not Path(args[0]).exists():  # `seeds=0`: an override without its dashes
            raise ConfigError(f"argument {args[0]!r}: expected --key=value (two dashes: --{args[0]}) or a preset file")
        preset = Path(args.pop(0))
        values = read_yaml(preset, "preset")
        cfg = apply_overrides(cfg, values, source=str(preset))
        shown.append(f"preset {preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    overrides = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected --key=value (a preset file may only come first)")
        key, value = arg[2:].split("=", 1)
        overrides[key] = value
    probe = apply_overrides(cfg, overrides)
    for keys, when in FILLED_BY_READING:
        if any(getattr(probe, key) for key in keys):
            raise ConfigError(f"{', '.join(keys)}: filled when reading a config with {when}; "
                              f"do not set {'them' if len(keys) > 1 else 'it'}")
    tune_seeds: tuple[int, ...] = ()
    if probe.tuned:
        cfg, tune_seeds, tuned_values = _layer_tuned(cfg, probe)
        if cfg.tuned_file:  # the keys as the preset line shows its own
            shown.append(f"tuned {cfg.tuned_file} (sha256 {cfg.tuned_sha256[:12]}...): "
                         + ", ".join(f"{k}={v}" for k, v in tuned_values.items()))
    cfg = apply_overrides(cfg, overrides)
    shown += [f"override {key} = {getattr(cfg, key)!r}" for key in overrides]
    if cfg.tuned_file:
        overlap = sorted(set(cfg.seeds) & set(tune_seeds))
        if overlap:
            were = "was a tune seed" if len(overlap) == 1 else "were tune seeds"
            raise ConfigError(f"seeds: {','.join(map(str, overlap))} {were} of {cfg.tuned_file}; report on seeds "
                              "its study did not see")
    return validate(dataclasses.replace(cfg, concept_words_sha256=words_sha256(cfg))), shown


def words_sha256(cfg: Config) -> str:
    """The SHA-256 of the concept words the clip bank of ``cfg`` will read, one per line as read (comments,
    blanks and repeats dropped); '' for another bank or method, or when the list cannot be read (the method's
    preflight then stops the run in one line). A stored cell keeps it, so an edited words file, or a
    built-in list changed since, is a changed setting of the cell and not a silent reuse."""
    if cfg.method != "concept_poison" or cfg.concept_bank != "clip":
        return ""
    from concepts import ConceptError
    from concepts.words import concept_words  # no torch: parsing stays fast

    try:
        words = concept_words(cfg.dataset, cfg.concept_words)
    except ConceptError:
        return ""
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def tune_seeds_in(text: str) -> tuple[int, ...]:
    """The tune seeds a tuned file's provenance names (``# tune seeds: 100,101 ...``); none if it names none."""
    found = re.match(r"[\d,]+", provenance(text, "tune seeds") or "")
    return tuple(int(s) for s in found.group(0).split(",") if s) if found else ()


HERE = Path(__file__).resolve().parent


def key_sections() -> list[tuple[str, list[dataclasses.Field]]]:
    """The config keys grouped under the section comments of the ``Config`` class, in order."""
    import inspect

    fields = {f.name: f for f in dataclasses.fields(Config)}
    sections: list[tuple[str, list[dataclasses.Field]]] = [("", [])]
    for line in inspect.getsource(Config).splitlines():
        text = line.strip()
        if text.startswith("# ---"):
            sections.append((text[5:].strip(), []))
        elif text.startswith("# >>>"):
            sections.append((text.split(":", 1)[-1].strip(), []))
        match = re.match(r"(\w+): .+= opt\(", text)
        if match and match.group(1) in fields:
            sections[-1][1].append(fields.pop(match.group(1)))
    if fields:  # declared without a section comment
        sections.append(("other", list(fields.values())))
    return [(title, keys) for title, keys in sections if keys]


def _default_text(f: dataclasses.Field) -> str:
    if f.name == "data_root":
        return "$CAMU_DATA_ROOT or datasets"
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value == "" else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def key_table() -> str:
    """The Markdown table of every key (docs/config.md holds it; a test keeps the two equal)."""
    lines = []
    for title, keys in key_sections():
        lines += [f"**{title}**" if title else "", "", "| key | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{f.name}` | `{_default_text(f)}` | {_cell(f.metadata.get('help', ''))} |" for f in keys]
        lines.append("")
    return "\n".join(lines).strip() + "\n"


def presets() -> list[tuple[str, str]]:
    """``(path, first comment line)`` of every preset in ``configs/`` (tuned ones excluded)."""
    out = []
    for path in sorted((HERE / "configs").glob("*.yaml")):
        first = path.read_text().splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        out.append((f"configs/{path.name}", about))
    return out


def help_text(usage: str, flags: list[tuple[str, str]] | None = None, with_presets: bool = True,
              defaults: dict[str, str] | None = None) -> str:
    """``--help`` of an entry point: its usage and own flags, the presets, every config key. ``defaults``: the
    keys whose default the entry point sets otherwise than main.py (reproduce.py's out_dir and relearn), shown
    as it runs them: the key list showed main.py's beside the flags' own."""
    defaults = defaults or {}
    out = [usage.strip(), ""]
    if flags:
        out.append("flags:")
        width = max(len(f) for f, _ in flags)
        out += [f"  {f.ljust(width)}  {about}" for f, about in flags]
        out.append("")
    if with_presets:
        out.append("presets (an optional first argument):")
        out += [f"  {path}  {about}" for path, about in presets()]
        out.append("")
    out.append("config keys (--key=value; lists comma separated, booleans true/false):")
    for title, fields in key_sections():
        out.append(f"  [{title}]")
        for f in fields:
            out.append(f"  --{f.name}={defaults.get(f.name, _default_text(f))}")
            out.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(out) + "\n"


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


MAIN_USAGE = """usage: python main.py [PRESET.yaml] [--key=value ...]

Trains (or loads) the original model, then for each seed splits, unlearns with --method,
evaluates and writes OUT_DIR/RUN_NAME/results.json. Docs: README.md and docs/."""


def load_config(argv: list[str] | None = None, usage: str = MAIN_USAGE) -> Config:
    """Parse the command line; on a bad setting print one line and exit with status 2.

    ``-h`` / ``--help`` prints ``usage``, the presets and every key, and exits with status 0.
    """
    args = sys.argv[1:] if argv is None else argv
    if wants_help(args):
        print(help_text(usage))
        raise SystemExit(0)
    try:
        return parse_args(args, echo=True)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":  # the key table of docs/config.md
    print(key_table(), end="")
