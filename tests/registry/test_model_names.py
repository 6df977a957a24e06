from pathlib import Path

import pytest

from corral.registry.errors import InvalidName
from corral.registry.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName, slug


@pytest.mark.parametrize(
    ("text", "parts", "short"),
    [
        ("smollm2:135m", (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", "135m"), "smollm2:135m"),
        ("smollm2", (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", "latest"), "smollm2:latest"),
        ("me/mine:v1.0", (DEFAULT_HOST, "me", "mine", "v1.0"), "me/mine:v1.0"),
        ("hf.co/org/repo:q4_k_m", ("hf.co", "org", "repo", "q4_k_m"), "hf.co/org/repo:q4_k_m"),
        (
            "localhost:5000/ns/m",
            ("localhost:5000", "ns", "m", "latest"),
            "localhost:5000/ns/m:latest",
        ),
        ("  SmolLM2:135M ", (DEFAULT_HOST, DEFAULT_NAMESPACE, "smollm2", "135m"), "smollm2:135m"),
        (
            f"{DEFAULT_HOST}/{DEFAULT_NAMESPACE}/x:y",
            (DEFAULT_HOST, DEFAULT_NAMESPACE, "x", "y"),
            "x:y",
        ),
        (
            "other.host/library/x",
            ("other.host", "library", "x", "latest"),
            "other.host/library/x:latest",
        ),
    ],
)
def test_good_names(text: str, parts: tuple[str, str, str, str], short: str) -> None:
    name = ModelName.parse(text)
    assert (name.host, name.namespace, name.model, name.tag) == parts
    assert str(name) == short
    assert ModelName.parse(str(name)) == name
    assert ModelName.parse(name.full) == name


def test_comparison_is_case_insensitive() -> None:
    assert ModelName.parse("SmolLM2:135M") == ModelName.parse("smollm2:135m")
    assert ModelName.parse("Me/Model") == ModelName.parse("me/model:latest")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the name is empty"),
        ("   ", "the name is empty"),
        ("../x", "'..' is not allowed in the namespace"),
        ("x/../../etc", "4 '/'-separated parts"),
        ("a/b/c/d", "4 '/'-separated parts"),
        ("a" * 300, "longer than 255 characters"),
        ("m" * 129, "the model is longer than 128 characters"),
        ("x:" + "t" * 129, "the tag is longer than 128 characters"),
        ("/x", "the namespace is empty"),
        ("x/", "the model is empty"),
        (":tag", "the model is empty"),
        ("model:", "the tag is empty"),
        ("a..b", "'..' is not allowed in the model"),
        (".hidden", "the model '.hidden' may only contain"),
        ("-x", "the model '-x' may only contain"),
        ("x y", "the model 'x y' may only contain"),
        ("x\\y", "'\\' is not allowed"),
        ("x:a/b", "the namespace 'x:a' may only contain"),
        ("x:ta:g", "the model 'x:ta' may only contain"),
        ("x\x00y", "may only contain"),
        ("ho_st/ns/m", "the host 'ho_st' may only contain"),
        ("naïve", "may only contain"),
    ],
)
def test_bad_names(text: str, reason: str) -> None:
    with pytest.raises(InvalidName) as info:
        ModelName.parse(text)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message
    assert "names look like [host/][namespace/]model[:tag]" in message


def test_long_name_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidName) as info:
        ModelName.parse("a" * 300)
    message = str(info.value)
    assert "(300 characters)" in message
    assert len(message) < 200


def test_manifest_path_stays_under_root(tmp_path: Path) -> None:
    name = ModelName.parse("Me/Model:V1")
    path = name.manifest_path(tmp_path)
    assert path == (tmp_path / "manifests" / DEFAULT_HOST / "me" / "model" / "v1.yaml").resolve()
    forged = ModelName(host="..", namespace="..", model="..", tag="x")  # bypassing parse()
    with pytest.raises(InvalidName):
        forged.manifest_path(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1", "smollm2-135m-instruct.q4_1"),
        ("..weird  name!!", "weird-name"),
        ("___", "model"),
        ("a..b", "a.b"),
    ],
)
def test_slug_makes_valid_parts(text: str, expected: str) -> None:
    assert slug(text) == expected
    ModelName.parse(expected)


def test_names_in_errors_keep_their_letters_and_escape_what_would_break_the_line() -> None:
    from corral.registry.errors import shown

    assert shown("modèle:été") == "modèle:été"
    assert shown("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    assert shown("x" * 100).endswith("... (100 characters)")
