"""The raylet's gRPC server: NodeService on every node, GlobalScheduler on the head.

It binds the node's own address (loopback by default), bounds message sizes,
and refuses every call whose metadata lacks the cluster token before any of
its bytes are decoded.
"""
import hmac

import grpc

from rayx._core import codec
from rayx.protos import rayx_pb2, rayx_pb2_grpc
from rayx.raylet.peers import CHANNEL_OPTIONS
from rayx.scheduler.service import GlobalSchedulerService


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token):
        self._token = token.encode()

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, handler_call_details):
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "rayx-token":
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._token):
                    return await continuation(handler_call_details)
        return self._deny


class NodeService(rayx_pb2_grpc.NodeServiceServicer):
    """What other nodes ask of this one; each call goes to the part that does it."""

    def __init__(self, node_id, stopped, accept_forwarded, serve_pull, results_pushed, release_owner_pins,
                 kill_actor):
        self._node_id = node_id
        self._stopped = stopped                          # an asyncio.Event set when the node stops
        self._accept_forwarded = accept_forwarded        # LocalScheduler.accept_forwarded
        self._serve_pull = serve_pull                    # ObjectManager.serve_pull
        self._results_pushed = results_pushed            # Router.results_pushed
        self._release_owner_pins = release_owner_pins    # ObjectManager.release_owner_pins
        self._kill_actor = kill_actor                    # ActorManager.kill

    async def ForwardTasks(self, request, context):
        from_node = bytes(request.from_node_id)
        for blob in request.specs:
            self._accept_forwarded(codec.loads(blob), from_node)
        return rayx_pb2.Ack(ok=True)

    async def PullObject(self, request, context):
        async for chunk in self._serve_pull(bytes(request.object_id)):
            yield chunk

    async def ObjectsReady(self, request, context):
        self._results_pushed(bytes(request.from_node_id), request.objects)
        return rayx_pb2.Ack(ok=True)

    async def FreeObjects(self, request, context):
        self._release_owner_pins(bytes(request.from_node_id), [bytes(oid) for oid in request.object_ids])
        return rayx_pb2.Ack(ok=True)

    async def Watch(self, request, context):
        yield rayx_pb2.WatchReply(node_id=self._node_id)
        await self._stopped.wait()

    async def KillActor(self, request, context):
        try:
            self._kill_actor(bytes(request.actor_id), request.no_restart)
        except ValueError as exc:
            return rayx_pb2.Ack(ok=False, error=str(exc))
        return rayx_pb2.Ack(ok=True)


async def start_server(node_service, gcs, host, token, with_scheduler):
    """Start the gRPC server on ``host`` (a free port), with the global scheduler if
    ``with_scheduler``; return (server, "host:port")."""
    server = grpc.aio.server(interceptors=[TokenInterceptor(token)], options=CHANNEL_OPTIONS)
    rayx_pb2_grpc.add_NodeServiceServicer_to_server(node_service, server)
    if with_scheduler:
        rayx_pb2_grpc.add_GlobalSchedulerServicer_to_server(GlobalSchedulerService(gcs), server)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, f"{host}:{port}"
