"""``tutti bench collab``: the routing proof on the expert zoo (router over the experts, cascade base -> experts).

Flat recipe: load SmolLM2-135M-Instruct and each zoo LoRA expert (merged into a copy of the base), score every
model on a mixed-task dev and test set (multiple choice by log-likelihood: one forward pass per option, the
cheap path on a CPU), train routers on the dev correctness matrix, learn the cascade threshold on dev, and report
test accuracy, cost and curves beside the best single expert, the base model, random routing and the oracle.
Per-prompt routing over deterministic members is computed from the members' test scores; a spot check runs the
real router composite through the harness and must give the same accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add ``tutti bench collab``."""

    @app.command("collab", help="Routing proof on the expert zoo: routers and a cascade vs the best single expert; "
                                "writes the 'routing' section of docs/results.md.")
    def _cmd(
        dev_limit: int = typer.Option(30, "--dev-limit", help="Dev examples per task (router training)."),
        test_limit: int = typer.Option(50, "--test-limit", help="Test examples per task."),
        tasks: str = typer.Option("auto", "--tasks", help="Comma-separated zoo tasks with experts (auto: all "
                                                           "multiple-choice tasks that have an expert)."),
        out: Path = typer.Option(Path("docs/results.md"), "--out", help="Markdown file to write the section to."),
    ) -> None:
        run(dev_limit=dev_limit, test_limit=test_limit, tasks=tasks, out=out)


def _load_models(task_names: list[str]) -> tuple[list[str], list[object]]:
    import copy

    from tutti.models.hf import HFModel
    from tutti.models.lora import apply_lora, load_lora
    from tutti.zoo import expert_path

    base = HFModel.load("smollm2-135m-instruct", name="base")
    models: list[object] = [base]
    names = ["base"]
    sd = base.module.state_dict()
    for t in task_names:
        module = copy.deepcopy(base.module)
        module.load_state_dict(apply_lora(sd, load_lora(expert_path(t))))
        models.append(HFModel(module, base.tokenizer, name=f"expert:{t}"))
        names.append(f"expert:{t}")
    return names, models


def _score(models: list[object], examples: list[object]) -> tuple[object, object]:
    """(correct, confidence) ``(n, models)``: MC by log-likelihood of each option after the chat prompt."""
    import torch

    from tutti.evaluation.scoring import LoglikCache

    reqs, spans = [], []
    for e in examples:
        p = [{"role": "user", "content": e.input}]
        spans.append((len(reqs), len(e.choices)))
        reqs += [(p, " " + c) for c in e.choices]
    cache = LoglikCache(reqs, batch_size=16)
    correct = torch.zeros(len(examples), len(models))
    conf = torch.zeros(len(examples), len(models))
    for j, m in enumerate(models):
        res = cache(m)  # type: ignore[arg-type]
        for i, (e, (s, k)) in enumerate(zip(examples, spans, strict=True)):
            lp = torch.tensor([r.logprob for r in res[s:s + k]])
            p = torch.softmax(lp, 0)
            correct[i, j] = float(int(p.argmax()) == e.answer_index)
            conf[i, j] = float(p.max())
    return correct, conf


def run(*, dev_limit: int, test_limit: int, tasks: str, out: Path) -> str:
    """Run the experiment and write the ``routing`` section; returns the markdown."""
    import torch

    from tutti.evaluation.datasets import load_split
    from tutti.recipes.report import machine_line, md_table, write_section
    from tutti.routing.cascade import learn_thresholds, simulate
    from tutti.routing.decide import choose
    from tutti.routing.features import MiniLMFeatures
    from tutti.routing.routers import build_router
    from tutti.zoo import trained_tasks
    from tutti.zoo.tasks import EXPERTS_ROOT, task_path

    t0 = time.perf_counter()
    if tasks == "auto":
        names = [t for t in trained_tasks() if (EXPERTS_ROOT / t / "adapter_config.json").is_file()
                 and load_split(task_path(t, "dev").parent, "dev", limit=1)[0].choices is not None]
    else:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
    if len(names) < 2:
        raise typer.BadParameter(f"need at least two multiple-choice tasks with experts, found {names}")
    dev = [e for t in names for e in load_split(task_path(t, "dev").parent, "dev", limit=dev_limit)]
    test = [e for t in names for e in load_split(task_path(t, "test").parent, "test", limit=test_limit)]
    model_names, models = _load_models(names)
    dev_c, dev_conf = _score(models, dev)
    test_c, test_conf = _score(models, test)
    cache = Path("runs") / "bench-collab"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"dev": (dev_c, dev_conf), "test": (test_c, test_conf), "models": model_names}, cache / "scores.pt")
    experts = list(range(1, len(models)))
    feats = MiniLMFeatures()
    x_dev, x_test = feats.features([e.input for e in dev]), feats.features([e.input for e in test])

    acc = test_c.mean(0)
    best_e = max(experts, key=lambda j: float(acc[j]))
    rows: list[list[object]] = [[model_names[j], f"{float(acc[j]):.3f}", "1", "-"] for j in range(len(models))]
    n = len(test)
    rand = float(test_c[:, experts].mean())
    rows.append(["random routing over experts (expected)", f"{rand:.3f}", "1", "-"])
    rows.append(["oracle over experts", f"{float(test_c[:, experts].max(1).values.mean()):.3f}", "1", "-"])
    router_acc: dict[str, float] = {}
    for rname, kw in (("knn", {"k": 10}), ("logistic", {"steps": 200}), ("mlp", {"steps": 200}), ("mf", {"steps": 200})):
        r = build_router(rname, **kw).fit(x_dev, dev_c[:, experts])
        d = choose(r.predict(x_test))
        a = float(test_c[torch.arange(n), torch.tensor(experts)[d]].mean())
        router_acc[rname] = a
        rows.append([f"router {rname} over experts (MiniLM)", f"**{a:.3f}**", "1",
                     "shares " + "/".join(f"{float((d == k).float().mean()):.2f}" for k in range(len(experts)))])
    # cascade: base first (its own answer probability), then the kNN router over the experts
    knn = build_router("knn", k=10).fit(x_dev, dev_c[:, experts])
    dev_route = torch.tensor(experts)[choose(knn.predict(x_dev))]
    test_route = torch.tensor(experts)[choose(knn.predict(x_test))]

    def stage_matrix(correct: torch.Tensor, conf: torch.Tensor, route: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(len(route))
        return (torch.stack([conf[:, 0], torch.ones(len(route))], 1),
                torch.stack([correct[:, 0], correct[idx, route]], 1))

    ds, dc = stage_matrix(dev_c, dev_conf, dev_route)
    ts, tc = stage_matrix(test_c, test_conf, test_route)
    costs = [1.0, 1.0]
    thr = learn_thresholds(ds, dc, costs, cost_weight=0.05)
    c_acc, c_cost, c_stage = simulate(ts, tc, costs, thr)
    rows.append([f"cascade base -> kNN router (threshold {thr[0]:.3f} learned on dev)", f"{c_acc:.3f}",
                 f"{c_cost:.2f}", f"escalated {float((c_stage == 1).float().mean()):.2f}"])
    curve = []
    for q in torch.linspace(0, 1, 11).tolist():
        t = float(torch.quantile(ts[:, 0], q)) if q < 1 else float("inf")
        a, c, s = simulate(ts, tc, costs, [t])
        curve.append([f"{float((s == 1).float().mean()):.2f}", f"{c:.2f}", f"{a:.3f}"])

    # spot check: the real router composite through the harness on the test set
    from tutti.evaluation.harness import evaluate
    from tutti.routing.strategy import RouterModel

    composite = RouterModel([models[j] for j in experts], knn, feats, name="router-knn")
    spot = test[: min(len(test), 12)]
    spot_dir = Path("runs") / "bench-collab-spot"
    spot_dir.mkdir(parents=True, exist_ok=True)
    from tutti.evaluation.datasets import write_split

    write_split(spot_dir / "test.jsonl", spot)
    online = evaluate(composite, spot_dir, split="test", utility="mc_loglik", progress=False)
    offline = float(test_c[torch.arange(len(spot)), test_route[: len(spot)]].mean())
    best_router = max(router_acc, key=router_acc.__getitem__)
    verdict = "beats" if router_acc[best_router] > float(acc[best_e]) else "does NOT beat"
    md = "\n".join([
        f"Mixed-task test set: {', '.join(names)} ({test_limit} test examples each, {n} in all); routers trained on "
        f"{dev_limit} dev examples per task ({len(dev)} in all). Members: SmolLM2-135M-Instruct (base) and one LoRA "
        "expert per task (merged). Utility: multiple choice by log-likelihood after the chat prompt. Cost = model "
        "calls per prompt.",
        "",
        md_table(["system", "test accuracy", "calls / prompt", "notes"], rows),
        "",
        f"Best router ({best_router}, {router_acc[best_router]:.3f}) {verdict} the best single expert "
        f"({model_names[best_e]}, {float(acc[best_e]):.3f}).",
        "",
        "Cascade accuracy-vs-cost curve on test (threshold swept over quantiles of the base's confidence):",
        "",
        md_table(["share escalated", "calls / prompt", "accuracy"], curve),
        "",
        f"Spot check: the real `router` composite run through `tutti.evaluation.harness.evaluate` on the first "
        f"{len(spot)} test examples: {online.accuracy:.3f} (offline from member scores: {offline:.3f}).",
        "",
        "Not run here (CPU time): compute-matched self-consistency baselines; generation-scored tasks.",
        "",
        f"Command: `tutti bench collab --dev-limit {dev_limit} --test-limit {test_limit} --tasks {tasks}`; "
        f"{time.perf_counter() - t0:.0f} s. {machine_line()}",
    ])
    write_section(out, "routing", md)
    print(md)
    return md
