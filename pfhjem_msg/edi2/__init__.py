"""Norsk helsenett's message service ("EDI 2.0"): taking messages from it, answering through it.

``settings`` holds what the operator configures, ``dpop`` and ``helseid`` get and prove the
access token, ``client`` speaks the REST API, ``answer`` turns our AppRec decision into the
service's AppRec request, and ``intake`` is the exactly-once loop over the service's unread
messages.
"""
