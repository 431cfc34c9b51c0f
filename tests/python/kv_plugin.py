"""A kv plugin in Python on grpcio, shaped like go-plugin's own Python example: it speaks
go-plugin's gRPC protocol without go-plugin, so it has no AutoMTLS. It ignores
PLUGIN_CLIENT_CERT, listens on TCP 127.0.0.1 and prints a five-field handshake line without a
certificate.

It serves the kv service of tests/go/proto/kv.proto (values kept in memory), the gRPC health
service with "plugin" serving (what a host's ping asks), and go-plugin's GRPCController, whose
Shutdown stops it. `cargo xtask python` installs grpcio into a virtual environment, generates
the stubs and writes the launcher a host runs (tests/python/.build/kv-plugin-python).

Set PLINTH_PID_FILE to have it write its process id there before the handshake, for tests that
check it was reaped.
"""

import json
import os
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import grpc_controller_pb2
import grpc_controller_pb2_grpc
import kv_pb2
import kv_pb2_grpc

COOKIE_KEY = "PLINTH_PLUGIN"
COOKIE_VALUE = "kv"
APP_VERSION = 1


class Store(kv_pb2_grpc.KVServicer):
    """The kv service: values in memory, shared by the server's threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values = {}

    def Get(self, request, context):
        with self._lock:
            value = self._values.get(request.key)
        if value is None:
            context.abort(
                grpc.StatusCode.UNKNOWN,
                "no value stored under key " + json.dumps(request.key),
            )
        return kv_pb2.GetResponse(value=value)

    def Put(self, request, context):
        with self._lock:
            self._values[request.key] = request.value
        return kv_pb2.Empty()


class Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """go-plugin's controller: Shutdown answers, then stops the server."""

    def __init__(self):
        self.server = None

    def Shutdown(self, request, context):
        # Stopping from inside a handler would wait for this very call: another thread does.
        threading.Thread(target=self.server.stop, args=(1.0,), daemon=True).start()
        return grpc_controller_pb2.Empty()


def main():
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        print(
            "This binary is a plugin. These are not meant to be executed directly.",
            file=sys.stderr,
        )
        return 1
    pid_file = os.environ.get("PLINTH_PID_FILE")
    if pid_file:
        with open(pid_file, "w", encoding="utf-8") as out:
            out.write(str(os.getpid()))

    status = health.HealthServicer()
    status.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    controller = Controller()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            # grpcio sets SO_REUSEPORT by default, which would let two plugins share a port.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
        ],
    )
    controller.server = server
    kv_pb2_grpc.add_KVServicer_to_server(Store(), server)
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(controller, server)
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        print("cannot listen on 127.0.0.1", file=sys.stderr)
        return 1
    server.start()

    # The handshake: core version, app version, network, address, protocol; no certificate.
    sys.stdout.write(f"1|{APP_VERSION}|tcp|127.0.0.1:{port}|grpc\n")
    sys.stdout.flush()
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
