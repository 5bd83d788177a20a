"""Generated protobuf and gRPC code for rectune.v1 (see scripts/gen_protos.py)."""
