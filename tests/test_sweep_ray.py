"""Sweeps on a real Ray cluster (issue 19): the table equals the local engine's, and a group whose
worker is killed mid-task is trained again.

The cluster is one head node started for the test session inside a private network namespace on
loopback (`unshare -n`), so nothing leaves the machine; the sweep's driver runs in that namespace
too (`nsenter --net`), writing into the test's folder. The head is stopped by its own pid (`ray
start --block` stops its processes when terminated), never by `ray stop`, which would end every
Ray process of the user. Where namespaces or Ray are not available, the tests are skipped with
the reason."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

PORT = 6399
ADDRESS = f"127.0.0.1:{PORT}"
TIMING = ["threads", "train_seconds", "group_seconds"]  # how each group ran
DRIVER = """
import json, sys
from hooked_mlp import MLPConfig, TrainConfig
from hooked_mlp.jobs import sweep
a = json.loads(sys.argv[1])
sweep(a["grid"], seeds=a["seeds"], model=MLPConfig(**a["model"]),
      recipe=TrainConfig(**a["recipe"]), out=a["out"], engine=a["engine"],
      ray_address=a.get("address"), workers=a.get("workers"), group_size=a["group_size"],
      progress=False, page=False)
"""


def _descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    pytest.importorskip("ray")
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("unshare/nsenter not found: no private network namespace for a Ray cluster")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private network namespace: {probe.stderr.decode().strip()}")
    ray_bin = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{ray_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    folder = tmp_path_factory.mktemp("ray")
    # a short path: Ray's unix sockets live under it, and a socket path has a ~107-byte limit
    # that pytest's numbered tmp dirs come near (a CI run's head there never answered)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = open(folder / "head.log", "wb")  # noqa: SIM115
    # its own temp dir: `ray start --head` refuses a port that the newest cluster named in its
    # temp dir still holds (found by the pid, in any network namespace), so a head left running
    # by another test session on this machine must not be read as this session's
    head = subprocess.Popen(
        ["unshare", "-n", "bash", "-c",
         f"ip link set lo up && exec {ray_bin} start --head --block --node-ip-address=127.0.0.1 "
         f"--port={PORT} --num-cpus=2 --include-dashboard=false --disable-usage-stats "
         f"--temp-dir={temp}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and head.poll() is None:
        if _in_namespace(head.pid, ["-c", f"import ray; ray.init(address='{ADDRESS}', "
                                    "logging_level='ERROR'); ray.shutdown()"], env,
                         timeout=60).returncode == 0:
            break
        time.sleep(1)
    else:
        head.kill()
        pytest.skip("the Ray head did not start (see head.log)")
    seen = _descendants(head.pid)
    yield head, env
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(30)
    except subprocess.TimeoutExpired:
        head.kill()
    for p in seen + _descendants(head.pid):  # what the head started, by pid
        if p.is_running():
            p.kill()
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def _in_namespace(pid, args, env, timeout=300, **kw):
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, *args],
                          env=env, capture_output=True, timeout=timeout, **kw)


def _spec(out, engine, epochs=40, **extra):
    return {"grid": {"weight_decay": [0.1, 1.0], "train_frac": [0.3, 0.6]}, "seeds": [0, 1],
            "model": {"p": 11, "d_hidden": 8},
            "recipe": {"epochs": epochs, "batch_size": 4096, "lr": 0.01},
            "out": str(out), "engine": engine, "group_size": 2, **extra}


def _table(folder):
    t = pd.read_parquet(Path(folder) / "results").drop(columns=TIMING)
    return t.sort_values("run").reset_index(drop=True)


def _drive(head, env, spec):
    return subprocess.Popen(["nsenter", f"--net=/proc/{head.pid}/ns/net", sys.executable, "-c",
                             DRIVER, json.dumps(spec)], env=env, stderr=subprocess.PIPE)


def test_a_sweep_on_a_ray_cluster_equals_the_local_sweep(ray_head, tmp_path):
    head, env = ray_head
    ray = _in_namespace(head.pid, ["-c", DRIVER, json.dumps(
        _spec(tmp_path / "ray", "ray", address=ADDRESS))], env)
    assert ray.returncode == 0, ray.stderr.decode()[-3000:]
    local = _in_namespace(head.pid, ["-c", DRIVER, json.dumps(
        _spec(tmp_path / "local", "local", workers=1))], env)
    assert local.returncode == 0, local.stderr.decode()[-3000:]
    r, loc = _table(tmp_path / "ray"), _table(tmp_path / "local")
    assert len(r) == 8 and sorted(r["run"]) == list(range(8))
    pd.testing.assert_frame_equal(r, loc)


def test_a_ray_task_trains_with_the_threads_ray_assigned_it(ray_head, tmp_path):
    """Each task asks Ray for `threads` CPUs (the head has 2); inside it, torch's threads are
    set to the CPUs Ray assigned, whatever Ray's worker started with (OMP_NUM_THREADS)."""
    from hooked_mlp.checks import cores

    head, env = ray_head
    if cores() < 2:
        pytest.skip("one core: every task gets one thread")
    for workers, expected in ((cores() // 2, 2), (cores(), 1)):  # threads = cores // workers
        out = tmp_path / f"w{workers}"
        run = _in_namespace(head.pid, ["-c", DRIVER, json.dumps(
            _spec(out, "ray", address=ADDRESS, workers=workers))], env)
        assert run.returncode == 0, run.stderr.decode()[-3000:]
        threads = pd.read_parquet(out / "results")["threads"]
        assert len(threads) == 8 and set(threads) == {expected}, (workers, list(threads))


def test_a_group_whose_ray_worker_is_killed_is_trained_again(ray_head, tmp_path):
    import psutil

    head, env = ray_head
    spec = _spec(tmp_path / "ray", "ray", epochs=3000, address=ADDRESS)
    driver = _drive(head, env, spec)
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and driver.poll() is None and time.monotonic() < deadline:
            for p in _descendants(head.pid):
                try:
                    title = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                if "hooked-mlp sweep group" in title:
                    time.sleep(0.5)  # mid-task
                    p.kill()
                    killed = title
                    break
            time.sleep(0.05)
        assert killed is not None, "no worker was seen running a group"
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
    assert driver.returncode == 0, err.decode()[-3000:]
    local = _in_namespace(head.pid, ["-c", DRIVER, json.dumps(
        {**spec, "out": str(tmp_path / "local"), "engine": "local", "workers": 1,
         "address": None})], env)
    assert local.returncode == 0, local.stderr.decode()[-3000:]
    pd.testing.assert_frame_equal(_table(tmp_path / "ray"), _table(tmp_path / "local"))


def test_a_missing_ray_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    from hooked_mlp import MLPConfig, TrainConfig
    from hooked_mlp.cli import main
    from hooked_mlp.jobs import sweep

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'hooked-mlp\[ray\]'"):
        sweep({"weight_decay": [0.1]}, model=MLPConfig(p=11, d_hidden=8),
              recipe=TrainConfig(epochs=5), out=tmp_path / "S", engine="ray", progress=False)
    assert not (tmp_path / "S").exists()  # said before the folder is touched
    rc = main(["sweep", "--grid", "weight_decay=0.1", "--p", "11", "--epochs", "5",
               "--engine", "ray", "--no-progress", "--out", str(tmp_path / "T")])
    err = capsys.readouterr().err
    assert rc != 0 and "hooked-mlp[ray]" in err and len(err.strip().splitlines()) == 1
