"""Test and benchmark harness for triosip: real sipp peers driven from trio.

Import what you need from :mod:`triosip.testing.sipp`. Only tests and benches use this
package; nothing else in triosip imports it.
"""
