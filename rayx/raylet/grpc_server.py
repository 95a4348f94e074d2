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
    def __init__(self, raylet):
        self.raylet = raylet

    async def ForwardTasks(self, request, context):
        for blob in request.specs:
            self.raylet.accept_forwarded(codec.loads(blob), bytes(request.from_node_id))
        return rayx_pb2.Ack(ok=True)

    async def PullObject(self, request, context):
        async for chunk in self.raylet.object_manager.serve_pull(bytes(request.object_id)):
            yield chunk

    async def ObjectsReady(self, request, context):
        self.raylet.remote_objects_ready(bytes(request.from_node_id), request.objects)
        return rayx_pb2.Ack(ok=True)

    async def FreeObjects(self, request, context):
        self.raylet.release_owner_pins([bytes(oid) for oid in request.object_ids])
        return rayx_pb2.Ack(ok=True)

    async def KillActor(self, request, context):
        try:
            self.raylet.actors.kill(bytes(request.actor_id), request.no_restart)
        except ValueError as exc:
            return rayx_pb2.Ack(ok=False, error=str(exc))
        return rayx_pb2.Ack(ok=True)


async def start_server(raylet, host, token, with_scheduler):
    """Start the gRPC server on ``host`` (a free port); return (server, "host:port")."""
    server = grpc.aio.server(interceptors=[TokenInterceptor(token)], options=CHANNEL_OPTIONS)
    rayx_pb2_grpc.add_NodeServiceServicer_to_server(NodeService(raylet), server)
    if with_scheduler:
        from rayx.scheduler.service import GlobalSchedulerService
        rayx_pb2_grpc.add_GlobalSchedulerServicer_to_server(GlobalSchedulerService(raylet.gcs), server)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, f"{host}:{port}"
