"""Salesforce Pub/Sub API (``eventbus.v1``) stubs, generated: do not edit by hand.

``pubsub_api_pb2.py``, ``pubsub_api_pb2.pyi`` and ``pubsub_api_pb2_grpc.py`` are the output of
grpcio-tools for ``pubsub_api.proto``; ``python connector/pubsub_api/generate.py`` regenerates
them. Both sides use them: the client (``connector/salesforce/pubsub.py``) and the sandbox's
server (``connector/sandbox/pubsub_server.py``).
"""
