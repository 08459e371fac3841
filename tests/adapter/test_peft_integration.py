"""HypLoRA through stock peft: injection, parameters, training, saving/loading, merging, adapters, dtypes."""

from __future__ import annotations

import copy
import json
import math

import peft
import pytest
import torch
import torch.nn as nn

from hyplora import HypLoraConfig, HypLoraLinear, load_adapter
from hyplora.adapter import HypLoraMergeError
from hyplora.adapter import functional as Fn
from hyplora.errors import HypLoraUserError

VARIANTS = ["lorentz", "lorentz-full", "stereographic"]
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def hyplora_config(**overrides) -> HypLoraConfig:
    settings = dict(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM")
    settings.update(overrides)
    return HypLoraConfig(**settings)


def batch(seed: int = 0, size: tuple[int, int] = (2, 9)) -> torch.Tensor:
    return torch.randint(0, 128, size, generator=torch.Generator().manual_seed(seed))


def hyplora_layers(model, adapter: str = "default") -> list[HypLoraLinear]:
    return [m for m in model.modules() if isinstance(m, HypLoraLinear) and adapter in m.lora_A]


@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_gemma3"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_targeted_linear_is_wrapped_and_starts_as_the_base_model(request, architecture, variant):
    base = request.getfixturevalue(architecture)
    ids = batch()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    model = peft.get_peft_model(copy.deepcopy(base), hyplora_config(variant=variant))
    assert model.peft_config["default"].peft_type == peft.PeftType.LORA
    targeted = [name for name, _ in base.named_modules() if name.split(".")[-1] in TARGETS]
    layers = hyplora_layers(model)
    assert len(layers) == len(targeted) == 2 * len(TARGETS)
    for layer in layers:
        assert type(layer.base_layer) is nn.Linear
        assert layer.lora_B["default"].weight.abs().sum() == 0  # LoRA's init: B = 0
        full = variant == "lorentz-full"
        assert layer.lora_A["default"].weight.shape == (4, layer.in_features + full)
        assert layer.lora_B["default"].weight.shape == (layer.out_features, 4 + full)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, base_logits, rtol=0, atol=0)


def test_curvature_and_feature_scale_start_exactly_at_the_configured_values(tiny_llama):
    model = peft.get_peft_model(tiny_llama, hyplora_config(curvature=0.37))
    for layer in hyplora_layers(model):
        assert layer.curvature("default").item() == torch.tensor(0.37, dtype=torch.float32).item()
        assert layer.feature_scale("default").item() == pytest.approx(math.sqrt(layer.in_features), rel=1e-7)
        assert layer.lora_log_scales["default"].dtype == torch.float32  # (log K / K0, log s / s0)
        assert layer.lora_log_scales["default"].tolist() == [0.0, 0.0]
        assert not layer.lora_curvature and not layer.lora_feature_scale


@pytest.mark.parametrize("learned", ["curvature", "feature_scale"])
def test_one_learned_scalar_is_a_parameter_of_its_own(tiny_llama, learned):
    model = peft.get_peft_model(tiny_llama, hyplora_config(learn_curvature=learned == "curvature",
                                                           learn_feature_scale=learned == "feature_scale",
                                                           curvature=2.0, feature_scale=3.0, init_lora_weights=False))
    names = [name for name, p in model.named_parameters() if p.requires_grad and "lora_A" not in name
             and "lora_B" not in name]
    assert names and all(f".lora_{learned}." in n for n in names)
    layer = hyplora_layers(model)[0]
    assert layer.curvature("default").item() == 2.0 and layer.feature_scale("default").item() == 3.0
    ids = batch()
    model(input_ids=ids, labels=ids).loss.backward()
    assert getattr(layer, f"lora_{learned}")["default"].grad.abs().item() > 0


def test_fixed_curvature_and_scale_are_not_parameters(tiny_llama):
    model = peft.get_peft_model(tiny_llama, hyplora_config(learn_curvature=False, learn_feature_scale=False,
                                                           curvature=2.0, feature_scale=3.0))
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names and not any("curvature" in n or "feature_scale" in n for n in names)
    layer = hyplora_layers(model)[0]
    assert layer.curvature("default").item() == 2.0 and layer.feature_scale("default").item() == 3.0


@pytest.mark.parametrize("compat", [None, "reference"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_adapter_parameter(tiny_llama, variant, compat):
    if compat and variant == "lorentz-full":
        pytest.skip("no reference code for lorentz-full")
    model = peft.get_peft_model(tiny_llama, hyplora_config(variant=variant, compat=compat, init_lora_weights=False))
    model.train()
    ids = batch()
    model(input_ids=ids, labels=ids).loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    kinds = {"lora_A", "lora_B", "lora_curvature", "lora_feature_scale"} if compat else {"lora_A", "lora_B",
                                                                                         "lora_log_scales"}
    if compat and variant == "stereographic":
        kinds.discard("lora_feature_scale")  # the released simplified variant has no feature scale
    for kind in kinds:
        params = [p for name, p in trainable.items() if f".{kind}." in name]
        assert params, kind
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, kind
    assert all(".lora_" in name for name in trainable)  # the base model stays frozen


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_few_optimizer_steps_reduce_the_loss(tiny_llama, variant):
    torch.manual_seed(0)
    model = peft.get_peft_model(tiny_llama, hyplora_config(variant=variant, lora_alpha=16))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = batch(1, (4, 16))
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_gemma3"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_round_trip_gives_identical_outputs(request, tmp_path, architecture, variant):
    base = request.getfixturevalue(architecture)
    pristine = copy.deepcopy(base)
    model = peft.get_peft_model(base, hyplora_config(variant=variant, init_lora_weights=False, curvature=0.8))
    with torch.no_grad():  # move the learned scalars away from their start values
        for layer in hyplora_layers(model):
            layer.lora_log_scales["default"].copy_(torch.tensor([0.3, -0.2]))
    model.eval()
    ids = batch(2)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "HYPLORA" and saved["variant"] == variant and saved["curvature"] == 0.8

    loaded = load_adapter(pristine, tmp_path)
    assert isinstance(loaded.peft_config["default"], HypLoraConfig)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_adapters_saved_with_two_scalar_tensors_still_load(tiny_llama, tmp_path):
    """Adapters saved before `lora_log_scales` hold ``lora_curvature`` and ``lora_feature_scale`` (1 element each)."""
    from safetensors.torch import load_file, save_file

    pristine = copy.deepcopy(tiny_llama)
    model = peft.get_peft_model(tiny_llama, hyplora_config(init_lora_weights=False)).eval()
    with torch.no_grad():
        for layer in hyplora_layers(model):
            layer.lora_log_scales["default"].copy_(torch.tensor([0.3, -0.2]))
        expected = model(input_ids=batch(3)).logits
    model.save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    state = load_file(path)
    merged = [key for key in state if key.endswith("lora_log_scales")]
    assert merged
    for key in merged:  # rewrite the file in the earlier layout
        value = state.pop(key)
        stem = key.removesuffix("lora_log_scales")
        state[stem + "lora_curvature"], state[stem + "lora_feature_scale"] = value[0:1].clone(), value[1:2].clone()
    save_file(state, path)
    loaded = load_adapter(pristine, tmp_path)
    assert all(layer.lora_log_scales["default"].tolist() == pytest.approx([0.3, -0.2])
               for layer in hyplora_layers(loaded))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=batch(3)).logits, expected, rtol=0, atol=0)


def test_stock_peft_refuses_to_load_hyplora_as_plain_lora(tiny_llama, tmp_path):
    pristine = copy.deepcopy(tiny_llama)
    peft.get_peft_model(tiny_llama, hyplora_config()).save_pretrained(tmp_path)
    with pytest.raises(KeyError, match="HYPLORA"):
        peft.PeftModel.from_pretrained(pristine, tmp_path)
    with pytest.raises(KeyError, match="HYPLORA"):
        peft.PeftConfig.from_pretrained(tmp_path)


def test_hyplora_adapter_on_a_plain_lora_layer_is_refused(tiny_llama):
    model = peft.get_peft_model(tiny_llama, peft.LoraConfig(r=4, target_modules=TARGETS))
    with pytest.raises(ValueError, match="variant"):
        model.add_adapter("hyp", hyplora_config())


def test_plain_lora_adapter_on_a_hyplora_layer_is_refused(tiny_llama):
    model = peft.get_peft_model(tiny_llama, hyplora_config())
    with pytest.raises(ValueError, match="non-HypLoRA"):
        model.add_adapter("plain", peft.LoraConfig(r=4, target_modules=TARGETS))


def test_several_named_adapters_coexist_and_can_be_disabled(tiny_llama, tmp_path):
    ids = batch(3)
    pristine = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        base_logits = tiny_llama(input_ids=ids).logits
    model = peft.get_peft_model(tiny_llama, hyplora_config(init_lora_weights=False), adapter_name="first")
    model.add_adapter("second", hyplora_config(variant="stereographic", init_lora_weights=False, r=2))
    model.eval()
    with torch.no_grad():
        model.set_adapter("first")
        first = model(input_ids=ids).logits
        model.set_adapter("second")
        second = model(input_ids=ids).logits
        with model.disable_adapter():
            disabled = model(input_ids=ids).logits
        mixed = model(input_ids=ids, adapter_names=["first", "__base__"]).logits
    assert not torch.allclose(first, second)
    torch.testing.assert_close(disabled, base_logits, rtol=0, atol=0)
    torch.testing.assert_close(mixed[0], first[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed[1], base_logits[1], rtol=1e-6, atol=1e-6)
    layer = hyplora_layers(model, "second")[0]
    assert layer.lora_A["second"].weight.shape[0] == 2

    model.save_pretrained(tmp_path)  # one sub-directory per adapter not named "default"
    reloaded = load_adapter(pristine, tmp_path / "first", adapter_name="first")
    reloaded = load_adapter(reloaded, tmp_path / "second", adapter_name="second")
    reloaded.set_adapter("second")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, second, rtol=0, atol=0)
    with pytest.raises(HypLoraUserError, match="already has an adapter"):
        load_adapter(reloaded, tmp_path / "second", adapter_name="second")


def test_layers_with_the_same_settings_share_one_settings_entry(tiny_llama):
    """Each adapter's settings live in one process-wide table (guarded once under torch.compile); a layer keeps
    their number, and deleting the adapter drops it."""
    model = peft.get_peft_model(tiny_llama, hyplora_config(), adapter_name="first")
    model.add_adapter("second", hyplora_config(variant="stereographic", max_radius=3.0))
    layers = hyplora_layers(model, "first")
    same_width = [layer for layer in layers if layer.in_features == layers[0].in_features]
    assert len(same_width) > 1
    assert len({layer.hyplora_settings_index["first"] for layer in same_width}) == 1
    layer = layers[0]
    assert layer.hyplora_settings_index["first"] != layer.hyplora_settings_index["second"]
    assert layer.hyplora_settings["second"] == {"variant": "stereographic", "compat": None, "curvature": 1.0,
                                                 "feature_scale": math.sqrt(layer.in_features), "max_radius": 3.0}
    model.delete_adapter("second")
    assert set(layer.hyplora_settings_index) == set(layer.hyplora_settings) == {"first"}


def test_a_pickled_layer_finds_its_settings_in_a_fresh_process_table(tiny_llama, monkeypatch):
    import pickle

    from hyplora.adapter import layer as layer_module

    model = peft.get_peft_model(tiny_llama, hyplora_config(variant="stereographic", init_lora_weights=False))
    layer = hyplora_layers(model)[-1]
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        expected = layer(x)
    blob = pickle.dumps(layer)
    monkeypatch.setattr(layer_module, "_SETTINGS", {})  # as in another process
    copy_ = pickle.loads(blob)
    assert copy_.hyplora_settings == layer.hyplora_settings
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("call", ["merge_and_unload", "merge_adapter", "get_delta_weight", "unmerge"])
def test_merging_is_refused_with_the_reason(tiny_llama, call):
    model = peft.get_peft_model(tiny_llama, hyplora_config())
    with pytest.raises(HypLoraMergeError, match="nonlinear in x"):
        if call == "get_delta_weight":
            hyplora_layers(model)[0].get_delta_weight("default")
        elif call == "unmerge":
            hyplora_layers(model)[0].unmerge()
        else:
            getattr(model, call)()


def test_unload_returns_the_base_model(tiny_llama):
    ids = batch(4)
    with torch.no_grad():
        expected = tiny_llama(input_ids=ids).logits
    model = peft.get_peft_model(tiny_llama, hyplora_config(init_lora_weights=False))
    base = model.unload()
    assert not any(isinstance(m, HypLoraLinear) for m in base.modules())
    with torch.no_grad():
        torch.testing.assert_close(base(input_ids=ids).logits, expected, rtol=0, atol=0)


def test_dropout_acts_in_training_only(tiny_llama):
    model = peft.get_peft_model(tiny_llama, hyplora_config(lora_dropout=0.5, init_lora_weights=False))
    layer = hyplora_layers(model)[0]
    x = torch.randn(4, layer.in_features)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_bfloat16_base_with_float32_adapter_math(tiny_llama):
    base = tiny_llama.to(torch.bfloat16)
    model = peft.get_peft_model(base, hyplora_config(init_lora_weights=False))
    layer = hyplora_layers(model)[0]
    assert layer.lora_A["default"].weight.dtype == torch.float32  # peft's autocast_adapter_dtype
    assert layer.lora_log_scales["default"].dtype == torch.float32
    x = (torch.randn(3, layer.in_features) * 3).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    settings = layer.hyplora_settings["default"]
    branch = Fn.lorentz_branch(x.float(), layer.lora_A["default"].weight, layer.lora_B["default"].weight,
                               layer.curvature("default"), layer.feature_scale("default"),
                               layer.scaling["default"], settings["max_radius"])
    # base + branch formed in float32 and rounded once (as peft's LoRA does), with and without autograd
    torch.testing.assert_close(out, (layer.base_layer(x) + branch).to(torch.bfloat16), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), out.detach(), rtol=0, atol=0)
    ids = batch(5)
    model(input_ids=ids, labels=ids).loss.backward()
    assert (layer.lora_log_scales["default"].grad.abs() > 0).all()


def test_linear_subclasses_such_as_quantized_linears_get_hyplora():
    class FakeQuantLinear(nn.Linear):
        """Stands in for bitsandbytes' Linear4bit, an nn.Linear subclass with its own forward."""

        def forward(self, x):
            return super().forward(x) * 1.0

    model = nn.Sequential()
    model.add_module("proj", FakeQuantLinear(8, 8))
    wrapped = peft.get_peft_model(model, HypLoraConfig(r=2, target_modules=["proj"]))
    assert isinstance(wrapped.base_model.model.proj, HypLoraLinear)


def test_non_linear_targets_are_refused_clearly():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    with pytest.raises(ValueError, match="nn.Linear layers only.*Conv1D"):
        peft.get_peft_model(gpt2, HypLoraConfig(r=2, target_modules=["c_attn"]))
    llama = nn.ModuleDict({"embed_tokens": nn.Embedding(10, 4)})
    with pytest.raises(ValueError, match="Embedding"):
        peft.get_peft_model(llama, HypLoraConfig(r=2, target_modules=["embed_tokens"]))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"variant": "poincare"}, "variant"),
        ({"curvature": -1.0}, "curvature"),
        ({"curvature": float("nan")}, "curvature"),
        ({"max_radius": 100.0}, "max_radius"),
        ({"feature_scale": 0.0}, "feature_scale"),
        ({"compat": "paper"}, "compat"),
        ({"use_dora": True}, "use_dora"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights"),
    ],
)
def test_impossible_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        HypLoraConfig(**options)


def test_load_adapter_errors_are_clear(tiny_llama, tmp_path):
    with pytest.raises(HypLoraUserError, match="not an adapter directory"):
        load_adapter(tiny_llama, tmp_path)
    peft.get_peft_model(copy.deepcopy(tiny_llama), hyplora_config()).save_pretrained(tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM

    wider = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(HypLoraUserError, match="does not fit"):
        load_adapter(wider, tmp_path)
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(HypLoraUserError, match="safetensors"):
        load_adapter(tiny_llama, tmp_path)


def test_plain_lora_adapters_load_too(tiny_llama, tmp_path):
    pristine = copy.deepcopy(tiny_llama)
    lora = peft.get_peft_model(tiny_llama, peft.LoraConfig(r=4, target_modules=TARGETS, init_lora_weights=False))
    lora.save_pretrained(tmp_path)
    ids = batch(6)
    with torch.no_grad():
        torch.testing.assert_close(load_adapter(pristine, tmp_path)(input_ids=ids).logits,
                                   lora.eval()(input_ids=ids).logits, rtol=0, atol=0)
