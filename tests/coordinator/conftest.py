"""One real Ray cluster for the coordinator's Ray tests: two nodes (raylets) of one CPU each on
this machine (`ray.cluster_utils.Cluster`), started once per session; each test reconnects if
another module shut its driver down. `sila run --address` subprocesses join the same one."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _ray_cluster_session():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def ray_cluster(_ray_cluster_session):
    import ray

    if not ray.is_initialized():
        ray.init(address=_ray_cluster_session.address, log_to_driver=False)
    return _ray_cluster_session
