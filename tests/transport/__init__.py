"""Tests of triosip.transport."""
