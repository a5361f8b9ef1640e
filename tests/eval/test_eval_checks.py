"""``quota eval`` refuses a question count that leaves nothing to score, and warns (one line on stderr) when
a recipe was solved for other testbed weights, as ``quota apply`` does. None of it loads the testbed."""

import pytest

from quota.cli.main import main
from quota.eval.run import check_limit, evaluate, warn_if_recipe_for_other_weights


@pytest.mark.parametrize("limit", ["0", "-2"])
@pytest.mark.parametrize("suite", [False, True])
def test_a_limit_below_one_is_refused_in_one_line(tmp_path, capsys, limit, suite):
    args = ["eval", "--limit", limit, "--device", "cpu"] + (["--suite", str(tmp_path / "s")] if suite else [])
    assert main(args) == 2
    assert capsys.readouterr().err == (f"quota eval: error: --limit must be a number of questions per task >= 1, "
                                       f"got {limit}\n")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="--limit"):
        evaluate(limit=int(limit))
    assert check_limit(None) is None and check_limit(3) == 3
    with pytest.raises(ValueError, match="--limit"):
        check_limit(True)


def _recipe(tmp_path, model_hash: str):
    from quota.recipe import Recipe, ScoringSpec
    from quota.testbed import model as testbed

    return Recipe(model_id=testbed.MODEL_ID, model_hash=model_hash, n_layers=30, n_visual_tokens=576,
                  schedule=(576,) * 30, scoring=ScoringSpec({"attn_last": 0.9, "magnitude": 0.1}),
                  quant=None).save(tmp_path / "r.json")


def test_a_recipe_of_other_weights_is_announced_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from quota.recipe import Recipe
    from quota.testbed import model as testbed

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(testbed, "load", load)
    path = _recipe(tmp_path, "0" * 64)
    with pytest.raises(Loaded):
        evaluate(recipe=path, limit=1, device="cpu")
    err = capsys.readouterr().err
    assert err == (f"[quota] warning: recipe {path} was solved for other testbed weights (model hash 000000000000, "
                   f"these weights {testbed.model_hash()[:12]})\n")
    same = _recipe(tmp_path, testbed.model_hash())
    with pytest.raises(Loaded):
        evaluate(recipe=same, limit=1, device="cpu")
    assert capsys.readouterr().err == ""
    assert warn_if_recipe_for_other_weights(Recipe.load(same), same, testbed.model_hash()) is True
