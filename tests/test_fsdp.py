"""FSDP (``trainer.sharding: fsdp``) on this CPU: two Gloo ranks in one machine.

Two sharded ranks, each updating on one GRPO group (KL reference on, gradients clipped),
must end where one unsharded process ends after updating on both groups, up to float
summation order; their checkpoint (gathered on rank 0) must be the ordinary full one, load
in one process without FSDP, and resume under FSDP to take the next step exactly as the
single process takes it; a LoRA run's adapter and a PPO run's value head likewise. With
rollouts, a sharded two-rank run must collect the same
episodes and reach the same weights as the unsharded two-rank run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

# Max |difference| of a parameter or AdamW moment between the two-rank FSDP run and one
# process: the same float sums in another order (measured: 1.2e-7 for parameters, 2e-9
# for moments, 2e-10 for LoRA adapters; a step moves parameters by about lr = 1e-3).
TOLERANCE = 1e-5
# The same after two steps with rollouts, sharded against unsharded two-rank runs: AdamW
# divides by the root of tiny second moments, which magnifies the order of sums (measured:
# 6.6e-6; a wrong gradient would be off by a step, ~1e-3).
ROLLOUT_TOLERANCE = 5e-5
MAX_GRAD_NORM = 0.05  # small enough that every step here is clipped


def _fsdp_overrides(sharded: bool) -> dict:
    return {
        "grpo.kl_coef": 0.001,
        "trainer.micro_batch_size": 1,
        "trainer.share_prompts": False,
        "optim.max_grad_norm": MAX_GRAD_NORM,
        "trainer.sharding": "fsdp" if sharded else "none",
    }


# PPO with its shared value head; whitening off, as it is per rank (distributed.py).
PPO_OVERRIDES = {**_fsdp_overrides(sharded=True), "ppo.whiten_advantages": False}


def _init(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def _update_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """Step, save, load the checkpoint under FSDP, step again, save again."""
    _init(rank, world, init_file)
    try:
        from test_algorithms import config, policy, two_groups

        from algorithms.grpo import GRPO
        from algorithms.policy import LoraSettings
        from algorithms.registry import make_algorithm

        mine = [t for t in two_groups() if t.group == rank]
        torch.manual_seed(0)
        cfg = config("grpo", Path(out) / "run", **_fsdp_overrides(sharded=True))
        algo = make_algorithm("grpo", policy(), None, cfg)
        sharded = [name for name, p in algo.policy.model.named_parameters() if _is_dtensor(p)]
        first = algo.learn_from(mine)
        algo.save(Path(out) / "step1")
        resumed = GRPO.load(Path(out) / "step1")
        second = resumed.learn_from(mine)
        resumed.save(Path(out) / "step2")
        torch.save({"metrics": [first, second], "sharded": sharded}, Path(out) / f"rank{rank}.pt")
        # LoRA: the frozen base and the adapters are sharded alike; one step, saved.
        torch.manual_seed(0)
        cfg = config("grpo", Path(out) / "lora", **_fsdp_overrides(sharded=True))
        lora = make_algorithm("grpo", policy(lora=LoraSettings(r=4)), None, cfg)
        lora.learn_from(mine)
        lora.save(Path(out) / "lora-step1")
        # PPO's value head is replicated, not sharded: clipping mixes both kinds of grads.
        torch.manual_seed(0)
        ppo = make_algorithm(
            "ppo", policy(), None, config("ppo", Path(out) / "ppo", **PPO_OVERRIDES)
        )
        ppo_metrics = ppo.learn_from(mine)
        ppo.save(Path(out) / "ppo-step1")
        torch.save(ppo_metrics, Path(out) / f"ppo{rank}.pt")
    finally:
        dist.destroy_process_group()


def _is_dtensor(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _moments(algo) -> torch.Tensor:
    state = algo.optimizer.state_dict()["state"]
    return torch.cat(
        [state[i][k].flatten() for i in sorted(state) for k in ("exp_avg", "exp_avg_sq")]
    )


def test_sharded_ranks_update_checkpoint_and_resume_like_one_process(tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file
    from test_algorithms import config, policy, two_groups

    from algorithms.grpo import GRPO
    from algorithms.policy import LoraSettings
    from algorithms.ppo import PPO
    from algorithms.registry import make_algorithm

    mp.spawn(_update_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # Every decoder block (and the root: embeddings, norm, tied head) was sharded.
    assert any(".layers.0." in name for name in ranks[0]["sharded"])
    assert "model.embed_tokens.weight" in ranks[0]["sharded"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        cfg = config("grpo", tmp_path / "single", **_fsdp_overrides(sharded=False))
        single = make_algorithm("grpo", policy(), None, cfg)
        before = _flat(single.policy.model)
        metrics = [single.learn_from(two_groups())]
        # The FSDP checkpoint is an ordinary full one: it loads in one process.
        unsharded = {"trainer.sharding": "none"}
        step1 = GRPO.load(tmp_path / "step1", config_overrides=unsharded)
        assert step1.step == single.step == 1
        assert _max_diff(_flat(step1.policy.model), _flat(single.policy.model)) < TOLERANCE
        assert _max_diff(_moments(step1), _moments(single)) < TOLERANCE
        assert _max_diff(_flat(step1.policy.model), before) > 1e-4  # it moved
        # The checkpoint reloaded under FSDP took the same next step as one process.
        metrics.append(single.learn_from(two_groups()))
        step2 = GRPO.load(tmp_path / "step2", config_overrides=unsharded)
        assert _max_diff(_flat(step2.policy.model), _flat(single.policy.model)) < TOLERANCE
        assert _max_diff(_moments(step2), _moments(single)) < TOLERANCE
        # The LoRA run's adapter equals one process's after the same step.
        torch.manual_seed(0)
        cfg = config("grpo", tmp_path / "lora-single", **_fsdp_overrides(sharded=False))
        lora = make_algorithm("grpo", policy(lora=LoraSettings(r=4)), None, cfg)
        lora.learn_from(two_groups())
        saved = load_file(tmp_path / "lora-step1" / "policy" / "adapter_model.safetensors")
        adapter = get_peft_model_state_dict(lora.policy.model)
        assert sorted(saved) == sorted(adapter)
        assert max(_max_diff(saved[k], adapter[k]) for k in saved) < TOLERANCE
        torch.manual_seed(0)
        unsharded_ppo = {**PPO_OVERRIDES, "trainer.sharding": "none"}
        ppo = make_algorithm("ppo", policy(), None, config("ppo", tmp_path / "p", **unsharded_ppo))
        ppo_metrics = ppo.learn_from(two_groups())
        ppo_step1 = PPO.load(tmp_path / "ppo-step1", config_overrides=unsharded)
        assert _max_diff(_flat(ppo_step1.policy.model), _flat(ppo.policy.model)) < TOLERANCE
        assert ppo.policy.value_head is not None and ppo_step1.policy.value_head is not None
        assert (
            _max_diff(_flat(ppo_step1.policy.value_head), _flat(ppo.policy.value_head)) < TOLERANCE
        )
    finally:
        torch.set_num_threads(threads)
    config_json = json.loads((tmp_path / "step2" / "policy" / "config.json").read_text())
    assert config_json["architectures"] == ["LlamaForCausalLM"]  # not an FSDP class
    for sharded_metrics, plain in zip(ranks[0]["metrics"], metrics, strict=True):
        assert plain["train/grad_norm"] > MAX_GRAD_NORM  # clipping was on
        for key in ("train/loss", "train/grad_norm", "train/kl", "train/entropy"):
            assert sharded_metrics[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
            assert torch.isfinite(torch.tensor(sharded_metrics[key]))
    sharded_ppo = torch.load(tmp_path / "ppo0.pt")
    assert ppo_metrics["train/grad_norm"] > MAX_GRAD_NORM
    for key in ("train/loss", "train/grad_norm", "train/v_loss"):
        assert sharded_ppo[key] == pytest.approx(ppo_metrics[key], rel=1e-4, abs=1e-6), key


def _rollout_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """Two training steps with rollouts, sharded and then not, and an evaluation (with
    bf16 autocast and gradient checkpointing)."""
    _init(rank, world, init_file)
    try:
        from test_algorithms import config, policy

        from algorithms.registry import make_algorithm

        results = {}
        for sharding in ("fsdp", "none"):
            overrides = {
                **_fsdp_overrides(sharded=sharding == "fsdp"),
                "rollout.questions_per_step": 2,
                "rollout.group_size": 2,
                "rollout.max_turn_tokens": 6,
                "env.max_turns": 1,
                "grpo.entropy_coef": 0.1,
                "eval.questions": 2,
                # bf16 autocast over several micro-batches (its weight-cast cache must be
                # off under FSDP) and recomputed activations, both through FSDP's hooks.
                "trainer.autocast_dtype": "bfloat16",
                "model.gradient_checkpointing": True,
            }
            cfg = config("grpo", Path(out) / sharding, **overrides)
            algo = make_algorithm("grpo", policy(gradient_checkpointing=True), None, cfg)
            steps = [algo.train_step() for _ in range(2)]
            evaluation = algo.evaluate()  # under FSDP a collective; rank 0 plays
            with algo._full_model() as model:
                params = _flat(model).clone()
            results[sharding] = {"steps": steps, "eval": evaluation, "params": params}
        torch.save(results, Path(out) / f"rollout{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_rollouts_train_like_the_unsharded_two_rank_run(tmp_path):
    mp.spawn(_rollout_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rollout{r}.pt") for r in range(2)]
    for result in ranks:
        sharded, plain = result["fsdp"], result["none"]
        # Full weights decoded the same episodes with the same rewards.
        for a, b in zip(sharded["steps"], plain["steps"], strict=True):
            assert a["episode/reward"] == b["episode/reward"]
            assert a["response/generated_tokens"] == b["response/generated_tokens"]
            assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4, abs=1e-6)
            assert torch.isfinite(torch.tensor(a["train/loss"]))
        assert _max_diff(sharded["params"], plain["params"]) < ROLLOUT_TOLERANCE
    assert ranks[0]["fsdp"]["eval"] == ranks[0]["none"]["eval"]  # rank 0 evaluated
    assert ranks[1]["fsdp"]["eval"] == {}  # rank 1 only helped gather the weights


def test_fsdp_without_ranks_or_with_prompt_sharing_is_a_clear_error(tmp_path):
    from test_algorithms import config

    cfg = config("grpo", tmp_path, **{"trainer.sharding": "fsdp"})
    with pytest.raises(ValueError) as err:
        cfg.validate(check_names=False)
    message = str(err.value)
    assert "torchrun --nproc-per-node" in message
    assert "trainer.sharding=none" in message
    assert "trainer.share_prompts=false" in message
    cfg = config(
        "ppo",
        tmp_path,
        **{"trainer.sharding": "fsdp", "ppo.critic": "separate", "trainer.share_prompts": False},
    )
    with pytest.raises(ValueError, match=r"ppo\.critic=shared"):
        cfg.validate(check_names=False)
    cfg = config("grpo", tmp_path, **{"trainer.sharding": "fsdp", "trainer.train_layers": 1})
    with pytest.raises(ValueError, match=r"set trainer\.train_layers=null"):
        cfg.validate(check_names=False)


@pytest.mark.slow
def test_torchrun_trains_sharded_and_resumes_in_one_process(tmp_path):
    import os
    import subprocess
    import sys

    from test_distributed import ROOT, _free_port

    out = tmp_path / "run"
    common = [
        "train", "--algo", "grpo", "--model", "tiny-random", "--out", str(out), "--no-wandb",
        "--set", "rollout.questions_per_step=2", "--set", "rollout.group_size=2",
        "--set", "rollout.max_turn_tokens=6", "--set", "env.max_turns=1",
        "--set", "logging.progress_bar=false", "--set", "checkpoint.every=1",
        "--set", "eval.every=2", "--set", "eval.questions=2",
    ]  # fmt: skip
    sharded = ["--set", "trainer.sharding=fsdp", "--set", "trainer.share_prompts=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", str(_free_port()), "-m", "research_app.cli"]  # fmt: skip
    done = subprocess.run(
        [*torchrun, *common, *sharded, "--steps", "2"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [c.name for c in sorted((out / "checkpoints").iterdir())] == [
        "step-000001",
        "step-000002",
    ]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "eval/reward" in logged[-1]  # rank 0 evaluated with the gathered weights
    assert (out / "final" / "config.json").exists()

    resume = [sys.executable, "-m", "research_app.cli", "train", "--out", str(out), "--resume",
              "--steps", "3", "--no-wandb", "--set", "trainer.sharding=none"]  # fmt: skip
    done = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoints" / "step-000003").exists()
