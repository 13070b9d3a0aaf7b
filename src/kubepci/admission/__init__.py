"""Admission: the webhook (review, decide, server) and the native ValidatingAdmissionPolicy export (vap, cel).

Submodules are imported explicitly by their users; this package imports nothing so that the CLI's
``admission export-vap`` does not pay for the webhook server and vice versa.
"""
