"""Connecting to the Ray cluster of a sweep and reading its nodes.

A cluster that is not there must stop the sweep with one line before anything runs. Ray's own connection
attempts can take minutes against an address nobody listens on and print C++ warnings on the way, so the
address is first tried with a plain TCP connection, and what Ray writes to stderr while connecting is kept out
of the CLI's output (logged at debug level).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bench.targets import ANY_NODE, SLOT, TargetSpec
from core.proc import Terminated, interrupt_on_sigterm, terminated_by
from core.yamlio import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[cluster]'"
REACH_TIMEOUT_S = 5.0
NAMESPACE = "paddle-onnx-bench"


class ClusterUnavailable(ConfigError):
    """No usable cluster at the address asked (a usage error: exit 2, nothing run)."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ClusterUnavailable(f"a sweep on a cluster needs Ray, which is not installed here ({exc}): "
                                 f"{INSTALL_HINT}") from None
    return ray


def get_result(ref):
    """``ray.get(ref)``; a SIGTERM that arrives while Ray waits stops the caller as SIGTERM. Ray checks signals
    inside its wait and may hand our handler's Terminated on as an error of its own, which would otherwise read as
    the task's failure (a retry or an error record, and a sweep that goes on)."""
    try:
        return import_ray().get(ref)
    except Exception:
        signum = terminated_by()
        if signum:
            raise Terminated(signum) from None
        raise


@dataclass(frozen=True)
class Node:
    """A live Ray node as the driver sees it."""

    node_id: str
    ip: str
    host: str
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def offers(self, target: TargetSpec) -> bool:
        return target.offered_by(self.resources, self.labels)

    @property
    def name(self) -> str:
        return f"{self.host} ({self.ip}, node {self.node_id[:12]})"

    def facts(self) -> dict[str, str]:
        """What a record says of the node (``placement``)."""
        return {"node_id": self.node_id, "node_ip": self.ip, "node_host": self.host}


class Cluster:
    """The connected cluster: its live nodes, and which of them offer a target."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.known: dict[str, Node] = {}  # every node seen alive, dead ones included, to name them in records

    def nodes(self) -> list[Node]:
        """The nodes alive now (as far as Ray's control store knows: a node just killed may still be listed)."""
        ray = import_ray()
        alive = []
        for info in ray.nodes():
            if not info.get("Alive"):
                continue
            node = Node(info["NodeID"], info.get("NodeManagerAddress", "?"),
                        info.get("NodeManagerHostname") or info.get("NodeName") or "?",
                        dict(info.get("Resources") or {}), dict(info.get("Labels") or {}))
            self.known[node.node_id] = node
            alive.append(node)
        return alive

    def offering(self, target: TargetSpec, avoid: Sequence[str] = ()) -> list[Node]:
        return [n for n in self.nodes() if n.offers(target) and n.node_id not in avoid]

    def describe_nodes(self) -> str:
        nodes = self.nodes()
        return "; ".join(f"{n.name}: {_offer_text(n)}" for n in nodes) or "none"

    def check_targets(self, targets: Sequence[TargetSpec]) -> None:
        """Every target asked has a live node with a slot, or ClusterUnavailable naming what is there."""
        for target in targets or (ANY_NODE,):
            if not self.offering(target):
                raise ClusterUnavailable(
                    f"no node of the cluster at {self.address} offers target {target.name!r} ({target.describe()}) "
                    f"with a {SLOT}; nodes: {self.describe_nodes()}. Add one on a machine of that kind: "
                    f"{start_command(target)}")

    def close(self) -> None:
        """Disconnect; a failure here is logged, never raised: it must not replace the exit code of the sweep
        (a SIGTERM's 143) that is closing it."""
        try:
            import_ray().shutdown()
        except Exception as exc:
            log.warning("disconnecting from the Ray cluster failed: %s", exc)


def start_command(target: TargetSpec) -> str:
    """The ``ray start`` that makes a machine a node of ``target``."""
    resources = {k: v for k, v in target.resources.items() if k not in ("CPU", "GPU")}
    command = f"ray start --address HEAD:6379 --resources '{json.dumps({SLOT: 1, **resources})}'"
    if "GPU" in target.resources:
        command += f" --num-gpus {target.resources['GPU']:g}"
    labels = {k: v for k, v in target.labels.items() if not v.startswith(("!", "in("))}  # plain values only
    if labels:
        command += " --labels " + ",".join(f"{k}={v}" for k, v in labels.items())
    return command


def _offer_text(node: Node) -> str:
    resources = {k: v for k, v in node.resources.items()
                 if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    labels = {k: v for k, v in node.labels.items() if not k.startswith("ray.io/")}
    return f"resources {resources}" + (f", labels {labels}" if labels else "")


def connect(address: str, targets: Sequence[TargetSpec] = ()) -> Cluster:
    """Connect the driver to the cluster at ``address`` (``auto``, ``ray://HOST:PORT`` or ``HOST:PORT``) and check
    it can run every target asked; ``ClusterUnavailable`` (one line) otherwise."""
    check_reachable(address)
    ray = import_ray()
    with _stderr_kept_aside() as chatter:
        try:
            ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, TimeoutError...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterUnavailable(f"no Ray cluster at {address}: {first}") from None
    log.debug("Ray while connecting: %s", "".join(chatter))
    interrupt_on_sigterm()  # ray.init replaced the SIGTERM handler with one that exits at once
    _quiet_cluster_notices(ray)
    cluster = Cluster(address)
    try:
        cluster.check_targets(targets)
    except ClusterUnavailable:
        cluster.close()
        raise
    return cluster


def _quiet_cluster_notices(ray) -> None:
    """Ray's driver prints the cluster's notices (a raylet that died, a node marked dead) on stdout from a thread
    of its own, between the sweep's lines and into its table; the sweep says per cell what a dead node cost. The
    switch is private to Ray (pinned in pyproject.toml); without it the notices are only noise."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if hasattr(worker, "_worker_logs_enabled"):
        worker._worker_logs_enabled = False


def check_reachable(address: str) -> None:
    """A TCP connection to ``HOST:PORT`` (or ``ray://HOST:PORT``); ``auto`` is Ray's to find."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"cluster address {address!r} is not auto, ray://HOST:PORT or HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ClusterUnavailable(f"no Ray cluster at {address}: {exc.strerror or exc} (start one with "
                                 "`ray start --head`, or check the address)") from None


@contextlib.contextmanager
def _stderr_kept_aside() -> Iterator[list[str]]:
    """File descriptor 2 goes to a temporary file for the duration (Ray's C++ core writes there directly); what
    was written is in the yielded list afterwards."""
    kept: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as aside:
        saved = os.dup(2)
        try:
            os.dup2(aside.fileno(), 2)
            yield kept
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            aside.seek(0)
            kept.append(aside.read())
