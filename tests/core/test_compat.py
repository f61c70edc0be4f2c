"""Policies logged before the layout regroup (issue 17) load and act the same after it: a DQN policy
(torch.export, no class paths) and a pickled text policy whose classes lived at the old flat paths
(`pipeline.networks_text.DRRN`, loaded through pipeline/core/compat.py). The fixture was logged by the
old layout: tests/data/policies_logged_before_the_regroup.tar.gz (its expected outputs beside it)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import mlflow.pytorch
import pytest
import torch

from tests.conftest import ROOT

ARCHIVE = ROOT / "tests" / "data" / "policies_logged_before_the_regroup.tar.gz"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("old_layout")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(folder, filter="data")
    return folder


def test_a_dqn_policy_logged_before_the_regroup_gives_the_same_q_values(logged: Path) -> None:
    expected = json.loads((logged / "expected.json").read_text())
    policy = mlflow.pytorch.load_model(str(logged / "dqn_policy"))
    q = policy(torch.tensor(expected["dqn_obs"], dtype=torch.float32))
    assert torch.allclose(q, torch.tensor(expected["dqn_q"]), atol=1e-6)


def test_a_pickled_text_policy_logged_before_the_regroup_loads_through_the_old_paths(logged: Path) -> None:
    expected = json.loads((logged / "expected.json").read_text())
    policy = mlflow.pytorch.load_model(str(logged / "text_policy"))
    assert type(policy).__module__ == "pipeline.networks.text"  # pipeline.networks_text in the pickle
    actions = [int(a) for a in policy.act_text(expected["text_states"], expected["text_sets"])]
    assert actions == expected["text_actions"]
