"""The runner: per-example JSON lines, resume after an interruption, summary and group averages, bad input."""

from __future__ import annotations

import json

import pytest

from hyplora.errors import HypLoraUserError
from hyplora.evaluate import generation
from hyplora.evaluate.generation import Generated
from hyplora.evaluate.runner import EvalSettings, group_averages, read_results, run_evaluation


def settings(tmp_path, data, **kwargs):
    base = dict(model="tiny", tasks=["gsm8k"], output_dir=str(tmp_path / "out"), data_dir=str(data),
                max_new_tokens=6, batch_size=4, progress=False)
    base.update(kwargs)
    return EvalSettings(**base)


@pytest.fixture
def spy(monkeypatch):
    """Records every prompt the runner sends to generation (the real generator still runs)."""
    calls: list[list[str]] = []
    real = generation.iter_generate

    def spying(model, tokenizer, prompts, **kwargs):
        calls.append(list(prompts))
        yield from real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(generation, "iter_generate", spying)
    return calls


def scripted(monkeypatch, answer_for):
    """Replace generation with outputs computed from the prompt (no model involved)."""

    def fake(model, tokenizer, prompts, **kwargs):
        batch = kwargs.get("batch_size", 4)
        for start in range(0, len(prompts), batch):
            yield [Generated(i, answer_for(prompts[i]), 3, True) for i in range(start, min(len(prompts), start + batch))]

    monkeypatch.setattr(generation, "iter_generate", fake)


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_writes_records_summary_and_table(tmp_path, small_data, tiny_pair):
    model, tokenizer = tiny_pair
    summary = run_evaluation(settings(tmp_path, small_data, tasks=["gsm8k", "boolq"]), model, tokenizer,
                             log=lambda *a: None)
    out = tmp_path / "out"
    records = lines(out / "gsm8k.jsonl")
    assert sorted(r["index"] for r in records) == list(range(6))
    for record in records:
        assert set(record) >= {"id", "prompt", "output", "extracted", "gold", "correct"}
        assert record["prompt"].startswith("Below is an instruction")
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["tasks"]["gsm8k"]["n"] == 6 and on_disk["tasks"]["boolq"]["n"] == 5
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("model", "adapter", "seed", "generation", "versions", "protocol", "device", "groups"):
        assert key in on_disk
    assert on_disk["generation"]["max_new_tokens"] == {"gsm8k": 6, "boolq": 6}
    assert on_disk["generation"]["dtype"] == "float32" and on_disk["generation"]["decoding"] == "greedy"
    assert (out / "results.md").read_text().count("| gsm8k |") == 1
    assert not list(out.glob(".*.tmp"))


def test_resume_generates_only_missing_examples(tmp_path, small_data, tiny_pair, spy):
    model, tokenizer = tiny_pair
    config = settings(tmp_path, small_data)
    run_evaluation(config, model, tokenizer, log=lambda *a: None)
    path = tmp_path / "out" / "gsm8k.jsonl"
    first = {r["id"]: r for r in lines(path)}
    assert len(spy) == 1 and len(spy[0]) == 6

    # drop two finished records and leave a line cut short by a crash
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["index"] not in (1, 4)]
    cut = json.dumps(first["gsm8k/1"])[:40]
    path.write_text("\n".join(kept) + "\n" + cut)
    summary = run_evaluation(settings(tmp_path, small_data), model, tokenizer, log=lambda *a: None)
    assert len(spy) == 2
    regenerated = sorted(spy[1], key=len)
    assert regenerated == sorted([first["gsm8k/1"]["prompt"], first["gsm8k/4"]["prompt"]], key=len)
    after = lines(path)  # every line parses: the cut line is gone
    assert sorted(r["index"] for r in after) == list(range(6))
    assert {r["id"]: r["output"] for r in after} == {k: r["output"] for k, r in first.items()}
    assert summary["tasks"]["gsm8k"]["n"] == 6 and summary["complete"]

    # a complete run is not generated again, not even loaded: the device that generated stays on record
    summary = run_evaluation(settings(tmp_path, small_data), None, None, log=lambda *a: None)
    assert len(spy) == 2
    assert summary["device"].endswith("(CPU, %d threads)" % __import__("os").cpu_count())


def test_interrupted_run_keeps_finished_batches(tmp_path, small_data, tiny_pair, monkeypatch):
    model, tokenizer = tiny_pair
    real = generation.iter_generate

    def interrupted(model, tokenizer, prompts, **kwargs):
        for k, batch in enumerate(real(model, tokenizer, prompts, **kwargs)):
            if k == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(generation, "iter_generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(settings(tmp_path, small_data, batch_size=2), model, tokenizer, log=lambda *a: None)
    out = tmp_path / "out"
    assert len(lines(out / "gsm8k.jsonl")) == 2
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(generation, "iter_generate", real)
    summary = run_evaluation(settings(tmp_path, small_data, batch_size=2), model, tokenizer, log=lambda *a: None)
    assert summary["tasks"]["gsm8k"]["n"] == 6 and len(lines(out / "gsm8k.jsonl")) == 6


def test_resume_refuses_other_settings(tmp_path, small_data, tiny_pair):
    model, tokenizer = tiny_pair
    run_evaluation(settings(tmp_path, small_data, limit=2), model, tokenizer, log=lambda *a: None)
    with pytest.raises(HypLoraUserError, match="num_beams"):
        run_evaluation(settings(tmp_path, small_data, num_beams=2), model, tokenizer, log=lambda *a: None)
    with pytest.raises(HypLoraUserError, match="max_new_tokens"):
        run_evaluation(settings(tmp_path, small_data, max_new_tokens=9), model, tokenizer, log=lambda *a: None)
    # a larger --limit and another batch size extend the same run
    summary = run_evaluation(settings(tmp_path, small_data, limit=4, batch_size=1), model, tokenizer,
                             log=lambda *a: None)
    assert summary["tasks"]["gsm8k"]["n"] == 4


def test_malformed_line_is_a_user_error(tmp_path, small_data, tiny_pair):
    model, tokenizer = tiny_pair
    run_evaluation(settings(tmp_path, small_data, limit=2), model, tokenizer, log=lambda *a: None)
    path = tmp_path / "out" / "gsm8k.jsonl"
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(HypLoraUserError, match="line 1"):
        run_evaluation(settings(tmp_path, small_data, limit=2), model, tokenizer, log=lambda *a: None)


def test_changed_data_is_detected(tmp_path, small_data, tiny_pair, write_records):
    model, tokenizer = tiny_pair
    run_evaluation(settings(tmp_path, small_data, limit=2), model, tokenizer, log=lambda *a: None)
    write_records(small_data / "test" / "gsm8k.json",
                  [{"instruction": "Something else?", "input": "", "output": "", "answer": "1"}] * 3)
    with pytest.raises(HypLoraUserError, match="another prompt"):
        run_evaluation(settings(tmp_path, small_data, limit=2), model, tokenizer, log=lambda *a: None)


def test_read_results_ignores_cut_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "gsm8k/0", "index": 0, "output": "a"}\n{"id": "gsm8k/1", "ind')
    assert list(read_results(path)) == ["gsm8k/0"]
    assert path.read_text().endswith('"ind')  # reading alone does not modify
    read_results(path, repair=True)
    assert path.read_text() == '{"id": "gsm8k/0", "index": 0, "output": "a"}\n'


def test_scores_and_group_averages(tmp_path, small_data, monkeypatch, write_records):
    # gsm8k answers a+b; the scripted model is right when a < 10; aqua right on A and B; boolq always "true"
    for name, file in [("mawps", "mawps.json"), ("svamp", "SVAMP.json")]:
        write_records(small_data / "test" / file,
                      [{"instruction": f"{name} {k}: What is {k} plus 0?", "input": "", "output": "",
                        "answer": str(k)} for k in range(4)])

    def answer(prompt):
        if "Answer Choices" in prompt:
            letter = prompt.split("Pick ")[1][0]
            return f"The answer is ({letter})." if letter in "AB" else "Because A is small."
        if "true/false" in prompt:
            return "the correct answer is TRUE"
        words = prompt.split("What is ")[1].split("?")[0].split(" plus ")
        a, b = int(words[0]), int(words[1])
        return f"{a} + {b} = {a + b}. The answer is {a + b}." if a < 10 else "I do not know"

    scripted(monkeypatch, answer)
    summary = run_evaluation(settings(tmp_path, small_data, tasks=["math", "boolq"]), object(), object(),
                             log=lambda *a: None)
    tasks = summary["tasks"]
    assert (tasks["gsm8k"]["correct"], tasks["gsm8k"]["n"], tasks["gsm8k"]["unparseable"]) == (4, 6, 2)
    assert (tasks["aqua"]["correct"], tasks["aqua"]["unparseable"]) == (2, 2)
    assert tasks["mawps"]["accuracy"] == 1.0 and tasks["svamp"]["accuracy"] == 1.0
    assert tasks["boolq"]["correct"] == 3  # n = 0, 2, 4 are even
    # M.AVG is the micro average over the four math tasks: (4 + 2 + 4 + 4) / (6 + 4 + 4 + 4)
    assert summary["groups"]["M.AVG"]["value"] == pytest.approx(14 / 18)
    assert "AVG" not in summary["groups"]  # commonsense is incomplete
    # the reference protocol's accuracy is reported too
    assert tasks["aqua"]["accuracy_by_protocol"]["reference"] == pytest.approx(0.5)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "M.AVG" in table and "77.8" in table


def test_commonsense_macro_average():
    stats = {t: {"complete": True, "n": 10, "correct": c, "accuracy": c / 10}
             for t, c in zip(["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "arc_easy",
                              "arc_challenge", "openbookqa"], [1, 2, 3, 4, 5, 6, 7, 8])}
    assert group_averages(stats)["AVG"]["value"] == pytest.approx(0.45)
    stats["piqa"]["n"] = 1000  # macro: sizes do not weigh
    assert group_averages(stats)["AVG"]["value"] == pytest.approx(0.45)


def test_hellaswag_is_reported_as_approximate(tmp_path, small_data, monkeypatch, write_records):
    write_records(small_data / "test" / "hellaswag_approx.json",
                  [{"instruction": "Choose. Ending1: a Ending2: b", "input": "", "output": "", "answer": "ending2"}])
    scripted(monkeypatch, lambda prompt: "the correct answer is ending2")
    summary = run_evaluation(settings(tmp_path, small_data, tasks=["hellaswag"]), object(), object(),
                             log=lambda *a: None)
    assert summary["tasks"]["hellaswag"]["approximate"] is True
    assert any("approximate" in note for note in summary["notes"])
    assert "approximate" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tasks=["gsm8k", "nope"]), "unknown task"),
        (dict(task_files={"gsm8k": "/no/such/file.json"}), "no such data file"),
        (dict(num_beams=0), "num-beams"),
        (dict(adapter="/no/such/adapter"), "does not exist"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, small_data, change, message):
    with pytest.raises(HypLoraUserError, match=message):
        run_evaluation(settings(tmp_path, small_data, **change), log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_malformed_record_and_bad_gold(tmp_path, small_data, write_records):
    bad = small_data / "test" / "bad.json"
    write_records(bad, [{"instruction": "q", "input": ""}])
    with pytest.raises(HypLoraUserError, match="answer"):
        run_evaluation(settings(tmp_path, small_data, task_files={"gsm8k": str(bad)}), log=lambda *a: None)
    write_records(bad, [{"instruction": "q", "input": "", "output": "", "answer": "maybe"}])
    with pytest.raises(HypLoraUserError, match="not a valid boolq answer"):
        run_evaluation(settings(tmp_path, small_data, tasks=["boolq"], task_files={"boolq": str(bad)}),
                       log=lambda *a: None)
    assert not (tmp_path / "out").exists()
