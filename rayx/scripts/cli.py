"""The ``rayx`` command line: start and stop nodes, and look at a running cluster."""
import json
import os
import sys
import time

import click

import rayx
from rayx import node as node_mod
from rayx.gcs import GcsClient, tables
from rayx.util import state


@click.group()
@click.version_option(rayx.__version__, "--version", prog_name="rayx", message="%(prog)s, version %(version)s")
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
@click.option("--node-ip-address", default="127.0.0.1", show_default=True,
              help="The address this node listens on; other than loopback needs --allow-network.")
@click.option("--allow-network", is_flag=True,
              help="Allow a --node-ip-address other machines can reach (0.0.0.0 included).")
def start(head, address, port, num_cpus, num_gpus, resources, object_store_memory, node_ip_address,
          allow_network):
    """Start a node of a rayx cluster on this machine."""
    if head == bool(address):
        raise click.UsageError("give exactly one of --head or --address")
    try:
        node_mod.check_bind_address(node_ip_address, allow_network)
    except ValueError as exc:
        raise click.UsageError(str(exc))
    try:
        custom = json.loads(resources) if resources else None
    except ValueError as exc:
        raise click.BadParameter(f"--resources is not valid JSON: {exc}")
    if custom is not None and not isinstance(custom, dict):
        raise click.BadParameter("--resources must be a JSON object of name -> amount")
    record = node_mod.live_cluster_record()
    if head and record:
        raise click.ClickException(f"a rayx cluster is already running here (GCS {record['gcs_address']}); "
                                   "run `rayx stop` first")
    cpus = None if num_cpus is None else (int(num_cpus) if num_cpus == int(num_cpus) else num_cpus)
    if head:
        node = node_mod.Node(head=True, port=port, num_cpus=cpus, num_gpus=num_gpus, resources=custom,
                             object_store_memory=object_store_memory, node_ip_address=node_ip_address,
                             detached=True, allow_network=allow_network)
    else:
        try:
            node_mod.check_reachable(address)
        except (ValueError, ConnectionError) as exc:
            raise click.ClickException(str(exc))
        password = os.environ.get("RAYX_CLUSTER_TOKEN")
        if password is None and record and record.get("gcs_address") == address:
            password = node_mod.read_token(record["session_dir"])
        if password is None:
            raise click.ClickException("set RAYX_CLUSTER_TOKEN to the cluster's token to join it")
        session_dir = record["session_dir"] if record and record.get("gcs_address") == address else None
        node = node_mod.Node(head=False, gcs_address=address, password=password, session_dir=session_dir,
                             num_cpus=cpus, num_gpus=num_gpus, resources=custom,
                             object_store_memory=object_store_memory, node_ip_address=node_ip_address,
                             detached=True, allow_network=allow_network)
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
        click.echo(f"To connect a driver:   rayx.init()   or   rayx.init(address=\"{node.gcs_address}\")")
        click.echo(f"To add a node:         rayx start --address={node.gcs_address}")
        click.echo(f"The cluster token is in {node.session_dir}/token (mode 0600).")
    click.echo("To stop:              rayx stop")


@main.command()
def stop():
    """Stop every rayx node started on this machine with `rayx start`."""
    count = node_mod.stop_recorded_cluster()
    click.echo(f"Stopped {count} rayx process(es).")


def _connect_gcs():
    record = node_mod.live_cluster_record()
    if not record:
        raise click.ClickException("no rayx cluster is running on this machine (start one with `rayx start --head`)")
    return GcsClient(record["gcs_address"], node_mod.read_token(record["session_dir"]), retry_timeout=3)


@main.command()
def status():
    """Nodes, resources (used / total), pending and running tasks."""
    gcs = _connect_gcs()
    try:
        infos = list(tables.NODES.scan(gcs).values())
    finally:
        gcs.close()
    click.echo(format_status(infos))


def format_status(infos):
    """The status report of the cluster whose node records are ``infos``; a node
    the monitor marked dead, or silent for longer than ``tables.HEARTBEAT_TIMEOUT_S``,
    shows as DEAD with the reason."""
    lines = ["======== rayx cluster status ========", "Nodes"]
    now = time.time()
    alive = [i for i in infos if tables.is_responsive(i, now)]
    dead = [i for i in infos if i not in alive]
    for info in alive:
        lines.append(f"  {info['node_id'].hex()}  {info.get('node_ip_address')}  "
                     f"{'head' if info.get('is_head') else 'worker'}  workers={info.get('workers', 0)}")
    for info in dead:
        reason = info.get("death_reason") or "no heartbeat"
        lines.append(f"  {info['node_id'].hex()}  {info.get('node_ip_address')}  {tables.NODE_DEAD} ({reason})")
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


# ------------------------------------------------------ observability: list, memory, timeline

_LIST_COLUMNS = {
    "tasks": ("task_id", "name", "state", "type", "node_id", "pid", "duration_s", "error_type"),
    "actors": ("actor_id", "class_name", "state", "name", "pid", "node_id", "restarts", "death_reason"),
    "objects": ("object_id", "size", "node_id", "copies", "creator"),
    "nodes": ("node_id", "state", "node_ip_address", "is_head", "resources_total", "resources_available",
              "workers", "objects", "pending_tasks", "running_tasks"),
}


def _parse_filters(items):
    filters = []
    for item in items:
        for op in ("!=", "="):
            key, sep, value = item.partition(op)
            if sep:
                break
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: a filter is KEY=VALUE or KEY!=VALUE", param_hint="--filter")
        filters.append((key.strip(), op, value.strip()))
    return filters


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}" if value < 1000 else f"{value:.1f}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                        for k, v in sorted(value.items()) if not str(k).startswith("node:")) or "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "-"
    return str(value)


def format_table(rows, columns):
    """Rows (dicts) as a plain-text table with a header line."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@main.command("list")
@click.argument("resource", type=click.Choice(sorted(_LIST_COLUMNS)))
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Keep rows whose KEY equals (KEY=VALUE) or differs from (KEY!=VALUE) VALUE; repeatable.")
@click.option("--limit", default=100, show_default=True, type=int, help="Show at most this many rows.")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
@click.option("--detail", is_flag=True, help="Every field of each row (JSON is the better format for it).")
def list_command(resource, filters, limit, fmt, detail):
    """List the cluster's tasks, actors, objects or nodes (from the GCS)."""
    filters = _parse_filters(filters)
    lister = {"tasks": state.list_tasks, "actors": state.list_actors, "objects": state.list_objects,
              "nodes": state.list_nodes}[resource]
    gcs = _connect_gcs()
    try:
        try:
            rows = lister(filters=filters, limit=limit + 1 if limit >= 0 else None, detail=detail, gcs=gcs)
        except ValueError as exc:
            raise click.UsageError(str(exc))
    finally:
        gcs.close()
    truncated = limit >= 0 and len(rows) > limit
    rows = rows[:limit] if limit >= 0 else rows
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        columns = _LIST_COLUMNS[resource]
        if detail:
            columns = list(columns) + sorted({k for row in rows for k in row} - set(columns))
        click.echo(format_table(rows, columns))
    if truncated:
        click.echo(f"(showing the first {limit} {resource}; raise --limit to see more)", err=True)


@main.command()
@click.option("--limit", default=1000, show_default=True, type=int, help="Show at most this many objects.")
@click.option("--sort-by", default="size", show_default=True, type=click.Choice(["size", "object_id", "node"]))
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]))
def memory(limit, sort_by, fmt):
    """Objects in the cluster: size, node(s), creating task; totals per node."""
    gcs = _connect_gcs()
    try:
        objects = state.list_objects(gcs=gcs)
        nodes = {n["node_id"]: n for n in state.list_nodes(gcs=gcs)}
    finally:
        gcs.close()
    summary = state.summarize_objects(objects=objects)
    key = {"size": lambda o: (-o["size"], o["object_id"]), "object_id": lambda o: o["object_id"],
           "node": lambda o: (o["node_id"] or "", -o["size"])}[sort_by]
    objects.sort(key=key)
    shown = objects[:limit] if limit >= 0 else objects
    if fmt == "json":
        click.echo(json.dumps({"objects": shown, "summary": summary}, indent=2, default=str))
        return
    click.echo("======== rayx memory: objects in the GCS object table ========")
    rows = [dict(o, nodes=[o["node_id"]] + o["copies"] if o["node_id"] else o["copies"],
                 size=f"{o['size']} ({_human_bytes(o['size'])})" if o["size"] >= 1024 else f"{o['size']} B")
            for o in shown]
    click.echo(format_table(rows, ("object_id", "size", "nodes", "creator", "task_id")))
    if len(shown) < len(objects):
        click.echo(f"(showing {len(shown)} of {len(objects)} objects; raise --limit to see more)")
    click.echo("--- Summary ---")
    click.echo(f"{summary['total_objects']} objects, {summary['total_bytes']} bytes "
               f"({_human_bytes(summary['total_bytes'])}) in total")
    for node_id, entry in sorted(summary["per_node"].items()):
        node = nodes.get(node_id, {})
        live = f"; the node reports {node['objects']} live" if "objects" in node else ""
        click.echo(f"node {node_id} ({node.get('node_ip_address', '?')}): {entry['objects']} objects, "
                   f"{entry['bytes']} bytes ({_human_bytes(entry['bytes'])}){live}")
    click.echo("(the GCS object table keeps objects after they are freed, so this lists every object "
               "made since the cluster started)")


@main.command()
@click.option("--output", default=None,
              help="File to write the Chrome trace to ('-' for stdout); default rayx-timeline-<time>.json here.")
def timeline(output):
    """Write the cluster's task timeline as a Chrome trace (open it in chrome://tracing or Perfetto)."""
    gcs = _connect_gcs()
    try:
        events = state.timeline_events(gcs=gcs)
    finally:
        gcs.close()
    if output == "-":
        click.echo(json.dumps(events))
        return
    if output is None:
        output = f"rayx-timeline-{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    with open(output, "w") as f:
        json.dump(events, f)
    click.echo(f"Wrote {len(events)} task events to {output}; open it in chrome://tracing or "
               "https://ui.perfetto.dev")


if __name__ == "__main__":
    sys.exit(main())
