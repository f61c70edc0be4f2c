"""Text heads: the DRRN scores command lists of different sizes in one flat batch exactly as one by one, and
the text actor-critic gives padded commands probability 0 and finite PPO losses."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.backbones.text import build_text_encoder
from pipeline.config.backbone import BackboneConfig
from pipeline.networks.text import DRRN, owner_index, set_argmax, set_max


def test_drrn_scores_command_lists_of_different_sizes_in_one_batch() -> None:
    torch.manual_seed(0)
    cfg = BackboneConfig(name="bow", vocab_buckets=256, features_dim=16)
    net = DRRN(build_text_encoder(cfg, None, Path()), hidden=8)
    states = ["you are in a kitchen", "a dark cellar", "the end"]
    sets = [["open fridge", "go east", "eat apple"], ["light lamp"], []]
    q, counts = net.q_values(states, sets)
    assert counts == [3, 1, 0] and q.shape == (4,)
    alone = torch.cat([net.q_values([s], [a])[0] for s, a in zip(states[:2], sets[:2], strict=True)])
    assert torch.allclose(q, alone, atol=1e-6)  # batching changes nothing
    owner = owner_index(counts, q.device)
    assert torch.equal(set_max(q, owner, 3), torch.stack([q[:3].max(), q[3], torch.tensor(0.0)]))
    assert set_argmax(q, owner, 3).tolist() == [int(q[:3].argmax()), 3, -1]
    ties = torch.tensor([1.0, 3.0, 3.0, -2.0])  # the first best wins a tie, as argmax does
    assert set_argmax(ties, owner, 3).tolist() == [1, 3, -1]
    assert net.act_text(states[:2], sets[:2]) == [int(q[:3].argmax()), 0]


def test_text_actor_critic_gives_padded_commands_no_probability() -> None:
    """PPO on text: one state's softmax runs over its own commands only, in a batch of uneven lists."""
    from pipeline.algos.policy_gradient import ppo_losses
    from pipeline.algos.text_ppo import TextActorCritic, TextBatch

    torch.manual_seed(0)
    net = TextActorCritic(build_text_encoder(BackboneConfig(name="bow", features_dim=16), None, Path()), hidden=8)
    batch = TextBatch(
        ["you are in a kitchen", "a dark cellar"], [["open fridge", "go east", "eat apple"], ["light lamp"]]
    )
    logits, values = net.logits_and_value(batch)
    probs = logits.softmax(-1)
    assert logits.shape == (2, 3) and values.shape == (2,)
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and probs[1].tolist() == [1.0, 0.0, 0.0]
    q, _ = net.q_values(batch.states, batch.sets)
    assert torch.equal(logits[0], q[:3]) and logits[1, 0] == q[3]  # the logits are the DRRN scores
    assert len(batch[torch.tensor([1])]) == 1 and batch[torch.tensor([1])].sets == [["light lamp"]]
    out = ppo_losses(
        logits, values, torch.tensor([2, 0]), torch.zeros(2), values.detach(), torch.ones(2), torch.zeros(2), 0.2, None
    )
    assert all(torch.isfinite(v) for v in out.values())
    assert out["entropy"] > 0  # only the first state has a choice; its padding adds nothing, not NaN
    out["policy_loss"].backward()
    assert net.head.score[-1].weight.grad is not None and torch.isfinite(net.head.score[-1].weight.grad).all()
