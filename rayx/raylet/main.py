"""Entry point of the raylet process: ``python -m rayx.raylet.main`` with its JSON
config on stdin (it holds the cluster token, so never on the command line).

Creates the node's arena, connects to the GCS, starts the event loop and the
worker pool, then prints one line ``READY <node id hex>`` on stdout so that the
process that launched it knows it can connect. SIGTERM (or the death of the
parent, when started by ``rayx.init()``) stops the node: workers are killed,
the arena is unlinked and the socket removed.
"""
import asyncio
import json
import logging
import os
import signal
import sys


def main():
    config = json.loads(sys.stdin.read())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s raylet: %(message)s")
    if config.get("die_with_parent"):
        from rayx._private.process import die_with_parent
        die_with_parent()

    from rayx._core.ids import NodeID
    from rayx._core.store import Arena
    from rayx.gcs import GcsClient
    from rayx.raylet.node_manager import Raylet

    node_id = NodeID.from_hex(config["node_id"]).binary()
    socket_path = config["socket_path"]
    os.makedirs(os.path.dirname(socket_path), exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    arena = Arena.create(config["arena_path"], int(config["object_store_memory"]))
    gcs = GcsClient(config["gcs_address"], config["password"])

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    node_info = {
        "node_name": config.get("node_ip_address", "127.0.0.1"),
        "node_ip_address": config.get("node_ip_address", "127.0.0.1"),
        "raylet_socket": socket_path,
        "arena_path": config["arena_path"],
        "object_store_memory": int(config["object_store_memory"]),
        "session_dir": config["session_dir"],
        "is_head": bool(config.get("is_head")),
        "pid": os.getpid(),
    }
    raylet = Raylet(loop, node_id=node_id, session_dir=config["session_dir"], socket_path=socket_path,
                    arena=arena, gcs=gcs, resources=config["resources"],
                    min_workers=int(config["num_workers"]), node_info=node_info,
                    token=config["password"])
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    async def run():
        await raylet.start()
        print("READY", node_id.hex(), flush=True)
        await stopped.wait()

    try:
        loop.run_until_complete(run())
    finally:
        raylet.stop()
        arena.unlink()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
        gcs.close()


if __name__ == "__main__":
    main()
