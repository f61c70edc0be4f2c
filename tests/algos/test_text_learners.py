"""Language models in the loop: the DRRN head over command lists of different sizes, the text actor-critic,
win counting, the LM similarity reward, DRRN and PPO learning the text traffic light end to end (logged,
loaded back, acting), a causal-LM prior, a generated TextWorld game, and the refusals."""

from __future__ import annotations

from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.algos.text_reward import GoalSimilarity
from pipeline.config.reward import RewardConfig
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


TEXT_RUN = [
    "env=traffic_light_text",
    "algo=double_dqn",
    "total_env_steps=3000",
    "algo.learning_starts=300",
    "algo.eps_decay_steps=1500",
    "eval.every_env_steps=1000",
    "progress=false",
]


def train_tiny_causal_lm(folder: Path) -> Path:
    """A one-layer GPT-2 with a word-level tokenizer, trained here on the text traffic light's own sentences
    (each state phrasing followed by a good command): a real causal LM, made offline in seconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from pipeline.algos.text_prior import PROMPT_END
    from pipeline.envs.text_traffic_light import ACTION_TEXT, STATE_TEXT
    from pipeline.envs.traffic_light import GO, GREEN, RED, STOP

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


def test_a_causal_lm_prior_ranks_commands_and_steers_the_policy(tmp_path: Path, outputs: Path) -> None:
    from pipeline.algos.text_prior import build_prior
    from pipeline.config.algo import PriorConfig
    from pipeline.envs.text_traffic_light import ACTION_TEXT, STATE_TEXT
    from pipeline.envs.traffic_light import GO, GREEN, RED, STOP

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
