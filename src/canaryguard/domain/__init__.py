"""Pure domain: models, state machine, assignment, events, audit chain. No I/O, no clock reads.

Submodules are imported directly (``canaryguard.domain.assignment``) so that the client SDK can
take the standard-library-only assignment code without pulling in pydantic.
"""
