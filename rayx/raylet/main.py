"""Entry point of the raylet process: ``python -m rayx.raylet.main`` with its JSON
config on stdin (it holds the cluster token, so never on the command line).

Creates the node's arena, connects to the GCS, starts the event loop and the
worker pool, then prints one line ``READY <node id hex>`` on stdout so that the
process that launched it knows it can connect. SIGTERM stops the node: the
arena file and the raylet's socket are unlinked, workers are killed and their
sockets removed, then the node is marked DEAD in the GCS. When started by
``rayx.init()`` or ``Cluster`` the parent keeps the raylet's stdin open while it
lives, and the end of stdin stops the raylet as SIGTERM would, so a driver that
dies however it dies (SIGKILL included) leaves no files behind. (A parent-death
signal would fire when the parent's *thread* that started the node exits.) The raylet
runs in its own session (see ``rayx.node``), so the signals of the driver's
terminal (Ctrl-C) never reach it or its workers.
"""
import asyncio
import json
import logging
import os
import signal
import sys
import threading

STOP_TIMEOUT_S = 8.0   # stopping takes at most this long (rayx.node waits 10 s, then SIGKILLs)


def main():
    config = json.loads(sys.stdin.buffer.readline())
    # The raylets of a session share logs/raylet.err: each line names its node.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s raylet {config['node_id'][:12]}: %(message)s")
    from rayx._core.ids import NodeID
    from rayx._core.store import Arena
    from rayx.gcs import GcsClient
    from rayx.raylet.node_manager import Raylet

    node_id = NodeID.from_hex(config["node_id"]).binary()
    socket_path = config["socket_path"]
    os.makedirs(os.path.dirname(socket_path), exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):   # from now on a signal only sets `stopped`
        loop.add_signal_handler(sig, stopped.set)
    if config.get("die_with_parent"):
        def parent_pipe_readable():
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:                   # the parent process is gone
                loop.remove_reader(0)
                stopped.set()
        loop.add_reader(0, parent_pipe_readable)
    arena = Arena.create(config["arena_path"], int(config["object_store_memory"]))
    gcs = raylet = None
    try:
        gcs = GcsClient(config["gcs_address"], config["password"])
        raylet = Raylet(loop, node_id=node_id, session_dir=config["session_dir"], socket_path=socket_path,
                        arena=arena, gcs=gcs, resources=config["resources"],
                        min_workers=int(config["num_workers"]), node_info=_node_info(config, socket_path),
                        token=config["password"], **_monitor_config(config))

        async def run():
            await raylet.start()
            print("READY", node_id.hex(), flush=True)
            await stopped.wait()

        loop.run_until_complete(run())
    finally:
        # Files first, and a bound on the rest: telling the GCS the node is gone waits
        # on a GCS that may be going away too (its shards die with the driver as well).
        _exit_after(STOP_TIMEOUT_S)
        arena.unlink(missing_ok=True)
        try:
            os.unlink(socket_path)
        except OSError:
            pass
        try:
            if raylet is not None:
                raylet.stop()
        finally:
            if gcs is not None:
                gcs.close()


def _exit_after(seconds):
    timer = threading.Timer(seconds, os._exit, args=(1,))
    timer.daemon = True
    timer.start()


def _monitor_config(config):
    if config.get("node_timeout_s") is None:
        return {}
    return {"node_timeout_s": float(config["node_timeout_s"])}


def _node_info(config, socket_path):
    return {
        "node_name": config.get("node_ip_address", "127.0.0.1"),
        "node_ip_address": config.get("node_ip_address", "127.0.0.1"),
        "raylet_socket": socket_path,
        "arena_path": config["arena_path"],
        "object_store_memory": int(config["object_store_memory"]),
        "session_dir": config["session_dir"],
        "is_head": bool(config.get("is_head")),
        "pid": os.getpid(),
    }

if __name__ == "__main__":
    main()
