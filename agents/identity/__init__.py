"""People and what they may do (issue 16): the permission function and the password policy
and hashing. Pure code, no I/O but reading the shipped list of common passwords once; the
identity and session stores are ports (``tables/ports/identity.py``)."""
