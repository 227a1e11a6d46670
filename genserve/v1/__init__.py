"""Generated protobuf and gRPC stubs for genserve.v1 (`make proto`; never edited by hand)."""
