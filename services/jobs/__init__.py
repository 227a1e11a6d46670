"""The gateway's JobService: validation and planning of job specs, chunk publishing, RPCs."""
