"""HypLoRA models go through torch.compile whole (no graph breaks), with the eager model's loss and gradients.

Compiling the whole model is how its host-side dispatch cost goes away (CUDA graphs; benchmarks/RESULTS.md), so
the branch must stay traceable. "aot_eager" traces the forward and the written-out backward exactly as
inductor would, without generating code (which takes minutes on a CPU).
"""

import peft
import pytest
import torch

from hyplora import HypLoraConfig

from ..conftest import make_tiny_llama


@pytest.mark.parametrize("variant", ["lorentz", "stereographic", "lorentz-full"])
def test_whole_model_compiles_without_graph_breaks(variant):
    torch._dynamo.reset()
    model = peft.get_peft_model(make_tiny_llama(), HypLoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], variant=variant,
        init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager_loss, eager_grads = loss_and_grads(model)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(model, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys()
    assert any("lora_log_scales" in n for n in compiled_grads)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("compat, learn_curvature", [(None, False), ("reference", False), (None, True)])
def test_fixed_curvature_and_scale_compile_without_keeping_graph_tensors(compat, learn_curvature):
    """With K or s fixed, the layer's constants are made inside the compiled graph, not cached: with
    CUDA graphs ("reduce-overhead") a cached tensor from the graph would be overwritten by the next replay (seen
    on an H200 as "accessing tensor output of CUDAGraphs that has been overwritten")."""
    from hyplora.adapter.layer import HypLoraLinear

    torch._dynamo.reset()
    model = peft.get_peft_model(make_tiny_llama(), HypLoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], compat=compat,
        learn_curvature=learn_curvature, learn_feature_scale=False, init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    compiled_loss = torch.compile(model, backend="aot_eager", fullgraph=True)(input_ids=ids, labels=ids).loss
    compiled_loss.backward()
    layers = [m for m in model.modules() if isinstance(m, HypLoraLinear)]
    assert layers and not any(layer._caches.get("hyplora_constants") for layer in layers)
    torch.testing.assert_close(compiled_loss.detach(), model(input_ids=ids, labels=ids).loss.detach(),
                               rtol=1e-6, atol=1e-6)
    assert all(layer._caches.get("hyplora_constants") for layer in layers)  # eager calls do cache them


@pytest.mark.parametrize("variant", ["lorentz", "stereographic", "lorentz-full"])
def test_compiled_inference_equals_eager(variant):
    """Decoding under torch.compile (how transformers runs a static cache on a GPU) takes the inference path."""
    torch._dynamo.reset()
    model = peft.get_peft_model(make_tiny_llama(), HypLoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], variant=variant,
        init_lora_weights=False)).eval()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(input_ids=ids).logits
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_triton_kernels_step_aside_inside_torch_compile(monkeypatch):
    """Inside torch.compile the branch takes its torch path (inductor fuses it), never the Triton kernel."""
    from hyplora.adapter import kernels

    monkeypatch.setenv("HYPLORA_TRITON", "interpret")
    x, A = torch.randn(3, 8), torch.randn(4, 8)
    if not kernels.usable(x, A, "lorentz"):
        pytest.skip("the Triton interpreter is not available here")
    seen = []

    def probe(t):
        seen.append(kernels.usable(t, A, "lorentz"))
        return t * 2

    torch._dynamo.reset()
    torch.compile(probe, backend="aot_eager", fullgraph=True)(x)
    assert seen == [False]


@pytest.mark.parametrize(("variant", "operation"), [
    ("lorentz", "gated_terms"), ("stereographic", "gated_terms"), ("lorentz", "gated_backward_terms"),
    ("stereographic", "gated_backward_terms"), ("lorentz-full", "lorentz_full_terms"),
    ("lorentz-full", "lorentz_full_backward_terms")])
def test_gates_enter_the_compiled_graph_as_one_opaque_operation(variant, operation):
    """Traced, the gate formulas would be hundreds of elementwise nodes per layer, which inductor takes minutes to
    compile for a whole model; as a torch.library operation they are one node (the Triton kernel on a GPU)."""
    model = peft.get_peft_model(make_tiny_llama(), HypLoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"], variant=variant, init_lora_weights=False))
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module.print_readable(print_output=False))
        return graph_module.forward

    torch._dynamo.reset()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    torch.compile(model, backend=recording_backend, fullgraph=True)(input_ids=ids, labels=ids).loss.backward()
    code = "\n".join(graphs)
    assert code.count(f"torch.ops.hyplora.{operation}") >= 4  # q_proj and up_proj of both layers
    assert "asinh" not in code  # the gate formulas themselves stay out of the graph


def test_opaque_operations_pass_torch_library_opcheck():
    """Schema, fake (meta) implementation and real implementation agree: shapes, strides and dtypes as the
    compiled graph assumes them (a mismatch surfaces only inside inductor's generated code otherwise)."""
    g = torch.Generator().manual_seed(4)
    rows, d_in, d_out, rank = 9, 12, 10, 4
    x, A, B = (torch.randn(rows, d_in, generator=g), torch.randn(rank, d_in, generator=g),
               torch.randn(d_out, rank, generator=g))
    log_ratios = torch.tensor([0.2, -0.1])
    a_raw, norm_x = x @ A.t(), torch.linalg.vector_norm(x, dim=-1)
    a_time, B_full = torch.randn(rank, generator=g), torch.randn(d_out, rank + 1, generator=g)  # time first
    q, coef, gram_a = torch.randn(rows, rank, generator=g), torch.randn(rows, 5, generator=g), a_raw @ (B.t() @ B)
    cases = [
        (torch.ops.hyplora.gated_terms.default, (a_raw, norm_x, B, log_ratios, 1.0, 2.0, "lorentz", 2.0, 12.0)),
        (torch.ops.hyplora.gated_backward_terms.default, (q, a_raw, coef, gram_a, B, torch.randn_like(B))),
        (torch.ops.hyplora.lorentz_full_terms.default,
         (a_raw, a_time, norm_x, B_full, log_ratios, 1.0, 2.0, 2.0, 12.0)),
    ]
    point = torch.randn(rows, rank + 1, generator=g)
    point[:, 0] = point[:, 0].abs() + 1.0
    full_backward = (torch.randn(rows, rank + 1, generator=g), a_raw, point, torch.randn(rows, rank + 1, generator=g),
                     torch.randn(rows, 4, generator=g), torch.randn(rows, 4, 3, generator=g), a_time, B_full,
                     torch.randn_like(B_full))
    cases.append((torch.ops.hyplora.lorentz_full_backward_terms.default, full_backward))
    for operation, args in cases:
        torch.library.opcheck(operation, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("variant", ["lorentz", "lorentz-full"])
def test_compiled_backward_reads_bfloat16_x_by_its_bits(variant, monkeypatch):
    """In a bf16 model the compiled backward's ``w x`` term takes x's bits moved up (`functional._w_term_input`),
    not the float32 cast that inductor would read from memory; gradients as eager's, and with
    `functional.W_TERM_FROM_BITS` off the graph goes back to the cast."""
    from hyplora.adapter import functional

    model = peft.get_peft_model(make_tiny_llama().to(torch.bfloat16), HypLoraConfig(
        r=4, lora_alpha=8, target_modules=["up_proj"], variant=variant, init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    embeddings = model.get_input_embeddings()

    def graph_and_grads(bits: bool):
        monkeypatch.setattr(functional, "W_TERM_FROM_BITS", bits)
        graphs = []

        def recording_backend(graph_module, example_inputs):
            graphs.append(graph_module.print_readable(print_output=False))
            return graph_module.forward

        torch._dynamo.reset()
        model.zero_grad(set_to_none=True)
        inputs = embeddings(ids).detach().requires_grad_()
        run = torch.compile(model, backend=recording_backend, fullgraph=True)
        run(inputs_embeds=inputs, labels=ids).loss.backward()
        return "\n".join(graphs), inputs.grad

    code, grad = graph_and_grads(True)
    cast_code, cast_grad = graph_and_grads(False)
    assert code.count("lshift") >= 2 and "lshift" not in cast_code  # up_proj of both layers
    model.zero_grad(set_to_none=True)
    inputs = embeddings(ids).detach().requires_grad_()
    model(inputs_embeds=inputs, labels=ids).loss.backward()
    assert torch.equal(grad, cast_grad)  # the same values either way
    torch.testing.assert_close(grad, inputs.grad, rtol=0, atol=0)
