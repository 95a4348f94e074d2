"""The ``rayx`` command line: start and stop nodes, and look at a running cluster."""
import json
import os
import sys

import click

from rayx import node as node_mod


@click.group()
def main():
    """rayx: a distributed execution framework with Ray Core's API."""


@main.command()
@click.option("--head", is_flag=True, help="Start the head node (GCS shards and a raylet).")
@click.option("--address", default=None, help="HOST:PORT of the head's GCS, to add a node to it.")
@click.option("--port", default=6379, show_default=True, type=int, help="Port of the primary GCS shard (head).")
@click.option("--num-cpus", default=None, type=float)
@click.option("--num-gpus", default=None, type=float)
@click.option("--resources", default=None, help='Custom resources as JSON, e.g. \'{"accel": 2}\'.')
@click.option("--object-store-memory", default=None, type=int, help="Bytes of shared memory for objects.")
@click.option("--node-ip-address", default="127.0.0.1", show_default=True)
def start(head, address, port, num_cpus, num_gpus, resources, object_store_memory, node_ip_address):
    """Start a node of a rayx cluster on this machine."""
    if head == bool(address):
        raise click.UsageError("give exactly one of --head or --address")
    try:
        custom = json.loads(resources) if resources else None
    except ValueError as exc:
        raise click.BadParameter(f"--resources is not valid JSON: {exc}")
    if custom is not None and not isinstance(custom, dict):
        raise click.BadParameter("--resources must be a JSON object of name -> amount")
    record = node_mod.read_cluster_file()
    if head and record and _alive(record):
        raise click.ClickException(f"a rayx cluster is already running here (GCS {record['gcs_address']}); "
                                   "run `rayx stop` first")
    cpus = None if num_cpus is None else (int(num_cpus) if num_cpus == int(num_cpus) else num_cpus)
    if head:
        node = node_mod.Node(head=True, port=port, num_cpus=cpus, num_gpus=num_gpus, resources=custom,
                             object_store_memory=object_store_memory, node_ip_address=node_ip_address,
                             detached=True)
    else:
        password = os.environ.get("RAYX_CLUSTER_TOKEN")
        if password is None and record and record.get("gcs_address") == address:
            password = node_mod.read_token(record["session_dir"])
        if password is None:
            raise click.ClickException("set RAYX_CLUSTER_TOKEN to the cluster's token to join it")
        session_dir = record["session_dir"] if record and record.get("gcs_address") == address else None
        node = node_mod.Node(head=False, gcs_address=address, password=password, session_dir=session_dir,
                             num_cpus=cpus, num_gpus=num_gpus, resources=custom,
                             object_store_memory=object_store_memory, node_ip_address=node_ip_address,
                             detached=True)
    node.start()
    if head:
        record = {"gcs_address": node.gcs_address, "session_dir": node.session_dir, "nodes": [node.record()]}
    else:
        record = record if record and record.get("gcs_address") == address else {
            "gcs_address": address, "session_dir": node.session_dir, "nodes": []}
        record["nodes"].append(node.record())
    node_mod.write_cluster_file(record)
    click.echo(f"rayx node started (node id {node.node_id.hex()}).")
    if head:
        click.echo(f"To connect a driver:   rayx.init(address=\"auto\")   or   rayx.init(address=\"{node.gcs_address}\")")
        click.echo(f"To add a node:         rayx start --address={node.gcs_address}")
        click.echo(f"The cluster token is in {node.session_dir}/token (mode 0600).")
    click.echo("To stop:              rayx stop")


def _alive(record):
    import psutil
    return any(psutil.pid_exists(pid) for n in record.get("nodes", []) for pid in n.get("pids", []))


@main.command()
def stop():
    """Stop every rayx node started on this machine with `rayx start`."""
    count = node_mod.stop_recorded_cluster()
    click.echo(f"Stopped {count} rayx process(es).")


def _connect_gcs():
    record = node_mod.read_cluster_file()
    if not record:
        raise click.ClickException("no rayx cluster is running on this machine (start one with `rayx start --head`)")
    from rayx.gcs import GcsClient
    return GcsClient(record["gcs_address"], node_mod.read_token(record["session_dir"]), retry_timeout=3)


def _node_infos(gcs):
    from rayx._core import codec
    return [codec.loads(blob) for blob in gcs.scan("nodes").values()]


@main.command()
def status():
    """Nodes, resources (used / total), pending and running tasks."""
    gcs = _connect_gcs()
    try:
        infos = _node_infos(gcs)
    finally:
        gcs.close()
    click.echo(format_status(infos))


def format_status(infos):
    import time
    lines = ["======== rayx cluster status ========", "Nodes"]
    alive = [i for i in infos if i.get("state") == "ALIVE" and time.time() - i.get("heartbeat", 0) < 30]
    dead = [i for i in infos if i not in alive]
    for info in alive:
        lines.append(f"  {info['node_id'].hex()}  {info.get('node_ip_address')}  "
                     f"{'head' if info.get('is_head') else 'worker'}  workers={info.get('workers', 0)}")
    for info in dead:
        lines.append(f"  {info['node_id'].hex()}  DEAD")
    total, available = {}, {}
    pending = running = 0
    infeasible = []
    for info in alive:
        for name, amount in info.get("resources_total", {}).items():
            total[name] = total.get(name, 0) + amount
        for name, amount in info.get("resources_available", {}).items():
            available[name] = available.get(name, 0) + amount
        pending += info.get("pending_tasks", 0)
        running += info.get("running_tasks", 0)
        infeasible.extend(info.get("infeasible", []))
    lines.append("Resources (used / total)")
    for name in sorted(total):
        if name.startswith("node:"):
            continue
        used = total[name] - available.get(name, 0)
        lines.append(f"  {used:g}/{total[name]:g} {name}")
    lines.append(f"Tasks: {running} running, {pending} pending")
    if infeasible:
        lines.append("Pending demands that no node can satisfy:")
        for demand in infeasible:
            lines.append(f"  {demand}")
    return "\n".join(lines)



@main.command()
@click.option("--filter", "filters", multiple=True,
              help="Run only rows whose name contains this substring (repeatable, or comma-separated).")
@click.option("--exclude", "excludes", multiple=True,
              help="Skip rows whose name contains this substring (repeatable, or comma-separated).")
@click.option("--json", "json_path", default=None, help="Write the results (with cpu count, date, version) here.")
@click.option("--round-seconds", default=2.0, show_default=True, type=float,
              help="Minimum length of each of the measured rounds (Ray uses 2 s).")
@click.option("--rounds", default=4, show_default=True, type=int, help="Measured rounds per row.")
@click.option("--initial-sleep", default=0.0, show_default=True, type=float,
              help="Seconds to sleep before each row (Ray sleeps 10).")
@click.option("--quick", is_flag=True, help="Smoke-test mode: 0.05 s rounds, 2 rounds.")
def microbenchmark(filters, excludes, json_path, round_seconds, rounds, initial_sleep, quick):
    """Run the workloads of `ray microbenchmark` on a fresh local rayx cluster."""
    import rayx
    from rayx._private import microbenchmark as bench
    if quick:
        round_seconds, rounds = 0.05, 2
    if not bench.select(list(filters), list(excludes)):
        raise click.UsageError("no benchmark matches the filter; names are:\n  " + "\n  ".join(bench.ROW_NAMES))
    report = bench.run(rayx, filter=list(filters), exclude=list(excludes), round_seconds=round_seconds,
                       rounds=rounds, initial_sleep=initial_sleep, json_path=json_path,
                       out=lambda line: click.echo(line))
    if report["failed"]:
        raise click.ClickException(f"{len(report['failed'])} benchmark(s) failed: "
                                   + ", ".join(f["name"] for f in report["failed"]))

if __name__ == "__main__":
    sys.exit(main())
