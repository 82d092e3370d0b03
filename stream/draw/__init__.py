"""The draw tier's library: she answers drawing requests with a picture (Qwen-Image in diffusers).

``tiny`` builds a random-weight Qwen-Image pipeline and ControlNet offline, laid out like the
real checkpoints, for tests and the CPU demo.
"""
