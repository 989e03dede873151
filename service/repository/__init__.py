"""Where model versions live: a local folder or an S3-compatible bucket, behind one interface."""
