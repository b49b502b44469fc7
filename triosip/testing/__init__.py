"""Test and benchmark harness for triosip: real sipp peers driven from trio.

Import what you need from :mod:`triosip.testing.sipp` (sipp as UAC and UAS) and
:mod:`triosip.testing.proxy` (a proxy in-process, and a raw UDP peer). Only tests and
benches use this package; nothing else in triosip imports it.
"""
