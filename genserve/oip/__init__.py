"""Generated protobuf and gRPC stubs of the Open Inference Protocol (KServe v2) (`make proto`; never edited by hand)."""
