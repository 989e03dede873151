"""The gRPC front end: one grpc.aio server, in the REST server's event loop, for TF Serving's PredictionService and
ModelService, the Open Inference Protocol's GRPCInferenceService, health and reflection. The only package that
imports grpc."""
