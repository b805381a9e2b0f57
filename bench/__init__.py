"""helpline's benchmark harness: every speed figure is a ratio against a baseline in the same run.

Run from the repository root with the project's virtualenv, e.g.
`.venv/bin/python -m bench api --quick`. See bench/RESULTS.md for the recorded
figures and /work/shared/TARGETS.md-style rules on how they are taken: a real
daemon on loopback, the load generator in another process on another core,
and product and baseline runs interleaved with the median ratio reported.
"""
