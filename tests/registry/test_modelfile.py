"""Modelfiles in both syntaxes: what they say, and one-line errors naming the line."""

from pathlib import Path

import pytest

from corral.registry.modelfile import Modelfile, ModelfileError
from corral.registry.modelfile_parse import is_yaml, parse_modelfile

TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"

CLASSIC = '''# a comment, then instructions in any case
FROM ./tiny.gguf
parameter temperature 0.25
PARAMETER top_k 30
PARAMETER stop <|im_end|>
PARAMETER stop "<|endoftext|>"
Template """{% for m in messages %}{{ m['content'] }}
{% endfor %}"""
SYSTEM """You are terse.
Answer in one line."""
MESSAGE user Hello there
MESSAGE assistant """Hi.
How can I help?"""
LICENSE apache-2.0
'''

YAML = """# the same, in corral's YAML
from: ./tiny.gguf
parameters:
  temperature: 0.25
  top_k: 30
  stop: ["<|im_end|>", "<|endoftext|>"]
template: "{% for m in messages %}{{ m['content'] }}\\n{% endfor %}"
system: |-
  You are terse.
  Answer in one line.
messages:
  - {role: user, content: Hello there}
  - role: assistant
    content: "Hi.\\nHow can I help?"
license: apache-2.0
"""


def expected(folder: Path) -> Modelfile:
    return Modelfile(
        from_=str(folder / "tiny.gguf"),
        parameters={"temperature": 0.25, "top_k": 30, "stop": ["<|im_end|>", "<|endoftext|>"]},
        template=TEMPLATE,
        system="You are terse.\nAnswer in one line.",
        messages=(
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hi.\nHow can I help?"},
        ),
        license="apache-2.0",
    )


@pytest.mark.parametrize("text", [CLASSIC, YAML], ids=["classic", "yaml"])
def test_both_syntaxes_say_the_same(text: str, tmp_path: Path) -> None:
    assert parse_modelfile(text, base_dir=tmp_path) == expected(tmp_path)


def test_syntax_is_told_by_content() -> None:
    assert is_yaml(YAML) and not is_yaml(CLASSIC)
    assert is_yaml("\n# x\n---\nfrom: a\n") and is_yaml("{from: a}")
    assert not is_yaml("FROM hf.co/org/repo:Q4_K_M\n")
    assert not is_yaml("from smollm2:135m\n")  # a classic instruction, lower case


def test_names_and_sources_are_kept_and_bare_files_resolve(tmp_path: Path) -> None:
    hubs = ("hf://org/repo", "hf.co/org/repo:Q8_0", "ms://org/r", "modelscope.cn/org/r:Q8_0")
    for base in ("smollm2:135m", *hubs, "pypi://pkg==1/x.gguf", "/abs/m.gguf"):
        assert parse_modelfile(f"FROM {base}\n", base_dir=tmp_path).from_ == base
    (tmp_path / "ckpt").mkdir()  # a bare word naming a folder beside the Modelfile is a path
    assert parse_modelfile("FROM ckpt\n", base_dir=tmp_path).from_ == str(tmp_path / "ckpt")
    assert parse_modelfile("from: ckpt\n", base_dir=None).from_ == "ckpt"  # a name then


def test_empty_values_clear_and_repeated_ones_accumulate(tmp_path: Path) -> None:
    mf = parse_modelfile(
        'FROM x\nSYSTEM """"""\nSYSTEM "last wins"\nLICENSE a\nLICENSE """b\nc"""\n'
    )
    assert mf.system == "last wins"
    assert mf.license == "a\n\nb\nc"
    assert parse_modelfile('FROM x\nSYSTEM """"""\n').system == ""
    assert parse_modelfile("from: x\nmessages: []\n").messages == ()
    assert parse_modelfile("from: x\ntemplate: null\n").template is None  # null keeps


def test_request_fields_override_a_modelfile(tmp_path: Path) -> None:
    mf = parse_modelfile("FROM x\nPARAMETER temperature 1\nPARAMETER seed 3\n")
    over = mf.overridden({"parameters": {"seed": 4}, "system": "s", "quantize": "q8_0"}, tmp_path)
    assert over.parameters == {"temperature": 1, "seed": 4}
    assert (over.system, over.quantize, over.from_) == ("s", "Q8_0", "x")
    assert mf.overridden({"from": "./m.gguf"}, tmp_path).from_ == str(tmp_path / "m.gguf")


CLASSIC_ERRORS = [
    ("FROM x\nPARAMETER temprature 1\n", 2, "unknown parameter 'temprature' (known: stop,"),
    ("FROM x\n\nPARAMETER top_k high\n", 3, "parameter 'top_k' must be an integer, got high"),
    ("FROM x\nPARAMETER top_p 2\n", 2, "parameter 'top_p' must be between 0 and 1, got 2"),
    ("FROM x\nPARAMETER stop\n", 2, "PARAMETER needs a name and a value"),
    ("FROM x\nFOO bar\n", 2, "expected an instruction (FROM, PARAMETER, TEMPLATE, SYSTEM,"),
    ("FROM x\nSYSTEM\n", 2, "SYSTEM needs a value"),
    ('FROM x\n# c\nTEMPLATE """{{ x }}\nmore\n', 3, 'the """ opened here is never closed'),
    ('FROM x\nSYSTEM "open\n', 2, 'the " opened here is never closed'),
    ("FROM x\nMESSAGE robot hi\n", 2, "message role must be one of system, user, assistant"),
    ("FROM x\nMESSAGE user\n", 2, "MESSAGE needs a role and text"),
    ("FROM x\nTEMPLATE {{ .Prompt \n", 2, "not a valid Go template as in Ollama's Modelfiles"),
    ("FROM x\nTEMPLATE {{ x(1 }}\n", 2, "neither a Jinja chat template (line 1: unexpected '}'"),
    ("FROM x\nADAPTER ./lora.gguf\n", 2, "ADAPTER: adapters (LoRA) are not supported"),
    ("FROM a\nFROM b\n", 2, "a second FROM"),
    ("FROM x\nREQUIRES latest\n", 2, "REQUIRES needs a version such as 0.14.0, got latest"),
    ("FROM ./m.gguf\n", 1, "is a relative path, and there is no Modelfile folder"),
]


@pytest.mark.parametrize(("text", "line", "problem"), CLASSIC_ERRORS)
def test_malformed_classic_files_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text, origin="Modelfile")
    message = str(info.value)
    assert message.startswith(f"Modelfile line {line}: ")
    assert problem in message
    assert "\n" not in message


YAML_ERRORS = [
    ("from: x\nparameters:\n  top_k: 1.5\n", 3, "parameter 'top_k' must be an integer, got 1.5"),
    ("from: x\nparameters:\n  temprature: 1\n", 3, "unknown parameter 'temprature'"),
    ("from: x\nparameters: [1]\n", 2, "'parameters' must map names to values"),
    ("from: x\nmessages:\n  - {role: user, content: a}\n  - {role: bot, content: b}\n", 4,
     "message role must be one of"),
    ("from: x\nquantize: Q9_Z\n", 2, "unknown quantization type 'Q9_Z'; choose one of: "),
    ("from: x\nsauce: 1\n", 2, "unknown field 'sauce' (known: from, quantize,"),
    ("from: x\nadapter: ./lora\n", 2, "adapters (LoRA) are not supported"),
    ("from: x\ntemplate: '{{ if .Prompt }}'\n", 2, "not a valid Go template as in Ollama's"),
    ("from: x\nsystem: [a]\n", 2, "'system' must be text, got a list"),
    ("from: [x\n", 2, "invalid YAML"),
    ("from: x\n  bad: indent\n", 2, "invalid YAML"),
    ("- from: x\n", 1, "expected a YAML mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "problem"), YAML_ERRORS)
def test_malformed_yaml_files_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text, origin="my.yaml")
    message = str(info.value)
    assert message.startswith(f"my.yaml line {line}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "PARAMETER top_k 1\n", "system: x\n"])
def test_a_modelfile_without_from_says_so(text: str) -> None:
    with pytest.raises(ModelfileError, match=r"^Modelfile: (no FROM line|missing 'from')"):
        parse_modelfile(text)


@pytest.mark.parametrize(
    "text",
    [
        "FROM x\nPARAMETER mirostat 1\nPARAMETER num_gpu 99\nPARAMETER temperature 0.5\n"
        "PARAMETER draft_num_predict 4\n",  # every parameter Ollama's modelfile.md documents
        "from: x\nparameters:\n  mirostat: 1\n  num_gpu: 99\n  temperature: 0.5\n"
        "  draft_num_predict: 4\n",
    ],
)
def test_ollama_parameters_corral_does_not_use_are_skipped_with_a_warning(text: str) -> None:
    modelfile = parse_modelfile(text)
    assert modelfile.parameters == {"temperature": 0.5}
    line = 2 if text.startswith("FROM") else 3  # each warning names its line
    assert modelfile.warnings[:2] == (
        f"Modelfile line {line}: ignoring parameter 'mirostat': corral does not use it",
        f"Modelfile line {line + 1}: ignoring parameter 'num_gpu': corral does not use it",
    )
    over = modelfile.overridden({"parameters": {"tfs_z": 1}})
    assert over.warnings[-1] == "ignoring parameter 'tfs_z': corral does not use it"


def test_requires_names_a_version_of_ollama_and_is_skipped_with_a_warning() -> None:
    modelfile = parse_modelfile("FROM x\nrequires 0.14.0\nSYSTEM hi\n")
    assert modelfile == Modelfile(from_="x", system="hi", warnings=modelfile.warnings)
    expected = "Modelfile line 2: ignoring REQUIRES 0.14.0: it is the version of Ollama the"
    assert modelfile.warnings[0].startswith(expected)


def test_triple_quoted_blocks_keep_blank_lines_and_inner_spaces() -> None:
    text = (
        'FROM x\nSYSTEM """First.\n\nSecond.  \n\n\nThird."""\n'
        'TEMPLATE """{{ bos_token }}<|start_header_id|>user<|end_header_id|>\n\n'
        '{{ messages[0].content }}<|eot_id|>"""   \n'
        'PARAMETER stop """\n\n"""\n'
    )
    modelfile = parse_modelfile(text)
    assert modelfile.system == "First.\n\nSecond.  \n\n\nThird."
    assert parse_modelfile('FROM x\nSYSTEM """One. \t\nTwo."""\n').system == "One. \t\nTwo."
    assert parse_modelfile('FROM x\nMESSAGE user "a \nb" \n').messages == (
        {"role": "user", "content": "a \nb"},
    )
    assert modelfile.template is not None and "<|end_header_id|>\n\n{{" in modelfile.template
    assert modelfile.parameters["stop"] == ["\n\n"]


def test_yaml_aliases_are_refused() -> None:
    """An alias repeats a value without its size: 200 of them made a 1 MB create request
    write a 212 MB manifest (and 50,000 a 50 GB one)."""
    text = "from: tiny\nsystem: &s long\nmessages:\n  - &m {role: user, content: *s}\n  - *m\n"
    with pytest.raises(ModelfileError, match=r"line 4: .*aliases \(\*name\) are not allowed"):
        parse_modelfile(text)
