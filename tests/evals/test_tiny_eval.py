"""``gptoss eval tiny``: the harness agrees with the corpus, scores wrong answers as wrong, runs a real model."""

from __future__ import annotations

import argparse
import json

import pytest

from gptoss.agent import engine_source
from gptoss.cli import eval as eval_cli
from gptoss.engine.sampling import SamplingParams
from gptoss.evals.tiny import (
    check_browser,
    check_browser_fact,
    check_functions,
    check_json,
    check_json_valid,
    check_python,
    check_well_formed,
    contains_number,
    evaluate,
    heldout_tasks,
    replay_rounds,
    replay_source,
    run_task,
    run_tasks,
    run_tasks_batched,
    same_json,
    score_run,
    validate,
)
from gptoss.harmony.render import harmony_encoding
from gptoss.train.corpus import FAMILIES, generate_tasks
from gptoss.train.data import encode_conversation

PARAMS = SamplingParams(max_tokens=400, temperature=0)


@pytest.fixture(scope="module")
def tasks():
    return heldout_tasks(3, seed=1)


def one(tasks, family):
    return next(t for t in tasks if t.family == family)


def scripted(*texts: str):
    """A token source replaying one harmony text per round."""
    rounds = [harmony_encoding().encode(t, allowed_special="all") for t in texts]
    calls = iter(range(len(rounds)))

    def source(prompt, params):
        for n, tok in enumerate(rounds[next(calls)]):
            if n >= params.max_tokens:
                return
            yield tok
            if tok in params.stop:
                return

    return source


def test_replaying_the_corpus_scores_everything(tasks):
    report = evaluate(run_tasks(tasks, replay_source, PARAMS))
    assert {name: (row.n, row.score) for name, row in report.rows.items()} == {
        "well_formed": (15, 1.0), "python": (3, 1.0), "functions": (3, 1.0), "browser": (3, 1.0),
        "browser_fact": (3, 1.0), "json_valid": (3, 1.0), "json": (3, 1.0), "chat": (3, 1.0)}
    assert report.effort_ok or len({t.effort for t in tasks}) < 3
    assert report.to_json()["rows"]["python"]["score"] == 1.0


def _prompts_match_training(task) -> bool:
    run = run_task(task, replay_source(task), PARAMS)
    tokens = encode_conversation(task.messages).tokens
    return (all(tokens[:len(p) + len(r)] == p + r for p, r in zip(run.prompts, run.rounds, strict=True))
            and run.prompts[-1] + run.rounds[-1] == tokens)


def test_inference_prompts_equal_training_context():
    """What the model sees at eval time is, token for token, the context it was trained on."""
    for task in generate_tasks(20, seed=4, families=["python", "browser", "json", "chat"]):
        assert _prompts_match_training(task), task.meta()


def test_inference_prompts_equal_training_context_with_functions():
    """Declared functions add a line to the system message at inference; training must see it too."""
    for task in generate_tasks(5, seed=4, families=["functions"]):
        assert _prompts_match_training(task), task.meta()


def test_wrong_answers_fail(tasks):
    py = one(tasks, "python")
    call_round = harmony_encoding().decode(replay_rounds(py)[0])
    wrong_number = "<|channel|>final<|message|>It is 12345678.<|return|>"
    run = run_task(py, scripted(call_round, wrong_number), PARAMS)
    assert check_well_formed(run) and not check_python(run)
    bad_code = call_round.replace(py.expect["code"], "print(1 + 1)")
    run = run_task(py, scripted(bad_code, f"<|channel|>final<|message|>{py.expect['output']}<|return|>"), PARAMS)
    assert not check_python(run)

    fn = one(tasks, "functions")
    name, args = fn.expect["name"], fn.expect["arguments"]
    wrong = {k: (v + 1 if isinstance(v, int) else f"{v}x") for k, v in args.items()}
    for recipient, arguments in ((f"functions.{name}", wrong), ("functions.nope", args)):
        text = (f"<|channel|>commentary to={recipient} <|constrain|>json<|message|>{json.dumps(arguments)}"
                "<|call|>")
        run = run_task(fn, scripted(text, "<|channel|>final<|message|>ok<|return|>"), PARAMS)
        assert check_well_formed(run) and not check_functions(run)

    br = one(tasks, "browser")
    rounds = [harmony_encoding().decode(r) for r in replay_rounds(br)]
    uncited = rounds[-1].split("【")[0] + ".<|return|>"
    run = run_task(br, scripted(*rounds[:-1], uncited), PARAMS)
    assert not check_browser(run) and not check_browser_fact(run)
    cites_search_page = rounds[-1].replace("【1†", "【0†")
    run = run_task(br, scripted(*rounds[:-1], cites_search_page), PARAMS)
    assert not check_browser(run)

    js = one(tasks, "json")
    for answer in ("not json", json.dumps({**js.expect["value"], "extra": 1}),
                   json.dumps({k: str(v) for k, v in js.expect["value"].items()})):
        run = run_task(js, scripted(f"<|channel|>final<|message|>{answer}<|return|>"), PARAMS)
        assert not check_json(run)
        all_strings = all(isinstance(v, str) for v in js.expect["value"].values())
        assert check_json_valid(run) == (answer.startswith('{"') and "extra" not in answer and all_strings)
    # valid against the schema but a value not copied: json_valid passes, json does not
    wrong = {k: (v + 1 if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in js.expect["value"].items()}
    run = run_task(js, scripted(f"<|channel|>final<|message|>{json.dumps(wrong)}<|return|>"), PARAMS)
    assert check_json_valid(run) and check_json(run) == (wrong == js.expect["value"])


def test_malformed_harmony_is_not_well_formed(tasks):
    chat = one(tasks, "chat")
    for text in ("Hello without any header<|return|>",  # no channel: a recovery
                 "<|channel|>final<|message|>Hello<|end|>",  # stream ends without <|return|>
                 "<|channel|>analysis<|message|>hmm<|end|>stray<|channel|>final<|message|>Hello<|return|>"):
        run = run_task(chat, scripted(text), SamplingParams(max_tokens=60, temperature=0))
        assert not score_run(run)["well_formed"], text


def test_helpers():
    assert same_json({"a": 1, "b": [1.0, "x"]}, {"b": [1, "x"], "a": 1.0})
    assert not same_json({"a": True}, {"a": 1}) and not same_json(["1"], [1])
    assert contains_number("347 * 29 = 10063.", "10063") and not contains_number("100634", "10063")
    assert not contains_number("7.461", "7.46") and contains_number("is 7.46 miles", "7.46")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string", "enum": ["a"]}},
              "required": ["n", "s"], "additionalProperties": False}
    assert validate({"n": 1, "s": "a"}, schema) == []
    assert len(validate({"n": 1.5, "s": "b", "z": 0}, schema)) == 3
    assert validate({"n": True, "s": "a"}, schema) and validate([], schema)


def test_untrained_model_scores_without_crashing(tiny_checkpoint):
    import gptoss

    model = gptoss.load(tiny_checkpoint, dtype="float32")
    tasks = heldout_tasks(1, seed=0)
    params = SamplingParams(max_tokens=6, temperature=0)
    report = evaluate(run_tasks_batched(tasks, model.transformer, params, batch_size=3))
    assert report.rows["well_formed"].n == len(FAMILIES)
    assert report.rows["well_formed"].score == 0.0  # 6 random tokens never make a finished harmony answer
    assert all(r.n == 1 for name, r in report.rows.items() if name != "well_formed")
    assert json.dumps(report.to_json())
    # Batched rounds sample what one conversation at a time samples (greedy, float32).
    source = engine_source(model.transformer)
    one_by_one = [r.rounds for r in run_tasks(tasks[:2], lambda task: source, params)]
    assert [r.rounds for r in run_tasks_batched(tasks[:2], model.transformer, params)] == one_by_one


def _eval_args(*argv):
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_eval_cli_oracle(tmp_path, capsys):
    out = tmp_path / "scores.json"
    assert eval_cli.run(_eval_args("tiny", "--oracle", "--n", "2", "--json", str(out), "--strict")) == 0
    data = json.loads(out.read_text())
    assert all(r["score"] == 1.0 for r in data["rows"].values()) and len(data["runs"]) == 2 * len(FAMILIES)
    printed = capsys.readouterr().out
    assert "well_formed" in printed and "effort" in printed
    with pytest.raises(ValueError, match="--model PATH or --oracle, not both"):
        eval_cli.run(_eval_args("tiny", "--oracle", "--model", "x"))


def test_eval_cli_model(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = _eval_args("tiny", "--model", str(tiny_checkpoint), "--n", "1", "--max-tokens", "4", "--json", str(out),
                      "--strict")
    assert eval_cli.run(args) == 1  # an untrained model misses the targets
    data = json.loads(out.read_text())
    assert data["rows"]["well_formed"]["n"] == len(FAMILIES) and data["passed"] is False
    assert str(tiny_checkpoint) in data["model"] and "well_formed" in capsys.readouterr().out


def test_training_targets_are_exactly_what_the_model_samples():
    """Every token the eval needs the model to sample (each round, headers after its own <|end|> included) is a
    training target, and nothing else is: prompts and tool results are context only."""
    for task in generate_tasks(12, seed=5):
        ex = encode_conversation(task.messages)
        spans: list[list[int]] = []
        for i, (tok, learned) in enumerate(zip(ex.tokens, ex.mask, strict=True)):
            if learned:
                if i == 0 or not ex.mask[i - 1]:
                    spans.append([])
                spans[-1].append(tok)
        assert spans == replay_rounds(task), task.meta()
