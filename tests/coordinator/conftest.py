"""One real Ray cluster for the coordinator's Ray tests: two nodes (raylets) of one CPU each on
this machine (`ray.cluster_utils.Cluster`), started once per session; a test connects to it by
asking for `ray_cluster`. `sila run --address` subprocesses join the same one."""

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
    """The shared cluster, connected for this test and disconnected after it, so a later test
    that starts its own local Ray (the embedded default) never lands on this one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=_ray_cluster_session.address, log_to_driver=False)
    yield _ray_cluster_session
    ray.shutdown()
