"""Runtime switches: bf16 resolution, channels_last layout, fused Adam, and their config keys."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from config import ConfigError, parse_args, validate
from models import build_model
from models import runtime as runtime_module
from models.runtime import PLAIN, Runtime, backend_info, cpu_has_native_bf16, cpu_info, resolve_bf16


def test_bf16_resolution():
    assert resolve_bf16("true", "cpu") and resolve_bf16("true", "cuda")
    assert not resolve_bf16("false", "cpu")
    assert not resolve_bf16("auto", "cuda")  # unmeasured on GPUs: stays float32
    assert resolve_bf16("auto", "cpu") == cpu_has_native_bf16()


def test_cpu_info_names_the_bf16_kernel_path(monkeypatch):
    here = cpu_info()
    assert here["cpu"] and here["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert (here["cpu_bf16"] != "none") == cpu_has_native_bf16()
    assert {k: backend_info("cpu")[k] for k in here} == here  # every results.json and cell records it
    for flags, path in (({"avx512f", "amx_bf16", "avx512_bf16"}, "amx"), ({"avx512f", "avx512_bf16"}, "avx512_bf16"),
                        ({"avx2"}, "none")):
        monkeypatch.setattr(runtime_module, "_cpuinfo", lambda flags=flags: ("Some CPU", frozenset(flags)))
        assert cpu_info()["cpu_bf16"] == path and cpu_info()["cpu"] == "Some CPU"
        assert cpu_has_native_bf16() == (path != "none")


def test_onednn_isa_cap_lowers_the_recorded_bf16_path(monkeypatch):
    """ONEDNN_MAX_CPU_ISA caps oneDNN's kernels: the recorded path (and bf16=auto) follow the cap."""
    monkeypatch.setattr(runtime_module, "_cpuinfo", lambda: ("Xeon", frozenset({"avx512f", "avx512_bf16", "amx_bf16"})))
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for cap, path in (("", "amx"), ("avx10_1_512_amx", "amx"), ("AVX512_CORE_BF16", "avx512_bf16"),
                      ("AVX10_1_512", "avx512_bf16"), ("AVX512_CORE", "none"), ("AVX2", "none")):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu_info()["cpu_bf16"] == path and cpu_info()["onednn_max_cpu_isa"] == cap.upper()
        assert resolve_bf16("auto", "cpu") == (path != "none")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx512_core_bf16")  # oneDNN's older name
    assert cpu_info()["cpu_bf16"] == "avx512_bf16"
    monkeypatch.setattr(runtime_module, "_cpuinfo", lambda: ("EPYC", frozenset({"avx512f", "avx2"})))
    assert cpu_info()["cpu_bf16"] == "none"  # a cap adds no kernels the CPU lacks


def test_bf16_config_values():
    assert parse_args([]).bf16 == "auto"
    assert parse_args(["--bf16=yes"]).bf16 == "true"
    assert parse_args(["--bf16=OFF"]).bf16 == "false"
    with pytest.raises(ConfigError, match="bf16"):
        parse_args(["--bf16=maybe"])


def test_channels_last_computes_the_same_function():
    torch.manual_seed(0)
    plain = build_model("cnn", 10)
    fast = Runtime(channels_last=True).prepare(copy.deepcopy(plain))
    assert fast.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(16, 1, 28, 28)
    for a, b in zip(plain(x), fast(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_adam_takes_the_same_steps():
    torch.manual_seed(0)
    a = build_model("cnn", 10)
    b = copy.deepcopy(a)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for model, runtime in ((a, PLAIN), (b, Runtime(fused_adam=True))):
        opt = runtime.adam(model.parameters(), 1e-3, 1e-4)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x)[0], y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_stays_close():
    torch.manual_seed(0)
    model = build_model("cnn", 10).eval()
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)[0]
        with Runtime(bf16=True).autocast("cpu"):
            low = model(x)[0]
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.02)


def test_compile_key_values():
    assert parse_args([]).compile == "off"
    assert parse_args(["--compile=reduce-overhead"]).compile == "reduce-overhead"
    with pytest.raises(ConfigError, match="compile"):
        validate(parse_args(["--compile=fast"]))


def test_compiled_model_computes_the_same_and_keeps_its_checkpoint_keys():
    torch.manual_seed(0)
    eager = build_model("cnn", 10)
    compiled = Runtime(compile="default").prepare(copy.deepcopy(eager))
    assert type(compiled) is type(eager) and list(compiled.state_dict()) == list(eager.state_dict())
    x = torch.randn(8, 1, 28, 28)
    (a, ea), (b, eb) = eager(x), compiled(x)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ea, eb, atol=1e-5)
    twin = copy.deepcopy(compiled)  # every unlearning run starts from a deep copy of the original
    assert torch.allclose(twin(x)[0], a, atol=1e-5)


def test_reduce_overhead_keeps_outputs_alive_across_calls(monkeypatch):
    """CUDA graphs overwrite a call's outputs on the next call; evaluation keeps them (per-batch
    logits, concatenated), so ``reduce-overhead`` turns on torch's cloning of live outputs for every
    model it compiles, copies included. (The graphs themselves exist only on a GPU.)"""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.triton, "cudagraph_trees_generation_cloning", None)
    Runtime(compile="default").prepare(torch.nn.Linear(2, 2))
    assert inductor_config.triton.cudagraph_trees_generation_cloning is None
    model = Runtime(compile="reduce-overhead").copy(torch.nn.Linear(2, 2))
    assert inductor_config.triton.cudagraph_trees_generation_cloning == "user_visible"
    assert model._compiled_call_impl is not None  # compiled (lazily: nothing runs until the first call)
