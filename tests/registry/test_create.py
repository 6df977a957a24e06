"""registry.create: a model from an installed one, a file, a catalog name or an upload;
quantized on the way; recorded with its provenance; nothing left behind on failure."""

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from corral.registry.create import create
from corral.registry.errors import CorruptModel, InvalidName, ModelNotFound, PullCancelled
from corral.registry.manifest import Manifest
from corral.registry.modelfile import Modelfile, ModelfileError
from corral.registry.modelfile_parse import parse_modelfile
from corral.registry.modelfile_render import to_classic, to_yaml
from corral.registry.progress import PullProgress
from corral.registry.pull import pull
from corral.registry.store import Store
from corral.runtime.engine import Done, Engine
from corral.runtime.gguf import GGUFFile
from corral.runtime.sampling import SamplerOptions
from tiny import write_tiny_llama

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
CLASSIC = f'''FROM tiny
PARAMETER temperature 0.3
PARAMETER stop </s>
TEMPLATE """{TEMPLATE}"""
SYSTEM You are terse.
MESSAGE user Hi
MESSAGE assistant Hello.
LICENSE mit
'''


@pytest.fixture
def tiny(store: Store, tmp_path: Path) -> Path:
    """An F32 tiny llama installed as tiny:latest; its file."""
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    pull(store, str(path))
    return path


def statuses(events: list[PullProgress]) -> list[str]:
    return list(dict.fromkeys(e.status for e in events))


def test_create_from_an_installed_model_reuses_its_file(
    store: Store, tiny: Path, store_files: Callable
) -> None:
    events: list[PullProgress] = []
    model = create(store, "mine", parse_modelfile(CLASSIC), events.append)
    base = store.resolve("tiny")
    m = model.manifest
    assert (model.name, model.digest) == ("mine:latest", base.digest)
    assert m.parameters == {"temperature": 0.3, "stop": ["</s>"]}
    assert (m.template, m.system, m.license) == (TEMPLATE, "You are terse.", "mit")
    assert m.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    assert (m.architecture, m.quantization, m.parameter_count) == ("llama", "F32", 108480)
    assert m.source["created_from"] == "tiny:latest" and m.source["path"] == str(tiny)
    using = f"using existing layer {base.digest}"
    assert statuses(events) == [using, "writing manifest", "success"]
    blobs = [f for f in store_files(store) if f.startswith("blobs/")]
    assert blobs == [f"blobs/{base.digest.replace(':', '-')}"]  # no copy


def test_a_child_inherits_and_overrides(store: Store, tiny: Path) -> None:
    create(store, "mine", parse_modelfile(CLASSIC))
    child = create(store, "child", parse_modelfile("FROM mine\nPARAMETER seed 7\n")).manifest
    assert child.parameters == {"temperature": 0.3, "stop": ["</s>"], "seed": 7}
    assert (child.template, child.system, child.license) == (TEMPLATE, "You are terse.", "mit")
    assert len(child.messages) == 2 and child.source["created_from"] == "mine:latest"
    cleared = parse_modelfile('from: mine\nsystem: ""\nmessages: []\ntemplate: ""\n')
    bare = create(store, "bare", cleared).manifest
    assert (bare.system, bare.messages, bare.template) == (None, [], None)


def max_relative_error(original: Path, quantized: Path) -> float:
    worst = 0.0
    with GGUFFile.open(original) as a, GGUFFile.open(quantized) as b:
        for name, info in a.tensors.items():
            if len(info.shape) == 2:
                x, y = a.load_tensor(name), b.load_tensor(name)
                worst = max(worst, float(np.sqrt(np.mean((x - y) ** 2) / np.mean(x**2))))
    return worst


@pytest.mark.parametrize(("target", "bound"), [("Q8_0", 0.01), ("Q4_K_M", 0.12)])
def test_quantize_an_f32_model(
    store: Store, tiny: Path, target: str, bound: float, store_files: Callable
) -> None:
    events: list[PullProgress] = []
    mf = parse_modelfile(f"from: tiny\nquantize: {target}\n")
    model = create(store, "small", mf, events.append)
    m = model.manifest
    assert m.quantization == target and model.digest != store.resolve("tiny").digest
    assert (m.source["quantized_from"], m.source["quantization"]) == ("F32", target)
    assert m.source["created_from"] == "tiny:latest"
    assert model.size < tiny.stat().st_size
    quantizing = [e for e in events if e.status == f"quantizing F32 model to {target}"]
    assert quantizing and quantizing[-1].completed == quantizing[-1].total == 108480
    assert f"creating new layer {model.digest}" in statuses(events)
    assert 0 < max_relative_error(tiny, model.model_path) < bound
    engine = Engine.load(model.model_path)
    assert engine.info.quantization == target
    ids = engine.tokenizer.encode("the cat", add_special=True, parse_special=True)
    session = engine.new_session()
    *_, done = engine.generate(session, ids, SamplerOptions(temperature=0), num_predict=4)
    assert isinstance(done, Done) and done.eval_count >= 1 and done.prompt_eval_count == len(ids)
    assert len([f for f in store_files(store) if f.startswith("blobs/")]) == 2


def test_a_bad_quantization_type_names_the_valid_ones(store: Store, tiny: Path) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile("FROM tiny\n").overridden({"quantize": "Q9_X"})
    assert "unknown quantization type 'Q9_X'; choose one of: " in str(info.value)
    assert "Q4_K_M" in str(info.value) and "Q8_0" in str(info.value)


def test_requantizing_is_refused_and_leaves_nothing(
    store: Store, tiny: Path, store_files: Callable
) -> None:
    create(store, "q8", parse_modelfile("from: tiny\nquantize: Q8_0\n"))
    before = store_files(store)
    with pytest.raises(ModelfileError, match="cannot quantize a Q8_0 model to Q4_K_M: quant"):
        create(store, "q4", parse_modelfile("from: q8\nquantize: Q4_K_M\n"))
    assert store_files(store) == before
    same = create(store, "q8b", parse_modelfile("from: q8\nquantize: q8_0\n"))  # already Q8_0
    assert same.digest == store.resolve("q8").digest and "quantized_from" in same.manifest.source


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("FROM nope\n", ModelNotFound, "model 'nope' in FROM is neither installed nor in the"),
        ("FROM x:y:z\n", InvalidName, "invalid model name 'x:y:z'"),
        ("FROM /no/such/file.gguf\n", Exception, "file /no/such/file.gguf not found"),
    ],
)
def test_an_unknown_base_is_an_error_and_leaves_nothing(
    store: Store, tiny: Path, store_files: Callable, text: str, error: type, message: str
) -> None:
    before = store_files(store)
    with pytest.raises(error) as info:
        create(store, "mine", parse_modelfile(text))
    assert message in str(info.value)
    assert store_files(store) == before


def test_from_a_file_with_quantize_keeps_only_the_result(
    store: Store, tmp_path: Path, store_files: Callable
) -> None:
    path = write_tiny_llama(tmp_path / "other.gguf", seed=3)
    mf = parse_modelfile("FROM ./other.gguf\n", base_dir=tmp_path)
    model = create(store, "other-q8", mf.overridden({"quantize": "Q8_0"}))
    assert model.manifest.source["created_from"] == str(path)
    assert model.manifest.source["kind"] == "local" and model.manifest.quantization == "Q8_0"
    # the F32 copy fetched on the way is garbage once the Q8_0 file is in place
    assert [f for f in store_files(store) if f.startswith("blobs/")] == [
        f"blobs/{model.digest.replace(':', '-')}"
    ]


def test_a_catalog_base_is_pulled_first(store: Store, tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "base.gguf", seed=5)
    recipes = store.home / "Modelfiles"
    recipes.mkdir()
    (recipes / "base-1.yaml").write_text(
        f"name: base:1\nsources: [{path}]\nparameters: {{top_k: 5}}\nlicense: mit\n"
    )
    events: list[PullProgress] = []
    model = create(store, "derived", parse_modelfile("FROM base:1\nSYSTEM hi\n"), events.append)
    assert {m.name for m in store.list()} == {"base:1", "derived:latest"}
    assert model.manifest.parameters == {"top_k": 5} and model.manifest.license == "mit"
    assert [e.status for e in events].count("success") == 1  # the base pull's is not passed on
    assert "writing manifest" in statuses(events)


def test_a_cancel_while_quantizing_leaves_nothing(
    store: Store, tmp_path: Path, store_files: Callable
) -> None:
    path = write_tiny_llama(tmp_path / "c.gguf", seed=9)
    before = store_files(store)
    cancel = threading.Event()

    def progress(event: PullProgress) -> None:
        if event.status.startswith("quantizing"):
            cancel.set()

    with pytest.raises(PullCancelled):
        create(store, "c", Modelfile(from_=str(path), quantize="Q4_K_M"), progress, cancel)
    assert store_files(store) == before  # neither the fetched file nor a temporary one


def test_an_uploaded_gguf(store: Store, tiny: Path, tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "up.gguf", seed=11)
    digest = store.blobs.put_file(path)  # as POST /api/blobs stores it (pinned)
    model = create(store, "up", Modelfile(files=(("up.gguf", digest),), system="s"))
    assert model.digest == digest and model.manifest.system == "s"
    assert model.manifest.source["kind"] == "upload"
    missing = "sha256:" + "0" * 64
    with pytest.raises(ModelfileError, match=r"was not uploaded: POST it to /api/blobs/sha256:"):
        create(store, "x", Modelfile(files=(("m.gguf", missing),)))
    with pytest.raises(ModelfileError, match="one GGUF file"):
        create(store, "x", Modelfile(files=(("a.gguf", digest), ("b.gguf", digest))))
    text = tmp_path / "text.gguf"
    text.write_text("not a model")
    with pytest.raises(CorruptModel, match=r"the uploaded text\.gguf"):
        create(store, "x", Modelfile(files=(("text.gguf", store.blobs.put_file(text)),)))
    with pytest.raises(ModelfileError, match="either 'from' or 'files'"):
        create(store, "x", Modelfile(from_="tiny", files=(("up.gguf", digest),)))


def recreated_fields(m: Manifest) -> tuple:
    return (m.model, m.quantization, m.parameters, m.template, m.system, m.messages, m.license)


@pytest.mark.parametrize("render", [to_yaml, to_classic], ids=["yaml", "classic"])
def test_the_shown_modelfile_recreates_the_model(
    store: Store, tiny: Path, render: Callable
) -> None:
    original = create(store, "mine", parse_modelfile(CLASSIC + 'MESSAGE user "quoted"\n'))
    text = render(original)
    again = create(store, "again", parse_modelfile(text))
    assert recreated_fields(again.manifest) == recreated_fields(original.manifest)
    # from the bare file the Modelfile came from: every field is in the text itself
    for head in ("from: ", "FROM "):
        text = text.replace(f"\n{head}mine:latest\n", f"\n{head}{tiny}\n")
    fresh = create(store, "fresh", parse_modelfile(text))
    assert fresh.manifest.source["created_from"] == str(tiny)
    assert recreated_fields(fresh.manifest) == recreated_fields(original.manifest)


FULL_DISK_SCRIPT = """
import resource, signal, sys
from corral.registry.create import create
from corral.registry.errors import CorralError
from corral.registry.modelfile import Modelfile
from corral.registry.store import Store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # a disk that is full
try:
    create(Store(sys.argv[1]), "small", Modelfile(from_="base", quantize="Q8_0"))
except CorralError as e:
    print(e)
"""


def test_a_full_disk_while_quantizing_is_one_clear_line(store: Store, tiny: Path) -> None:
    pull(store, str(tiny))
    create(store, "base", Modelfile(from_="tiny"))
    before = sorted(p.name for p in store.blobs.root.iterdir())
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(store.home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    (line,) = done.stdout.strip().splitlines()
    assert line.startswith("I/O error while writing the Q8_0 model into "), done.stderr
    assert line.endswith("free some space, or point CORRAL_HOME at a larger disk")
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in store.blobs.root.iterdir()) == before  # nothing left behind
