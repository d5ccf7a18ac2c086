"""Where the runs of a sweep are made: here, each in a fresh process, or on a Ray cluster.

- :class:`LocalExecutor` (default) runs the plan one run after another in this process,
  since two energy measurements on one device must never overlap; neighbours that share
  their load-time settings reuse the loaded model (:class:`~llem.study.reuse.KeptBackend`).
  With ``study.cold_start`` each run is made in a fresh Python process instead
  (``python -m llem.study --one CONFIG.json --out RESULT.json``, see :mod:`llem.study.__main__`).
- :class:`RayExecutor` cuts the plan into groups of neighbours that share a load key
  (:func:`~llem.study.plan.load_groups`) and runs each group in one Ray actor, which
  reserves the devices it measures and keeps the model loaded across the group's runs.
  A group has one actor at a time; one whose actor died (node lost, killed, crashed)
  gets a new actor for the runs it had left. Results are saved here as they come back.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llem.config import ExperimentConfig
from llem.errors import LlemError, RunInterrupted, missing_dependency
from llem.results import Result, load_result
from llem.runner import run as run_one
from llem.study.outcome import error_text
from llem.study.plan import PlannedRun, Study, load_groups
from llem.study.reuse import KeptBackend
from llem.study.store import Driver

#: Custom Ray resource a CPU node can offer (``ray start --resources='{"llem_node": 1}'``)
#: so one trial takes the node whatever its CPU count.
NODE_RESOURCE = "llem_node"


# ====================================================================== here
class LocalExecutor:
    """Trials one after another in this process (or one fresh process each, cold start).

    Energy measurements on one device never overlap. Trials that share load-time settings
    and follow each other reuse the loaded model (:class:`KeptBackend`).
    """

    name = "local"

    def __init__(self) -> None:
        self.backend = KeptBackend()

    @property
    def loads(self) -> int:
        """Models loaded in this process (0 with cold start: each run loads in its own)."""
        return self.backend.loads

    def execute(self, runs: Sequence[PlannedRun], driver: Driver, study: Study,
                prompts: Any) -> None:
        """Run ``runs`` in order, handing results and failures to ``driver``."""
        previous = False
        try:
            for r in runs:
                if previous and r.gap_before_s > 0:
                    time.sleep(r.gap_before_s)
                previous = True
                driver.starting(r)
                try:
                    if study.cold_start:
                        result = cold_run(r.trial.config, prompts, driver.store.meta)
                    else:
                        result = run_one(r.trial.config, prompts, backend=self.backend)
                except RunInterrupted as exc:
                    if isinstance(exc.partial, Result) and exc.partial.complete:
                        driver.finished(r, exc.partial)  # stopped after its last measured run
                    raise
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failing run is recorded, not fatal
                    self.backend.release()  # its state is unknown (after an OOM, say)
                    driver.failed_run(r, error_text(exc), traceback.format_exc())
                    continue
                driver.finished(r, result)
        finally:
            self.backend.release()


class ColdRunError(LlemError):
    """A cold-start run failed in its own process."""


def cold_run(cfg: Any, prompts: Any, tmp_root: Path) -> Result:
    """Run ``cfg`` in a fresh Python process (``python -m llem.study --one``); return its Result.

    Raises
    ------
    ColdRunError
        The run raised in its process (its error), or the process died (its exit code and
        the last lines it wrote to stderr).
    """
    with tempfile.TemporaryDirectory(prefix="cold-", dir=tmp_root) as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(cfg.to_json(only_set=True), encoding="utf-8")
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "llem.study", "--one", str(cfg_path), "--out", str(out)]
        if prompts is not None:
            p = Path(tmp) / "prompts.json"
            p.write_text(json.dumps(prompts if isinstance(prompts, (list, str)) else str(prompts)),
                         encoding="utf-8")
            cmd += ["--prompts", str(p)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        error_file = out.with_suffix(".error.json")
        if error_file.exists():
            info = json.loads(error_file.read_text(encoding="utf-8"))
            raise ColdRunError(info.get("error", "the run failed"))
        if proc.returncode != 0 or not out.exists():
            tail = (err or "").strip().splitlines()[-3:]
            raise ColdRunError(f"the run's process exited with code {proc.returncode}: "
                               + " | ".join(tail))
        return load_result(out)


# ======================================================================= Ray
def _takes_backend(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "backend" or p.kind is p.VAR_KEYWORD for p in params)


def run_trial(payload: Mapping[str, Any], run_fn: Callable[..., Any] | None = None,
              backend: KeptBackend | None = None) -> dict[str, Any]:
    """One run of a Ray actor: wait the gap, run the trial, return its Result as a dict.

    ``run_fn(config, prompts)`` makes the run (default :func:`llem.run`); it gets
    ``backend=`` (the actor's kept backend) when its signature takes it. An exception in
    the run comes back as ``{"ok": False, "error": ..., "traceback": ...}``; the model is
    then released (its state is unknown) and the next run loads it again.
    """
    gap = float(payload.get("gap_s") or 0.0)
    if gap > 0:
        time.sleep(gap)
    fn = run_fn or run_one
    try:
        cfg = ExperimentConfig.from_dict(payload["config"])
        if backend is not None and _takes_backend(fn):
            result = fn(cfg, payload.get("prompts"), backend=backend)
        else:
            result = fn(cfg, payload.get("prompts"))
        env = dict(result.environment or {})
        env["host"] = socket.gethostname()
        return {"ok": True, "result": replace(result, environment=env).to_dict()}
    except Exception as exc:  # noqa: BLE001 - reported to the driver as a failed run
        if backend is not None:
            backend.release()
        return {"ok": False, "error": error_text(exc), "traceback": traceback.format_exc()}


class TrialActor:
    """The body of a Ray actor: the runs of one load group, with one model kept loaded.

    Every reply carries ``loads``, the models this actor has loaded so far.
    """

    def __init__(self, run_fn: Callable[..., Any] | None = None) -> None:
        self.backend = KeptBackend()
        self.run_fn = run_fn

    def run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Make one run of the group (see :func:`run_trial`)."""
        out = run_trial(payload, self.run_fn, self.backend)
        out["loads"] = self.backend.loads
        return out

    def release(self) -> None:
        """Release the kept model."""
        self.backend.release()


def gpus_needed(cfg: Any) -> int:
    """GPUs one trial of ``cfg`` measures (tensor/pipeline parallel sizes, processes)."""
    b = cfg.backend
    if b == "vllm":
        return int(cfg.vllm.tensor_parallel_size or 1) * int(cfg.vllm.pipeline_parallel_size or 1)
    if b == "tensorrt":
        return int(cfg.tensorrt.tp_size or 1) * int(cfg.tensorrt.pp_size or 1)
    return int(cfg.pytorch.num_processes or 1)


@dataclass
class _Group:
    """Runs sharing one load key, the actor that runs them, and its attempts."""

    todo: list[PlannedRun]
    actor: Any = None
    attempts: int = 0
    loads: int = 0  # models the current actor reported loading
    refs: list[Any] = field(default_factory=list)


class RayExecutor:
    """Trials on a Ray cluster, one actor per group of trials sharing a load key.

    Each actor holds the devices it measures (see ``resources``) for as long as its group
    runs, keeps the model loaded across the group's trials, and is ended when the group
    is done; results are saved here as they come back.

    Parameters
    ----------
    address : str, optional
        The cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``), passed to
        ``ray.init`` as given; None starts a local Ray bound to 127.0.0.1 (or joins
        ``RAY_ADDRESS``, or uses the one already initialised in this process).
    max_retries : int
        Times a group gets a new actor when its actor dies (node lost, killed, crashed);
        the new actor makes the runs the group had left.
    resources : dict, optional
        Ray options for every actor (``num_gpus``, ``num_cpus``, ``resources``) instead of
        the defaults: on a cluster with GPUs, ``num_gpus`` = the GPUs the trial measures
        (see ``whole_node``); on CPU nodes, ``{"llem_node": 1}`` when the nodes offer that
        custom resource, else ``num_cpus`` = the largest node's CPU count, so no two
        groups share a node.
    whole_node : bool
        On GPU nodes, give each group a node of its own (default): a run reads every GPU
        that NVML sees on its node, so a trial on another GPU of the same node would add
        its energy to this one. The actor takes ``llem_node: 1`` and the GPUs it uses when
        the nodes offer that resource, else as many GPUs as the largest node has. False
        reserves only the GPUs the trial uses (:func:`gpus_needed`), for runs whose meter
        reads only their own GPUs.
    run : callable, optional
        What an actor calls, ``run(config, prompts) -> Result`` (default :func:`llem.run`);
        when it also takes ``backend=``, it gets the actor's kept backend, so the model
        stays loaded. It is shipped to the workers, so it must be picklable.
    init_kwargs : dict, optional
        Extra keyword arguments for ``ray.init``.

    Attributes
    ----------
    loads : int
        Models the actors loaded in the last :meth:`execute`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3,
                 resources: Mapping[str, Any] | None = None, run: Callable[..., Any] | None = None,
                 init_kwargs: Mapping[str, Any] | None = None, whole_node: bool = True) -> None:
        self.address = address
        self.whole_node = bool(whole_node)
        self.max_retries = int(max_retries)
        self.resources = dict(resources) if resources is not None else None
        self.run = run
        self.init_kwargs = dict(init_kwargs or {})
        self.loads = 0

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise missing_dependency("ray", "ray", "the Ray sweep executor") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                kw["_node_ip_address"] = "127.0.0.1"  # a local Ray: the loopback only
            kw.update(self.init_kwargs)
            ray.init(address=self.address, **kw)
        return ray

    def task_options(self, cfg: Any, ray: Any) -> dict[str, Any]:
        """Resource request of the actor that runs trials of ``cfg``."""
        if self.resources is not None:
            return dict(self.resources)
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if total.get("GPU", 0) > 0:
            need = gpus_needed(cfg)
            if self.whole_node and total.get(NODE_RESOURCE, 0) > 0:
                return {"num_gpus": need, "num_cpus": 1, "resources": {NODE_RESOURCE: 1}}
            if self.whole_node:  # every GPU of the largest node
                need = max([need, *(int(n.get("GPU", 0)) for n in nodes)])
            return {"num_gpus": need, "num_cpus": 1}
        if total.get(NODE_RESOURCE, 0) > 0:
            return {"resources": {NODE_RESOURCE: 1}, "num_cpus": 0}
        return {"num_cpus": max([n.get("CPU", 0) for n in nodes] or [1])}

    def execute(self, runs: Sequence[PlannedRun], driver: Driver, study: Study,
                prompts: Any) -> None:
        """Start an actor per load group, then save each result as it comes back.

        With ``study.cold_start`` every run is a group of its own (a fresh actor, so a
        fresh process, per run).
        """
        ray = self._ray()
        actor_class = ray.remote(TrialActor)
        self.loads = 0
        pending: dict[Any, tuple[_Group, PlannedRun]] = {}

        def start(group: _Group) -> None:
            opts = self.task_options(group.todo[0].trial.config, ray)
            group.attempts += 1
            group.loads = 0
            group.actor = actor_class.options(**opts, max_restarts=0,
                                              max_task_retries=0).remote(self.run)
            group.refs = []
            for r in group.todo:
                payload = {"config": r.trial.config.to_dict(only_set=True), "prompts": prompts,
                           "gap_s": r.gap_before_s if r.position else 0.0}
                ref = group.actor.run.remote(payload)
                pending[ref] = (group, r)
                group.refs.append(ref)

        def end(group: _Group) -> None:
            self.loads += group.loads
            try:
                ray.kill(group.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            group.actor = None

        groups = [_Group([r]) for r in runs] if study.cold_start else [
            _Group(list(g)) for g in load_groups(runs)]
        for g in groups:
            start(g)
            for r in g.todo:
                driver.starting(r)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    if ref not in pending:
                        continue  # a run of an actor that died; its group was restarted
                    group, r = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        for other in group.refs:
                            pending.pop(other, None)
                        end(group)
                        if group.attempts <= self.max_retries:
                            start(group)  # a new actor for the runs the group has left
                        else:
                            error = (f"{error_text(exc)} (the worker died; tried "
                                     f"{group.attempts} times)")
                            for left in group.todo:
                                driver.failed_run(left, error)
                            group.todo = []
                        continue
                    except ray.exceptions.RayError as exc:
                        out = {"ok": False, "error": error_text(exc)}
                    group.todo.remove(r)
                    group.loads = max(group.loads, int(out.get("loads") or 0))
                    if out.get("ok"):
                        driver.finished(r, Result.from_dict(out["result"]))
                    else:
                        driver.failed_run(r, out.get("error", "failed"), out.get("traceback", ""))
                    if not group.todo:
                        end(group)
        except BaseException:
            for g in groups:
                if g.actor is not None:
                    try:
                        ray.kill(g.actor, no_restart=True)
                    except Exception:  # noqa: BLE001
                        pass
            raise


__all__ = ["NODE_RESOURCE", "ColdRunError", "LocalExecutor", "RayExecutor", "TrialActor",
           "cold_run", "gpus_needed", "run_trial"]
