"""Language models in the loop: the packaged MiniLM, the embedding cache, the DRRN head over command lists
of different sizes, the LM similarity reward, a DRRN that learns the text traffic light end to end (logged,
loaded back, acting), and the refusals."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.backbones.text import EmbeddingCache, apply_freeze, build_text_encoder, extract_minilm
from pipeline.config import BackboneConfig, RewardConfig
from pipeline.errors import ConfigError
from pipeline.networks_text import DRRN, owner_index, set_argmax, set_max
from pipeline.rewards import GoalSimilarity
from tests.conftest import run_cli

MINILM = BackboneConfig(name="minilm", library="transformers", weights="packaged:all-minilm-l6-v2", freeze="all")


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def minilm(weights_cache: Path):
    encoder = build_text_encoder(MINILM, str(extract_minilm(weights_cache)), weights_cache)
    apply_freeze(encoder, MINILM)
    return encoder


def test_packaged_minilm_loads_offline_and_its_semantics_are_real(minilm, weights_cache: Path) -> None:
    assert minilm.frozen and not minilm.training
    assert sum(p.numel() for p in minilm.parameters()) > 22_000_000  # the real 6-layer model, not a stub
    e = minilm(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."])
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)  # normalised, as its config says
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > 0.6 and unrelated < 0.2, (paraphrase, unrelated)
    assert (weights_cache / "all-MiniLM-L6-v2" / ".complete").is_file()  # extracted once, reused


def test_embedding_cache_is_exact_and_never_recomputes_a_text(minilm) -> None:
    seen: list[int] = []
    hook = minilm.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    try:
        cache = EmbeddingCache(minilm)
        first = cache(["go north", "take key", "go north"])
        second = cache(["take key", "open door", "go north"])
    finally:
        hook.remove()
    assert seen == [2, 1]  # "go north" and "take key" once, then only "open door"
    assert (cache.hits, cache.misses) == (3, 3) and cache.hit_rate == 0.5
    assert torch.equal(first[0], second[2]) and torch.equal(first[1], second[0])
    assert torch.equal(second[1], minilm(["open door"])[0])


def test_a_trained_encoders_cache_lasts_until_its_weights_change() -> None:
    """Fine-tuning: between two optimiser steps a text is encoded once; after a step, never a stale vector."""
    torch.manual_seed(0)
    encoder = build_text_encoder(BackboneConfig(name="bow", vocab_buckets=64, features_dim=8), None, Path())
    net = DRRN(encoder, hidden=8).eval()
    assert not encoder.frozen
    with torch.no_grad():
        before = net.embed(["go north", "take key"])
        again = net.embed(["take key", "go north"])
    assert (net.cache.hits, net.cache.misses) == (2, 2) and torch.equal(before[0], again[1])
    loss = net.embed(["go north"]).sum()  # with gradients: the encoder itself, not the cache
    assert loss.requires_grad
    optimizer = torch.optim.SGD(encoder.parameters(), lr=1.0)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = net.embed(["go north", "take key"])
        fresh = encoder(["go north", "take key"])
    assert torch.equal(after, fresh) and not torch.equal(after[0], before[0])  # re-encoded, not stale
    assert net.cache.misses == 4


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


def test_text_progress_counts_wins_and_logs_the_first_one_once_even_across_a_resume() -> None:
    from pipeline.algos.text_progress import TextProgress

    progress = TextProgress()
    progress.note({"won": [False, False]}, np.array([True, False]), step_after=8)
    assert progress.metrics(None) == {"train/success_rate": 0.0}  # an episode ended, none won yet
    progress.note({"won": [False, True]}, np.array([False, True]), step_after=12)
    progress.note({"won": [True, False]}, np.array([True, False]), step_after=16)
    assert progress.first_success_step == 12
    assert progress.metrics(None) == {"train/success_rate": 2 / 3, "train/first_success_step": 12.0}
    assert "train/first_success_step" not in progress.metrics(None)  # logged once, when it happened
    restored = TextProgress()
    restored.load(progress.state())  # a resumed run neither forgets nor re-logs it
    assert restored.first_success_step == 12 and "train/first_success_step" not in restored.metrics(None)


def test_similarity_reward_prefers_the_goal_description(weights_cache: Path) -> None:
    cfg = RewardConfig(name="lm_similarity", goal="You drove through the junction on a green light.", threshold=0.5)
    scorer = GoalSimilarity(cfg, weights_cache)
    sims = scorer.similarity(
        [
            "You drove across the intersection while the light was green.",
            "You waited at the red light.",
            "The cat sleeps on the sofa.",
        ]
    )
    assert sims[0] > sims[1] > sims[2], sims
    bonus = scorer.bonus(sims)
    assert bonus[0] == pytest.approx(sims[0]) and bonus[2] == 0.0  # below the threshold: nothing


def test_hub_model_offline_fails_fast_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = BackboneConfig(name="sentence-transformers/all-mpnet-base-v2", library="transformers", pretrained=True)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="folder") as err:
        build_text_encoder(cfg, None, tmp_path)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in str(err.value)


TEXT_RUN = [
    "env=traffic_light_text",
    "algo=double_dqn",
    "total_env_steps=3000",
    "algo.learning_starts=300",
    "algo.eps_decay_steps=1500",
    "eval.every_env_steps=1000",
    "progress=false",
]


def test_drrn_learns_the_text_traffic_light_and_the_logged_policy_acts(outputs: Path) -> None:
    result = run_cli([*TEXT_RUN, "backbone=bow"], outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    assert run.info.status == "FINISHED"
    # Random play scores about -60 over 50 steps; reading the light and the command text scores ~+25.
    assert run.data.metrics["eval/return_mean"] >= 15.0
    assert run.data.params["backbone.name"] == "bow" and run.data.params["env.kind"] == "text"
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    policy = mlflow.pytorch.load_model(run.data.tags["policy_uri"])
    red, green = "The traffic light ahead is red.", "A green light glows above the junction."
    on_red = [["go ahead", "wait for the light"], ["hold the brake", "accelerate across"]]
    sets = [*on_red, ["hold the brake", "go ahead"]]
    choice = policy.act_text([red, red, green], sets)
    assert choice == [1, 0, 1]  # stop on red, whatever the wording and order; go on green


def test_ppo_learns_the_text_traffic_light_over_admissible_commands(outputs: Path) -> None:
    args = ["env=traffic_light_text", "backbone=bow", "algo=ppo", "total_env_steps=3000", "eval.every_env_steps=1000"]
    result = run_cli([*args, "progress=false"], outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    evals = [m.value for m in client.get_metric_history(run.info.run_id, "eval/return_mean")]
    assert evals[-1] >= 15.0 and run.data.tags["solved"] == "true", evals  # random play scores about -60
    assert run.data.params["algo.name"] == "ppo" and "train/approx_kl" in run.data.metrics
    mlflow.set_tracking_uri(f"sqlite:///{outputs}/mlflow.db")
    policy = mlflow.pytorch.load_model(run.data.tags["policy_uri"])
    red, green = "The traffic light ahead is red.", "A green light glows above the junction."
    assert policy.act_text([red, green], [["go ahead", "wait for the light"], ["hold the brake", "go ahead"]]) == [1, 1]


def test_frozen_minilm_drrn_caches_its_embeddings(outputs: Path) -> None:
    result = run_cli([*TEXT_RUN, "backbone=minilm", "total_env_steps=1200", "eval.every_env_steps=0"], outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    metrics = run.data.metrics
    # 6 state phrasings + 6 command wordings: every text is encoded once, everything else is a lookup.
    assert metrics["perf/embed_cache_texts"] == 12
    assert metrics["perf/embed_cache_hit_rate"] > 0.99


def test_lm_similarity_shapes_a_grid_world_and_logs_both_returns(outputs: Path) -> None:
    goal = "reward.goal='You are at the goal.'"
    args = ["env=frozenlake", "algo=q_learning", "reward=lm_similarity", goal, "total_env_steps=4000", "progress=false"]
    result = run_cli(args, outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    shaped = [m.value for m in client.get_metric_history(run.info.run_id, "train/episode_return")]
    raw = [m.value for m in client.get_metric_history(run.info.run_id, "train/episode_return_raw")]
    assert len(shaped) == len(raw) > 0
    assert np.all(np.array(shaped) >= np.array(raw)) and np.mean(shaped) > np.mean(raw)  # the bonus is paid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env=traffic_light_text", "backbone=mlp"], "observes text; use a text backbone"),
        (["env=cartpole", "backbone=minilm"], "a text encoder needs a text env"),
        (["env=traffic_light_text", "backbone=bow", "algo=rainbow_lite"], "not wired for text envs"),
        (
            ["env=traffic_light_text", "backbone=bow", "algo=ppo", "distill=policy", "distill.teacher=runs:/0/p"],
            "set distill=none",
        ),
        (["env=traffic_light_text", "backbone=bow", "algo=sarsa"], "or algo=ppo / reinforce"),
        (["env=cartpole", "reward=lm_similarity", "reward.goal=balance"], "has no text to compare"),
        (["env=traffic_light_text", "backbone=bow", "reward=lm_similarity"], "reward.goal"),
    ],
)
def test_text_misconfigurations_are_refused_before_anything_runs(args: list[str], message: str, outputs: Path) -> None:
    result = run_cli([*args, "total_env_steps=5000", "progress=false"], outputs)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert not (outputs / "mlflow.db").exists()  # refused before the tracking store was touched


def train_tiny_causal_lm(folder: Path) -> Path:
    """A one-layer GPT-2 with a word-level tokenizer, trained here on the text traffic light's own sentences
    (each state phrasing followed by a good command): a real causal LM, made offline in seconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from pipeline.envs.traffic_light import GO, GREEN, RED, STOP
    from pipeline.envs.traffic_light_text import ACTION_TEXT, STATE_TEXT
    from pipeline.prior import PROMPT_END

    good = {RED: STOP, GREEN: GO}
    corpus = [
        f"{s}{PROMPT_END} {c}" for light in (RED, GREEN) for s in STATE_TEXT[light] for c in ACTION_TEXT[good[light]]
    ]
    vocab = corpus + [c for cs in ACTION_TEXT.values() for c in cs]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(vocab, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=1, n_head=2))
    batch = fast(corpus, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_a_causal_lm_prior_ranks_commands_and_steers_the_policy(tmp_path: Path, outputs: Path) -> None:
    from pipeline.config import PriorConfig
    from pipeline.envs.traffic_light import GO, GREEN, RED, STOP
    from pipeline.envs.traffic_light_text import ACTION_TEXT, STATE_TEXT
    from pipeline.prior import build_prior

    folder = train_tiny_causal_lm(tmp_path / "tiny_lm")
    prior = build_prior(PriorConfig(model=str(folder), weight=1.0))
    good, bad = {RED: STOP, GREEN: GO}, {RED: GO, GREEN: STOP}
    for light in (RED, GREEN):
        for state in STATE_TEXT[light]:
            for right in ACTION_TEXT[good[light]]:
                for wrong in ACTION_TEXT[bad[light]]:
                    lp = prior.log_probs([state, state], [[right, wrong], [wrong, right]])
                    assert lp[0] > lp[1] and lp[3] > lp[2], (state, right, wrong, lp)
    # Barely any TD learning (a few dozen updates): the prior's choices are what solve the game.
    args = [*TEXT_RUN, "backbone=bow", f"algo.prior.model={folder}", "algo.prior.weight=10", "total_env_steps=600"]
    result = run_cli([*args, "algo.learning_starts=500", "eval.every_env_steps=0"], outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    assert run.data.metrics["eval/final_return_mean"] >= 15.0
    assert run.data.params["algo.prior.weight"] == "10.0"


def test_minilm_drrn_learns_a_generated_textworld_game(outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One small TextWorld game (3 rooms, a 3-command quest; a random agent wins ~15 % of 50-step episodes):
    the frozen MiniLM DRRN goes from never winning greedily to winning every evaluation episode."""
    monkeypatch.delenv("PIPELINE_TEXTWORLD_CACHE", raising=False)  # the default cache, under paths.outputs
    args = ["env=textworld", "env.textworld.held_out_games=0", "backbone=minilm", "algo=double_dqn", "seed=1"]
    budget = ["total_env_steps=4000", "algo.learning_starts=500", "algo.eps_decay_steps=2000"]
    result = run_cli([*args, *budget, "eval.every_env_steps=500", "eval.episodes=4", "progress=false"], outputs)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("pipeline").experiment_id)[0]
    evals = [m.value for m in client.get_metric_history(run.info.run_id, "eval/return_mean")]
    assert evals[0] == 0.0 and evals[-1] == 1.0, evals
    assert run.data.metrics["eval/success_rate"] == 1.0 and run.data.tags["solved"] == "true"
    assert run.data.metrics["perf/embed_cache_hit_rate"] > 0.9
    assert 0 < run.data.metrics["train/first_success_step"] <= 1536  # logged once, when it happened
    assert sorted(p.name for p in (outputs / "textworld" / "w3-o4-q3-s1").glob("*.z8")) == ["train-000-seed1000.z8"]
