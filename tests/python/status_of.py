"""Makes one unary call with raw request bytes and prints its status.

Usage: status_of.py SOCKET METHOD REQUEST_HEX [NAMESPACE]
Prints "<CODE> <details>" (CODE is OK on success).
"""

import sys

import grpc

socket, method, request = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
namespace = sys.argv[4] if len(sys.argv) > 4 else "default"
call = grpc.insecure_channel("unix://" + socket).unary_unary(method)
try:
    call(request, metadata=[("containerd-namespace", namespace)], timeout=20)
    print("OK")
except grpc.RpcError as e:
    print(f"{e.code().name} {e.details()}")
