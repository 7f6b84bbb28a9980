"""16-bit weights that learn: float32 master weights (``algorithms/trainer/optim.py``).

AdamW applied to bfloat16 weights rounds every step smaller than half a weight's bf16
spacing away, so the paper configs (bf16, lr 1e-6) learned nothing. With master weights
the steps accumulate in float32 copies: they move at lr 1e-6, they move the bf16 weights
once the accumulated steps cross a rounding boundary, they survive a checkpoint exactly
and they are what the final export writes. float16 is refused (no loss scaling).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_algorithms import config, policy, two_groups

from algorithms.config import TrainConfig
from algorithms.grpo import GRPO
from algorithms.registry import make_algorithm
from algorithms.trainer import checkpoint as ckpt
from algorithms.trainer.optim import master_weights_by_name

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.numeric]

PAPER_CONFIGS = ["research-grpo.yaml", "searchr1-grpo.yaml", "searchr1-ppo.yaml"]
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """The fraction of elements that differ, over the tensors of ``after``."""
    changed = sum(int((after[k] != before[k].to(after[k].dtype)).sum()) for k in after)
    return changed / sum(after[k].numel() for k in after)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_the_paper_configs_learn_in_bf16_at_their_learning_rate(name, tmp_path):
    paper = TrainConfig.from_yaml(CONFIGS / name)
    assert paper.model.dtype == "bfloat16" and paper.optim.lr == 1e-6  # as written
    cfg = paper.with_overrides(
        {"output_dir": str(tmp_path), "logging.wandb": False, "rollout.max_total_tokens": 32}
    )
    algo = make_algorithm(
        paper.algo, policy(dtype="bfloat16", value_head=paper.algo == "ppo"), None, cfg
    )
    model = algo.policy.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo.learn_from(two_groups())
    # What the run learned (and what <out>/final holds): the float32 masters, moved in
    # nearly every element by one step at lr 1e-6 (without them: 0.13%, the tiny weights).
    learned = master_weights_by_name(algo.optimizer, model)
    assert set(learned) == set(before)
    assert all(t.dtype == torch.float32 for t in learned.values())
    assert _moved(before, learned) > 0.99
    # The bf16 weights the next forward uses are the masters, rounded.
    assert all(torch.equal(model.state_dict()[k], learned[k].bfloat16()) for k in learned)


def test_small_steps_accumulate_until_they_move_the_bf16_weights(tmp_path):
    """A norm weight of 1.0 has a bf16 spacing of 2**-7: a step of lr 1e-3 (the same
    ratio to the spacing as 1e-6 to a weight near 0.02, within 4x) rounds away alone, and
    six of them move it. Without master weights the norms never move."""
    cfg = config("grpo", tmp_path, **{"optim.lr": 1e-3})
    algo = make_algorithm("grpo", policy(dtype="bfloat16"), None, cfg)
    model = algo.policy.model
    norms = {k: v.clone() for k, v in model.state_dict().items() if "norm" in k}
    assert all(torch.all(v == 1.0) for v in norms.values())
    algo.learn_from(two_groups())
    assert _moved(norms, {k: model.state_dict()[k] for k in norms}) == 0.0  # rounded away
    for _ in range(5):
        algo.learn_from(two_groups())
    assert _moved(norms, {k: model.state_dict()[k] for k in norms}) > 0.5  # measured: 0.69


def test_master_weights_off_steps_the_bf16_weights_directly(tmp_path):
    cfg = config("grpo", tmp_path, **{"optim.lr": 1e-3, "optim.master_weights": False})
    algo = make_algorithm("grpo", policy(dtype="bfloat16"), None, cfg)
    assert type(algo.optimizer) is torch.optim.AdamW
    assert master_weights_by_name(algo.optimizer, algo.policy.model) == {}
    fp32 = make_algorithm("grpo", policy(), None, config("grpo", tmp_path))
    assert type(fp32.optimizer) is torch.optim.AdamW  # float32 weights need no masters


def test_a_bf16_checkpoint_resumes_with_its_float32_masters_exactly(tmp_path):
    cfg = config("grpo", tmp_path, **{"optim.lr": 1e-6, "grpo.kl_coef": 0.001})
    algo = make_algorithm("grpo", policy(dtype="bfloat16"), None, cfg)
    algo.learn_from(two_groups())
    algo.save(tmp_path / "ckpt")
    loaded = GRPO.load(tmp_path / "ckpt")
    for a, b in ((algo, loaded), (loaded, algo)):
        state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert state_a.keys() == state_b.keys() and state_a
        for index, entry in state_a.items():
            assert entry["master"].dtype == entry["exp_avg"].dtype == torch.float32
            for key in ("master", "exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(entry[key], state_b[index][key]), (index, key)
    rng = torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=True)["rng"]
    ckpt.restore_rng_state(rng)
    algo.learn_from(two_groups())
    ckpt.restore_rng_state(rng)
    loaded.learn_from(two_groups())
    mine, theirs = (master_weights_by_name(x.optimizer, x.policy.model) for x in (algo, loaded))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_export_writes_the_learned_float32_weights(tmp_path):
    from safetensors.torch import load_file

    algo = make_algorithm("grpo", policy(dtype="bfloat16"), None, config("grpo", tmp_path))
    algo.learn_from(two_groups())
    learned = master_weights_by_name(algo.optimizer, algo.policy.model)
    ckpt.export_pretrained(algo.policy, tmp_path / "final", weights=learned)
    saved = load_file(tmp_path / "final" / "model.safetensors")
    assert set(saved) <= set(learned)
    assert all(torch.equal(saved[k], learned[k]) for k in saved)


@pytest.mark.parametrize(
    "setting", ["model.dtype=float16", "model.dtype=fp16", "trainer.autocast_dtype=float16"]
)
def test_float16_training_is_refused_with_the_fix_named(setting):
    with pytest.raises(ValueError, match=r"loss scaling.*bfloat16"):
        TrainConfig().with_overrides([setting]).validate(check_names=False, check_device=False)


def _fsdp_rank(rank: int, world: int, init_file: str, out: str, sharded: bool = True) -> None:
    """bf16 on two Gloo ranks, under FSDP or plain data parallelism: a step, a checkpoint,
    a resume."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from test_fsdp import _fsdp_overrides

        cfg = config("grpo", Path(out) / "run", **_fsdp_overrides(sharded=sharded))
        algo = make_algorithm("grpo", policy(dtype="bfloat16"), None, cfg)
        mine = [t for t in two_groups() if t.group == rank]
        algo.learn_from(mine)

        def save(run, name: str) -> None:  # every rank under FSDP; rank 0 alone otherwise
            if sharded or rank == 0:
                run.save(Path(out) / name)
            dist.barrier()

        save(algo, "step1")
        resumed = GRPO.load(Path(out) / "step1")
        resumed.learn_from(mine)
        save(resumed, "step2")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sharded", [True, False], ids=["fsdp", "data-parallel"])
def test_two_ranks_step_and_checkpoint_the_float32_masters(sharded, tmp_path):
    import torch.multiprocessing as mp
    from test_fsdp import TOLERANCE, _fsdp_overrides

    args = (2, str(tmp_path / "init"), str(tmp_path), sharded)
    mp.spawn(_fsdp_rank, args=args, nprocs=2, join=True)
    cfg = config("grpo", tmp_path / "single", **_fsdp_overrides(sharded=False))
    single = make_algorithm("grpo", policy(dtype="bfloat16"), None, cfg)
    single.learn_from(two_groups())
    unsharded = {"trainer.sharding": "none"}
    for step in ("step1", "step2"):
        state = torch.load(tmp_path / step / "trainer.pt", weights_only=True)["optimizer"]
        masters = [state["state"][i]["master"] for i in sorted(state["state"])]
        assert all(m.dtype == torch.float32 and not hasattr(m, "placements") for m in masters)
    loaded = GRPO.load(tmp_path / "step1", config_overrides=unsharded)
    ours, theirs = (master_weights_by_name(a.optimizer, a.policy.model) for a in (single, loaded))
    assert ours.keys() == theirs.keys()
    # The same step as one process, up to the order of bf16 gradient sums: AdamW's first
    # step is lr * sign(gradient), so a near-zero gradient rounded the other way moves its
    # element by 2 * lr (measured: 0.05% of elements; mean difference 4e-7, lr 1e-3).
    diff = torch.cat([(ours[k] - theirs[k]).abs().flatten() for k in ours])
    assert float((diff < TOLERANCE).float().mean()) > 0.99
    assert float(diff.mean()) < TOLERANCE
    second = GRPO.load(tmp_path / "step2", config_overrides=unsharded)
    moved = master_weights_by_name(second.optimizer, second.policy.model)
    assert min(float((moved[k] - theirs[k]).abs().max()) for k in moved) > 0  # it stepped


@pytest.mark.parametrize("chunk", [2**24, 7])  # whole tensors; slices of 7 elements
def test_master_adamw_is_adamw_on_the_float32_masters(chunk, monkeypatch):
    """Against torch's AdamW on float32 copies of the same weights and gradients: the
    masters equal its weights exactly, and the bf16 weights are them rounded."""
    from algorithms.trainer import optim

    monkeypatch.setattr(optim, "CHUNK", chunk)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(5, 6, generator=g) * 0.02, torch.randn(11, generator=g)]
    ours = [torch.nn.Parameter(w.bfloat16()) for w in weights]
    theirs = [torch.nn.Parameter(w.bfloat16().float()) for w in weights]
    settings = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    mine = optim.MasterAdamW(ours, **settings)
    reference = torch.optim.AdamW(theirs, **settings, foreach=False)
    for _ in range(3):
        grads = [torch.randn(w.shape, generator=g).bfloat16() for w in weights]
        for a, b, grad in zip(ours, theirs, grads, strict=True):
            a.grad, b.grad = grad.clone(), grad.float()
        mine.step()
        reference.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine.state[a]["master"], b.detach(), rtol=1e-6, atol=1e-9)
        assert torch.equal(a.detach(), mine.state[a]["master"].bfloat16())
        assert int(mine.state[a]["step"]) == 3
