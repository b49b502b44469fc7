"""What the tests share beyond `triosip.testing` (which route authors use too): the leak
probes, one scriptable HTTP server, and the harnesses and samples of each layer's tests.
No test module imports another: what two need lives here."""
