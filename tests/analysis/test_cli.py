"""`hyplora analyze` end to end on SmolLM2 (loaded once, from the session fixture), and its errors."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hyplora.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ["rank_frequency.png", "frequency_distribution.png", "frequency_vs_norm.png",
           "delta_hyperbolicity.png", "hierarchy.png"]
# Short on purpose: the first prompt's δ is checked against a brute-force loop over all its quadruples.
RECORDS = [
    {"instruction": "How many apples does a dog have?", "input": "", "output": "", "answer": "0"},
    {"instruction": "A farmer has 12 cows and buys 7 more. How many cows does he have now?", "input": ""},
    {"instruction": "Tom reads 380 pages in 4 days.", "input": "How many pages does he read per day?"},
    {"instruction": "The red banana costs 3 dollars and the purple apple 5. What is the total cost?"},
    {"instruction": "Is a small animal the same size as a large animal? Answer yes or no."},
    {"instruction": "She has 480 marbles, gives away half, then buys 20. How many does she have?"},
]


# A local data directory with the benchmark files these tests name (LLM-Adapters format), so that they do not
# depend on ../shared/data being present.
LOCAL_BENCHMARK = [
    {"instruction": f"Sam has {a} apples and buys {b} more. How many apples does he have now?", "input": "",
     "output": f"{a} + {b} = {a + b}. The answer is {a + b}", "answer": str(a + b)}
    for a, b in [(3, 4), (10, 5), (7, 8), (21, 2), (9, 9), (14, 6)]
]


def data_dir_args(tmp_path: Path) -> list[str]:
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True, exist_ok=True)
    for name in ("mawps", "gsm8k"):
        (root / "test" / f"{name}.json").write_text(json.dumps(LOCAL_BENCHMARK))
    return ["--data-dir", str(root)]


def brute_force_relative_delta(points: torch.Tensor) -> float:
    d = torch.cdist(points.double(), points.double()).numpy()
    best = 0.0
    for a, b, c, e in itertools.combinations(range(len(d)), 4):
        sums = sorted([d[a, b] + d[c, e], d[a, c] + d[b, e], d[a, e] + d[b, c]])
        best = max(best, (sums[2] - sums[1]) / 2)
    return 2 * best / d.max()


@pytest.fixture
def use_session_smollm2(monkeypatch, _smollm2_pristine, smollm2_tokenizer):
    """Make the CLI's model loading return copies of the session's SmolLM2 instead of re-reading the GGUF."""
    import hyplora.models

    monkeypatch.setattr(hyplora.models, "load_model", lambda name, **kwargs: copy.deepcopy(_smollm2_pristine))
    monkeypatch.setattr(hyplora.models, "load_tokenizer", lambda name, **kwargs: smollm2_tokenizer)
    return _smollm2_pristine, smollm2_tokenizer


@pytest.mark.slow
def test_analyze_end_to_end_with_adapter(tmp_path, use_session_smollm2):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tokenizer = use_session_smollm2
    data_file = tmp_path / "tiny.json"
    data_file.write_text(json.dumps(RECORDS))
    adapter_dir = tmp_path / "adapter"
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:  # a trained-looking adapter: B = 0 would leave the states unchanged
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(adapter_dir)

    out = tmp_path / "out"
    code = main(["analyze", "--datasets", f"{data_file},mawps", "--max-prompts", "5", "--output-dir", str(out),
                 "--adapter", str(adapter_dir), "--reference-points", "40", "--quiet", *data_dir_args(tmp_path)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES + ["analysis.json", "report.md"])
    for figure in FIGURES:
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC
    results = json.loads((out / "analysis.json").read_text())
    report = (out / "report.md").read_text()
    assert "tiny" in report and "mawps" in report and "δ-hyperbolicity" in report

    # Frequencies: recount independently with the tokenizer.
    texts = [r["instruction"] + (f"\n{r['input']}" if r.get("input") else "") for r in RECORDS[:5]]
    expected = np.zeros(model.get_input_embeddings().weight.shape[0], dtype=int)
    for text in texts:
        np.add.at(expected, tokenizer(text, add_special_tokens=False)["input_ids"], 1)
    tiny = results["frequency"]["tiny"]
    assert tiny["n_prompts"] == 5 and tiny["n_tokens"] == expected.sum()
    assert tiny["rank_frequency"]["count"] == sorted(expected[expected > 0].tolist(), reverse=True)
    assert results["frequency"]["mawps"]["n_prompts"] == 5

    # δ of the first prompt's input embeddings and final hidden states (base and adapter) by brute force.
    ids = list(dict.fromkeys(tokenizer(texts[0], add_special_tokens=False)["input_ids"]))
    embeddings = model.get_input_embeddings().weight.detach()
    delta = results["delta"]
    assert delta["input_embeddings"]["tiny"]["relative_delta"][0] == pytest.approx(
        brute_force_relative_delta(embeddings[ids]), abs=1e-9)
    encoded = tokenizer(texts[0], return_tensors="pt")
    adapted = PeftModel.from_pretrained(copy.deepcopy(model), adapter_dir).eval()
    for key, network in (("final_hidden_base", model), ("final_hidden_adapter", adapted)):
        with torch.no_grad():
            states = network(**encoded, output_hidden_states=True).hidden_states[-1][0]
        assert delta[key]["tiny"]["relative_delta"][0] == pytest.approx(brute_force_relative_delta(states), abs=1e-5)
    assert delta["final_hidden_adapter"]["tiny"]["relative_delta"] != delta["final_hidden_base"]["tiny"]["relative_delta"]
    for representation in delta.values():
        for summary in representation.values():
            assert all(0.0 <= v <= 1.0 for v in summary["relative_delta"])
            assert all(b <= e + 1e-9 for b, e in zip(summary["first_token_base"]["relative_delta"], summary["relative_delta"]))

    # Frequency vs norm and the group table use whole-word tokens of this tokenizer.
    norms = torch.linalg.vector_norm(embeddings.double(), dim=1).numpy()
    groups = {g["group"]: g for g in results["frequency_vs_norm"]["groups"]}
    dog = next(e for e in groups["instances"]["entries"] if e["word"] == "dog")
    assert tokenizer.decode([dog["token_id"]]).strip() == "dog"
    assert dog["norm"] == pytest.approx(norms[dog["token_id"]])
    assert -1.0 <= results["frequency_vs_norm"]["spearman"]["rho"] <= 1.0
    references = {r["space"]: r for r in results["references"]}
    assert references["tree"]["mean"] == 0.0 and references["sphere"]["mean"] > 0.8


def run_cli(args, capsys):
    code = main(["analyze", *args])
    return code, capsys.readouterr().err


def test_unknown_dataset_is_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(["--datasets", "gsm8k,nonsense", "--output-dir", str(out), *data_dir_args(tmp_path)], capsys)
    assert code == 2
    assert "hyplora analyze: error: unknown task 'nonsense'" in err
    assert not out.exists()


def test_empty_text_is_exit_2(tmp_path, capsys):
    data_file = tmp_path / "bad.json"
    data_file.write_text(json.dumps([{"instruction": "fine"}, {"instruction": "   ", "input": ""}]))
    out = tmp_path / "out"
    code, err = run_cli(["--datasets", str(data_file), "--output-dir", str(out)], capsys)
    assert code == 2 and "record 1 has an empty instruction" in err
    assert not out.exists()


def test_missing_data_file_and_unknown_model_are_exit_2(tmp_path, capsys):
    code, err = run_cli(["--datasets", str(tmp_path / "none.json"), "--output-dir", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such data file" in err
    code, err = run_cli(["--model", "no-such-model", "--datasets", "mawps", "--output-dir", str(tmp_path / "o"),
                         *data_dir_args(tmp_path)], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err
    assert not (tmp_path / "o").exists()


def test_model_without_input_embeddings_is_exit_2(tmp_path, capsys, monkeypatch):
    import hyplora.models

    class NoEmbeddings(torch.nn.Module):
        def get_input_embeddings(self):
            return None

    class CharacterTokenizer:
        def __call__(self, text, add_special_tokens=False, **kwargs):
            return {"input_ids": [ord(c) % 128 for c in text]}

    monkeypatch.setattr(hyplora.models, "load_model", lambda name, **kwargs: NoEmbeddings())
    monkeypatch.setattr(hyplora.models, "load_tokenizer", lambda name, **kwargs: CharacterTokenizer())
    out = tmp_path / "out"
    code, err = run_cli(["--datasets", "mawps", "--max-prompts", "2", "--output-dir", str(out), *data_dir_args(tmp_path)], capsys)
    assert code == 2 and "has no input-embedding matrix" in err
    assert not out.exists()


def test_output_dir_that_is_a_file_is_exit_2(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, err = run_cli(["--datasets", "mawps", "--output-dir", str(target), *data_dir_args(tmp_path)], capsys)
    assert code == 2 and "not a directory" in err
