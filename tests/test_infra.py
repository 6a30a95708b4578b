"""infra/ files parse and carry the fields the platform relies on (no cluster needed)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from sila.endpoints.serve import load_endpoint_toml

INFRA = Path(__file__).resolve().parents[1] / "infra"


def load_yaml(rel: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / rel).read_text()) if d is not None]


def test_every_yaml_parses():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert len(files) >= 3
    for f in files:
        docs = list(yaml.safe_load_all(f.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs if d is not None), f


def test_every_folder_has_a_readme():
    for folder in [INFRA, *(p for p in INFRA.iterdir() if p.is_dir())]:
        assert (folder / "README.md").is_file(), folder


def test_ray_cluster_launcher():
    (conf,) = load_yaml("ray/cluster.yaml")
    types = conf["available_node_types"]
    assert conf["head_node_type"] in types and len(types) >= 2
    assert any("ray start --head" in c for c in conf["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP" in c for c in conf["worker_start_ray_commands"])
    assert any("pip install" in c and "sila" in c for c in conf["setup_commands"])


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["template"]["spec"]["containers"]


def test_kuberay_raycluster():
    docs = {d["kind"]: d for d in load_yaml("kuberay/raycluster.yaml")}
    rc = docs["RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    groups = spec["workerGroupSpecs"]
    assert _containers(spec["headGroupSpec"])[0]["image"]
    gpu = [
        g
        for g in groups
        if any("nvidia.com/gpu" in c["resources"]["limits"] for c in _containers(g))
    ]
    assert gpu, "a GPU worker group for model endpoints"
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert docs["ConfigMap"]["data"]["SILA_LAKE"]


def test_kuberay_rayjob_runs_sila():
    (job,) = load_yaml("kuberay/rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("sila run ")
    assert "--executor ray" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"] and cluster["workerGroupSpecs"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_slurm_sbatch():
    path = INFRA / "slurm" / "sila-ray.sbatch"
    text = path.read_text()
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert text.startswith("#!/bin/bash") and "#SBATCH --nodes=" in text
    assert "ray start --head" in text and "ray start --address" in text
    assert 'sila run "$STAGE" --executor ray --address "$ADDRESS"' in text
    assert "trap teardown EXIT" in text and "ray stop" in text
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "warning", str(path)], check=True)


def test_vllm_endpoint_toml():
    conf = tomllib.loads((INFRA / "vllm" / "endpoint.toml").read_text())
    vllm, ep = conf["vllm"], conf["endpoint"]
    for key in (
        "model",
        "tensor_parallel_size",
        "max_model_len",
        "gpu_memory_utilization",
        "served_model_name",
    ):
        assert key in vllm, key
    assert 0 < vllm["gpu_memory_utilization"] <= 1 and ep["gpus"] == vllm["tensor_parallel_size"]
    assert ep["health_path"] == "/health" and isinstance(ep["port"], int)
    spec = load_endpoint_toml(INFRA / "vllm" / "endpoint.toml")
    assert spec.command[:3] == ["vllm", "serve", vllm["model"]]
    assert spec.command[3:5] == ["--port", "{port}"]
    i = spec.command.index("--max-model-len")
    assert spec.command[i + 1] == str(vllm["max_model_len"])
    assert (
        spec.name == ep["name"] and spec.gpus == ep["gpus"] and spec.env == conf["endpoint"]["env"]
    )


def test_endpoint_toml_errors(tmp_path):
    from sila.endpoints.serve import EndpointError

    bad = tmp_path / "e.toml"
    bad.write_text("[endpoint]\nname = 'x'\n")
    with pytest.raises(EndpointError, match="model"):
        load_endpoint_toml(bad)
    bad.write_text("[endpoint]\ncommand = ['srv', '{port}']\nbogus = 1\n")
    with pytest.raises(EndpointError, match="bogus"):
        load_endpoint_toml(bad)
    bad.write_text("[endpoint]\ncommand = ['srv', '--port', '{port}']\n[vllm]\nflag = true\n")
    assert load_endpoint_toml(bad).command == ["srv", "--port", "{port}"]


def test_containerfile():
    text = (INFRA / "Containerfile").read_text()
    lines = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] in ("ARG", "FROM") and "FROM" in lines
    assert all(word.isupper() for word in lines if not word.startswith("&&"))
    assert "pip install" in text and "ffmpeg" in text
    repo = INFRA.parent
    for src in [ln.split()[-2] for ln in text.splitlines() if ln.startswith("COPY")]:
        if src != "./":
            assert (repo / src).exists(), f"COPY source {src} missing"
