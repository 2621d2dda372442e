"""Config resolution: defaults, presets, overrides, coercion and every error path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import main
from config import Config, ConfigError, key_table, parse_args, wants_help

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# the release's hyperparameter table (docs/method.md): (scenario family) -> (epochs, IMPAIR_LR = out_lr, KL_LR = rep_lr)
TABLE = {
    ("mnist", "random"): (10, 5e-4, 4e-4),
    ("mnist", "class"): (2, 1e-3, 4e-4),
    ("cifar", "random"): (10, 1e-4, 1e-5),
    ("cifar", "class"): (2, 5e-5, 1e-5),
}
PRESETS = [f"{d}_{s}" for d in ("mnist", "fashion_mnist", "cifar10", "cifar100") for s in ("class", "random")]
CONCEPT_PRESETS = [f"{d}_concept" for d in ("mnist", "fashion_mnist", "cifar10", "cifar100")]


def test_defaults_are_the_release_mnist_class0_removal():
    cfg = parse_args([])
    assert cfg.dataset == "mnist"
    assert cfg.scenario == "class"
    assert cfg.forget_class == 0
    assert cfg.unlearn_epochs == 2
    assert cfg.out_lr == pytest.approx(1e-3)
    assert cfg.rep_lr == pytest.approx(4e-4)
    assert cfg.batch_size == 32
    assert cfg.weight_decay == pytest.approx(1e-4)
    assert cfg.train_epochs == 20
    assert cfg.train_lr == pytest.approx(1e-3)
    assert cfg.forget_repeat == 1
    assert cfg.method == "camu"


def test_preset_then_overrides_win():
    preset = str(CONFIGS / "mnist_random.yaml")
    cfg = parse_args([preset])
    assert (cfg.scenario, cfg.unlearn_epochs, cfg.out_lr) == ("random", 10, pytest.approx(5e-4))
    cfg = parse_args([preset, "--unlearn_epochs=3", "--out_lr=0.25", "--scenario=class"])
    assert cfg.unlearn_epochs == 3
    assert cfg.out_lr == pytest.approx(0.25)
    assert cfg.scenario == "class"
    assert cfg.rep_lr == pytest.approx(4e-4)  # untouched keys keep the preset's value


def test_later_override_of_the_same_key_wins():
    assert parse_args(["--unlearn_epochs=3", "--unlearn_epochs=5"]).unlearn_epochs == 5


def test_seeds_list():
    assert parse_args(["--seeds=0,1,2"]).seeds == [0, 1, 2]
    assert parse_args(["--seeds=7"]).seeds == [7]
    assert parse_args(["--seeds= 3, 4"]).seeds == [3, 4]


def test_int_for_float_field_is_coerced(tmp_path):
    cfg = parse_args(["--out_lr=1"])
    assert isinstance(cfg.out_lr, float) and cfg.out_lr == 1.0
    preset = tmp_path / "p.yaml"
    preset.write_text("rep_lr: 2\ntrain_lr: 1e-3\n")  # YAML reads 1e-3 (no dot) as a string
    cfg = parse_args([str(preset)])
    assert isinstance(cfg.rep_lr, float) and cfg.rep_lr == 2.0
    assert isinstance(cfg.train_lr, float) and cfg.train_lr == pytest.approx(1e-3)


@pytest.mark.parametrize("text, expected", [("true", True), ("True", True), ("1", True), ("yes", True),
                                            ("on", True), ("false", False), ("FALSE", False), ("0", False),
                                            ("no", False), ("off", False)])
def test_bool_parsing(text, expected):
    assert parse_args([f"--download={text}"]).download is expected
    assert parse_args([f"--eval_train_augment={text}"]).eval_train_augment is expected


def test_bool_from_yaml(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("download: false\n")
    assert parse_args([str(preset)]).download is False


def test_run_name_default_and_explicit(tmp_path):
    assert parse_args([]).run_name == "mnist-class-camu"
    assert parse_args(["--dataset=cifar10", "--scenario=random"]).run_name == "cifar10-random-camu"
    assert parse_args(["--run_name=mine"]).run_name == "mine"
    cfg = parse_args(["--run_name=mine", f"--out_dir={tmp_path / 'somewhere'}"])
    assert cfg.run_dir == tmp_path / "somewhere" / "mine"


def test_an_out_dir_that_cannot_be_a_folder_is_a_config_error(tmp_path, capsys):
    """Caught before the data is loaded, not as a traceback from the cache lock minutes into the run."""
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")
    for out_dir in (in_the_way, in_the_way / "below" / "it"):
        with pytest.raises(ConfigError, match=f"out_dir: .*{in_the_way} is a file, not a folder"):
            parse_args([f"--out_dir={out_dir}"])
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match="is a broken link"):
        parse_args([f"--out_dir={tmp_path / 'link' / 'runs'}"])
    assert parse_args([f"--out_dir={tmp_path / 'new' / 'runs'}"]).out_dir == str(tmp_path / "new" / "runs")
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(SystemExit) as exit_:
        main.main([f"--out_dir={in_the_way}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_forget_class_range_depends_on_dataset():
    assert parse_args(["--forget_class=9"]).forget_class == 9
    assert parse_args(["--dataset=cifar100", "--forget_class=99"]).forget_class == 99
    with pytest.raises(ConfigError, match="forget_class"):
        parse_args(["--forget_class=10"])
    with pytest.raises(ConfigError, match="forget_class"):
        parse_args(["--dataset=cifar100", "--forget_class=100"])
    with pytest.raises(ConfigError, match="forget_class"):
        parse_args(["--forget_class=-1"])


@pytest.mark.parametrize("argv, word", [
    (["--nope=1"], "nope"),
    (["--train_epochs=abc"], "train_epochs"),
    (["--train_epochs=1.5"], "train_epochs"),
    (["--out_lr=fast"], "out_lr"),
    (["--seeds=a,b"], "seeds"),
    (["--download=maybe"], "download"),
    (["--forget_class=10"], "forget_class"),
    (["--dataset=cifar100", "--forget_class=100"], "forget_class"),
    (["--scenario=random", "--forget_fraction=0"], "forget_fraction"),
    (["--scenario=random", "--forget_fraction=1"], "forget_fraction"),
    (["--scenario=random", "--forget_fraction=1.5"], "forget_fraction"),
    (["--dataset=imagenet"], "dataset"),
    (["--scenario=half"], "scenario"),
    (["--device=tpu"], "device"),
    (["--method=retrain_magic"], "method"),
    (["--seeds=1,1"], "seeds"),
    (["--batch_size=0"], "batch_size"),
    (["--seeds", "1"], "--seeds"),
    (["seeds=1"], "'seeds=1': expected --key=value (two dashes: --seeds=1)"),  # was 'preset file does not exist'
    (["-seeds=1"], "expected --key=value (two dashes)"),  # was read as a preset named '-seeds=1'
    (["--seeds=1", "configs/mnist_class.yaml"], "configs/mnist_class.yaml"),
    (["does/not/exist.yaml"], "does/not/exist.yaml"),
    # a baseline's own keys, refused before any work (the method raised after the original's training)
    (["--finetune_batch_size=0"], "finetune_batch_size"),
    (["--neggrad_optimizer=rmsprop"], "neggrad_optimizer"),
    (["--scrub_momentum=1"], "scrub_momentum"),
    (["--salun_lr=0"], "salun_lr"),
    (["--random_label_weight_decay=-1"], "random_label_weight_decay"),
    (["--bad_teacher_epochs=-1"], "bad_teacher_epochs"),
    (["--neggrad_plus_alpha=1.5"], "neggrad_plus_alpha"),
    (["--salun_threshold=0"], "salun_threshold"),
    (["--neggrad_stop_acc=101"], "neggrad_stop_acc"),
    (["--ulira_epochs=0"], "ulira_epochs"),
    (["--scenario=random", "--forget_fraction=0.6"], "forget_fraction"),  # D_s cannot be drawn from D_r
    (["--test_limit=1"], "test_limit"),
    (["--scrub_lr_decay_rate=nan"], "scrub_lr_decay_rate: nan is not a finite number"),  # passed every range
    (["--camu_rep_forget_weight=inf"], "camu_rep_forget_weight"),
])
def test_config_errors(argv, word):
    with pytest.raises(ConfigError) as info:
        parse_args(argv)
    message = str(info.value)
    assert word in message
    assert "\n" not in message


@pytest.mark.parametrize("text, word", [("train_epochs: 1.5\n", "train_epochs"), ("seeds: [0, x]\n", "seeds"),
                                        ("download: maybe\n", "download"), ("run_name: [a, b]\n", "run_name"),
                                        ("forget_fraction: 0\nscenario: random\n", "forget_fraction")])
def test_bad_values_in_preset(tmp_path, text, word):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError, match=word):
        parse_args([str(preset)])


def test_a_preset_that_is_a_folder_or_not_text_is_named_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=f"preset file '{tmp_path}' is a folder"):
        parse_args([str(tmp_path)])
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xd0\xff\xfe")
    with pytest.raises(ConfigError, match=f"preset {binary}: cannot be read as text") as info:
        parse_args([str(binary)])
    assert "\n" not in str(info.value)


def test_unknown_key_in_preset(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("dataset: mnist\nunlearn_epoch: 3\n")
    with pytest.raises(ConfigError, match="unlearn_epoch") as info:
        parse_args([str(preset)])
    assert str(preset) in str(info.value)


def test_preset_not_a_mapping_or_bad_yaml(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        parse_args([str(listing)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [mnist\n")
    with pytest.raises(ConfigError):
        parse_args([str(broken)])


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_match_the_spec_table(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.is_file()
    cfg = parse_args([str(path)])
    dataset, scenario = name.rsplit("_", 1)
    assert (cfg.dataset, cfg.scenario) == (dataset, scenario)
    family = "cifar" if dataset.startswith("cifar") else "mnist"
    epochs, out_lr, rep_lr = TABLE[(family, scenario)]
    assert cfg.unlearn_epochs == epochs
    assert cfg.out_lr == pytest.approx(out_lr, rel=1e-12)
    assert cfg.rep_lr == pytest.approx(rep_lr, rel=1e-12)
    assert cfg.forget_repeat == (10 if name == "cifar100_class" else 1)
    assert cfg.train_epochs == 20
    assert cfg.train_lr == pytest.approx(1e-3)
    assert cfg.batch_size == 32
    assert cfg.weight_decay == pytest.approx(1e-4)
    assert cfg.seeds == [0, 1, 2, 3, 4]
    if scenario == "class":
        assert cfg.forget_class == 0
    else:
        assert cfg.forget_fraction == pytest.approx(0.1)
    assert cfg.run_name == f"{dataset}-{scenario}-camu"


def test_exactly_the_eight_presets_and_the_concept_cases_exist():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(PRESETS + CONCEPT_PRESETS)


@pytest.mark.parametrize("name", CONCEPT_PRESETS)
def test_concept_presets_are_the_papers_cases(name):
    cfg = parse_args([str(CONFIGS / f"{name}.yaml")])
    assert cfg.method == "concept_poison" and cfg.scenario == "class"
    if name.startswith("cifar"):  # the release: deer / boy, ResNet-50 from ImageNet, CLIP bank, 20 / 30 epochs
        assert (cfg.forget_class, cfg.model_name, cfg.pretrained, cfg.concept_bank) == (
            4 if name == "cifar10_concept" else 11, "resnet50", True, "clip")
        assert cfg.concept_poison_epochs == (20 if name == "cifar10_concept" else 30)
        assert not cfg.eval_train_augment  # A_train on the stored images, as the release's evaluate.py
    else:  # the same cached original as the class-removal preset
        assert cfg.forget_class == 0 and cfg.concept_bank == "cav"
        same = parse_args([str(CONFIGS / (name.replace("concept", "class") + ".yaml"))])
        assert (cfg.model_name, cfg.train_epochs, cfg.train_lr, cfg.batch_size) == (
            same.model_name, same.train_epochs, same.train_lr, same.batch_size)


def test_to_dict_round_trips():
    cfg = parse_args(["--seeds=3,4", "--out_lr=0.5"])
    assert Config(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("arg, word", [("--nope=1", "nope"), ("--forget_class=12", "forget_class")])
def test_cli_config_error_exits_2_with_one_line(tmp_path, arg, word, capsys):
    """``main.main`` in this process (``test_main_seed_typo_exits_2_with_one_line`` starts the real CLI)."""
    out_dir = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:
        main.main([arg, f"--out_dir={out_dir}"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert word in lines[0]
    assert not out_dir.exists()


def test_mia_attack_names_are_checked():
    assert parse_args(["--mia_attacks=loss,ulira"]).mia_attacks == ["loss", "ulira"]
    assert parse_args(["--mia_attacks="]).mia_attacks == []
    with pytest.raises(ConfigError, match="mia_attacks"):
        parse_args(["--mia_attacks=loss,nope"])


def test_every_registered_method_is_a_valid_choice():
    from unlearn import METHODS

    expected = {"camu", "retrain", "finetune", "neggrad", "neggrad_plus", "random_label", "boundary_shrink",
                "boundary_expand", "unrolling_sgd", "bad_teacher", "scrub", "salun", "ssd", "concept_poison"}
    assert set(METHODS) == expected
    for name in METHODS:
        assert parse_args([f"--method={name}"]).run_name == f"mnist-class-{name}"


def test_unknown_key_suggests_the_closest_keys():
    with pytest.raises(ConfigError) as info:
        parse_args(["--seed=1"])
    message = str(info.value)
    assert "'seed'" in message and "did you mean 'seeds'" in message
    assert "\n" not in message and len(message) < 200  # one line, not the list of every key
    with pytest.raises(ConfigError, match="did you mean 'unlearn_epochs'"):
        parse_args(["--unlearn_epoch=3"])
    with pytest.raises(ConfigError, match="see --help"):
        parse_args(["--zzzz=1"])
    # the generic names a user tries first: the keys they mean, not the nearest spellings (baselines' lrs)
    with pytest.raises(ConfigError, match="did you mean 'train_lr' or 'out_lr' or 'rep_lr'\\?"):
        parse_args(["--lr=0.1"])
    with pytest.raises(ConfigError, match="did you mean 'train_epochs' or 'unlearn_epochs'\\?"):
        parse_args(["--epochs=1"])


@pytest.mark.parametrize("command, typo, meant", [("tune", "--trial=2", "trials"),
                                                   ("reproduce", "--worker=2", "workers"),
                                                   ("bench", "--bench_ou=x.json", "bench_out")])
def test_a_typo_of_a_command_s_own_flag_is_offered_that_flag(command, typo, meant, tmp_path, capsys):
    import importlib

    module = importlib.import_module(command)
    argv = [typo, f"--out_dir={tmp_path / 'out'}", *(["--method=ssd"] if command == "tune" else [])]
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: unknown flag or config key") and f"did you mean '{meant}'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--wait=true", "--dry-run=1", "--table-only=yes", "--dry_run=true",
                                  "--table_only=1"])
def test_a_bare_flag_given_a_value_says_so(flag, tmp_path, capsys):
    """``--wait=true`` was 'unknown config key 'wait'; did you mean 'wait'?', and ``--dry_run=true`` (the
    bare ``--dry_run`` is accepted) 'did you mean 'dry-run'?'."""
    import reproduce

    assert reproduce.main([flag, f"--out_dir={tmp_path / 'out'}"]) == 2
    name = flag[2:].split("=")[0]
    said = f"config error: --{name}: takes no value (give --{name.replace('_', '-')} alone)"
    assert capsys.readouterr().err.strip() == said


def test_main_seed_typo_exits_2_with_one_line(tmp_path, capsys):
    import main

    with pytest.raises(SystemExit) as stop:
        main.main(["--seed=1", f"--out_dir={tmp_path}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "did you mean 'seeds'" in err
    assert not any(tmp_path.iterdir())


def test_a_bad_value_is_its_error_line_alone_and_a_good_config_shows_its_layers(tmp_path, capsys):
    """The preset and override lines were printed before the error, two lines for a one-line mistake."""
    import main

    with pytest.raises(SystemExit):
        main.main(["configs/mnist_class.yaml", "--seeds=0", "--dataset=mnst", f"--out_dir={tmp_path}"])
    out, err = capsys.readouterr()
    assert out == "" and err == "config error: dataset: 'mnst' is not one of mnist, fashion_mnist, cifar10, cifar100\n"
    parse_args(["configs/mnist_class.yaml", "--seeds=0"], echo=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("preset configs/mnist_class.yaml: ") and lines[1:] == ["override seeds = [0]"]


def test_both_help_flags_and_only_they_ask_for_help():
    assert wants_help(["-h"]) and wants_help(["x.yaml", "--help"])
    assert not wants_help(["--helpful=1"]) and not wants_help([])


@pytest.mark.parametrize("script, flag", [("main.py", "--help"), ("reproduce.py", "-h"), ("bench.py", "--help")])
def test_help_lists_every_key_and_exits_0(script, flag, capsys):
    """main.py in its own process (the command as typed); the others through their ``main`` (each answers
    -h and --help through ``config.wants_help``, tested above), which saves a torch import each."""
    if script == "main.py":
        proc = subprocess.run([sys.executable, script, flag], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
    else:
        import importlib

        assert importlib.import_module(script.removesuffix(".py")).main([flag]) == 0
        out = capsys.readouterr().out
    assert out.startswith("usage:")
    for f in dataclasses.fields(Config):
        assert f"--{f.name}=" in out, f.name
        assert f.metadata["help"] in out, f.name
    if script != "reproduce.py":  # the grid picks each cell's preset itself
        assert "configs/mnist_class.yaml" in out
    # the key list shows the defaults the script runs with (reproduce.py's own out_dir and relearn)
    own = {"out_dir": "results", "relearn": "true"} if script == "reproduce.py" else {"out_dir": "runs",
                                                                                        "relearn": "false"}
    for key, value in own.items():
        assert f"\n  --{key}={value}\n" in out, key


def test_every_key_has_a_one_line_meaning():
    for f in dataclasses.fields(Config):
        text = f.metadata.get("help", "")
        assert text and "\n" not in text, f.name


def test_docs_config_table_matches_the_dataclass():
    """docs/config.md carries the generated key table; regenerate with `python config.py`."""
    doc = (ROOT / "docs" / "config.md").read_text()
    assert key_table() in doc, "docs/config.md is stale: paste the output of `python config.py` into it"


def test_config_imports_no_registry():
    """Nor does it need one imported first: a key's owner reads the method names (it raised without them)."""
    code = ("import sys, config; print(sorted(m for m in ('unlearn', 'eval', 'torch') if m in sys.modules)); "
            "print(config.key_owner('neggrad_plus_lr'), config.key_owner('rep_lr'), config.key_owner('seeds'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines() == ["[]", "neggrad_plus camu None"], out.stdout + out.stderr


def test_help_and_config_errors_import_no_slow_dependency():
    """torchvision, scikit-learn, captum and xgboost take seconds each to import; ``--help`` and a
    config error are answered before any of them is needed, so they are imported where they are used."""
    code = """if True:
        import contextlib, io, runpy, sys
        for script in ("main.py", "tune.py", "reproduce.py", "bench.py"):
            for flag in ("-h", "--nope=1"):
                sys.argv = [script, flag]
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    try:
                        runpy.run_path(script, run_name="__main__")
                    except SystemExit as exit:
                        assert exit.code == (0 if flag == "-h" else 2), (script, flag, exit.code)
        print(sorted(m for m in ("torchvision", "sklearn", "captum", "xgboost", "open_clip") if m in sys.modules))
    """
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_clip_word_list_is_hashed_into_the_config(tmp_path):
    """A stored cell keeps the hash of the words its clip bank read: an edited words file or a changed built-in
    list is a changed setting, not a silent reuse. Comments, blanks and repeats do not change what is read."""
    import hashlib

    from concepts.clip_bank import WORDS

    clip = ["--method=concept_poison", "--concept_bank=clip"]
    words = tmp_path / "words.txt"
    words.write_text("antler\nfur  # a comment\n\nantler\n")
    cfg = parse_args([*clip, f"--concept_words={words}"])
    assert cfg.concept_words_sha256 == hashlib.sha256(b"antler\nfur").hexdigest()
    assert cfg.to_dict()["concept_words_sha256"] == cfg.concept_words_sha256
    words.write_text("antler\nfur\nhoof\n")
    assert parse_args([*clip, f"--concept_words={words}"]).concept_words_sha256 == \
        hashlib.sha256(b"antler\nfur\nhoof").hexdigest()
    assert parse_args(clip).concept_words_sha256 == \
        hashlib.sha256("\n".join(WORDS["mnist"]).encode()).hexdigest()
    assert parse_args(["--method=concept_poison"]).concept_words_sha256 == ""  # the cav bank reads no words
    assert parse_args(["--method=camu", "--concept_bank=clip"]).concept_words_sha256 == ""
    assert parse_args([*clip, f"--concept_words={tmp_path / 'none.txt'}"]).concept_words_sha256 == ""  # preflight
    with pytest.raises(ConfigError, match="concept_words_sha256: filled when reading"):
        parse_args([*clip, "--concept_words_sha256=abc"])
    for key in ("tuned_file", "tuned_sha256"):  # the same rule for the tuned file's name and hash
        with pytest.raises(ConfigError, match="tuned_file, tuned_sha256: filled when reading .*tuned=true"):
            parse_args([f"--{key}=x"])


def test_a_hash_a_stored_config_predates_or_that_cannot_be_read_here_is_not_a_change(tmp_path):
    """Cells and studies stored before concept_words_sha256 was recorded lack it: its default ('') is not what
    their bank read, so they were refused as changed; a words file missing here read as a changed list."""
    from config import changed_keys

    words = tmp_path / "words.txt"
    words.write_text("stroke\nloop\n")
    clip = ["--method=concept_poison", "--concept_bank=clip", f"--concept_words={words}"]
    current = parse_args(clip).to_dict()
    before = {k: v for k, v in current.items() if k != "concept_words_sha256"}
    assert changed_keys(before, current) == []
    assert changed_keys({**current, "concept_words_sha256": "0" * 64}, current) == ["concept_words_sha256"]
    words.unlink()
    assert changed_keys(current, parse_args(clip).to_dict()) == []  # the preflight names the missing file


def test_hashing_the_clip_word_list_imports_no_torch():
    """config.py hashes the words while parsing: reading them through the clip bank's module loaded torch (3 s
    before a one-line config error)."""
    code = ("import sys, config; cfg = config.parse_args(['--method=concept_poison', '--concept_bank=clip']); "
            "print(bool(cfg.concept_words_sha256), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]
