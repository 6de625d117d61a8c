"""The first step of the flow: a host's view or call becomes one activity, placed in its
session (R2) by one Redis round trip and one INSERT."""
