"""``tutti swarm`` from the command line: errors, listing, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tutti.cli.main import main


def write_config(setup, path: Path, **kw) -> Path:
    cfg = {
        "experts": [str(e) for e in setup["experts"]],
        "utility": {"name": "mean_loglik", "task": str(setup["task"]), "options": {"choice_prefix": ""}},
        "n_particles": 6, "patience": 8, "max_iterations": 8, "seed": 1,
    }
    cfg.update(kw)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_cli_errors_exit_2(swarm_setup, tmp_path, capsys):
    cfg = write_config(swarm_setup, tmp_path / "s.yaml")
    code, _, err = run_cli(["swarm", str(cfg)], capsys)
    assert code == 2 and "--out" in err
    code, _, err = run_cli(["swarm", str(cfg), "utility.split=test", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "allow_test_set_in_search" in err
    code, _, err = run_cli(["swarm", str(cfg), "inertai=0.3", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "inertai" in err
    code, _, err = run_cli(["swarm", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "config.yaml" in err
    bad = write_config(swarm_setup, tmp_path / "b.yaml", utility={"name": "exact_macth", "task": "x"})
    code, _, err = run_cli(["swarm", str(bad), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "exact_match" in err  # did-you-mean
    code, out, _ = run_cli(["swarm", "--list-utilities"], capsys)
    assert code == 0 and "mc_loglik" in out and "llm_judge" in out
    code, out, _ = run_cli(["swarm", "--list-baselines"], capsys)
    assert code == 0 and "lorahub" in out and "dare_ties" in out


def test_sigkill_then_resume_equals_uninterrupted(swarm_setup, tmp_path, capsys):
    cfg = write_config(swarm_setup, tmp_path / "s.yaml")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tutti.cli.main", "swarm", str(cfg), "--out", str(killed), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = killed / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 2 <= done_before < 9
    code, out, _ = run_cli(["swarm", "--resume", str(killed), "-q"], capsys)
    assert code == 0 and "best dev" in out
    code, _, _ = run_cli(["swarm", str(cfg), "--out", str(clean), "-q"], capsys)
    assert code == 0
    a = [json.loads(x) for x in (killed / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (clean / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in a] == [x["iteration"] for x in b]
    assert [x["utilities"] for x in a] == [x["utilities"] for x in b]
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (killed, clean))
    assert sa["best_dev"] == sb["best_dev"] and sa["best_test"] == sb["best_test"]
    wa = (killed / "best/adapter_model.safetensors").read_bytes()
    assert wa == (clean / "best/adapter_model.safetensors").read_bytes()


def test_cli_baseline(swarm_setup, tmp_path, capsys):
    cfg = write_config(swarm_setup, tmp_path / "s.yaml")
    code, out, _ = run_cli(["swarm", str(cfg), "--baseline", "uniform_soup", "--out", str(tmp_path / "soup"), "-q"],
                           capsys)
    assert code == 0 and out.startswith("uniform_soup: dev") and "test" in out
    assert json.loads((tmp_path / "soup/baseline.json").read_text())["representation"] == "lora_factors"
    code, _, err = run_cli(["swarm", str(cfg), "--baseline", "tie", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "Did you mean 'ties'" in err
