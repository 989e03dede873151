"""rtserve: real-time serving of TensorFlow models over TF Serving REST and the Open Inference Protocol."""

__version__ = "0.1.0"
